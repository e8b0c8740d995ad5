"""The core's frames as Socket.IO packets, and the Socket.IO handshake's auth (gateways/socketio/packets.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import given, settings, strategies as st

from gateways.socketio.packets import Handshake, event_packet, feed_subscription, parse_handshake, reply_packet
from gateways.ws.protocol import (
    Core, History, Limits, Presence, ProtocolError, Session, error_frame, frame, publications, reset_frame,
    subscribed_frame, unsubscribed_frame)


def decoded(packet: str) -> list[Any]:
    assert packet[0] == "2"  # a Socket.IO EVENT on the default namespace
    return orjson.loads(packet[1:])


AGE_OK = 4e9  # the handshake accepted an age token good until then

PUBLISHED = {"video_id": "v1", "title": 'quotes " , "data": and \u00e9\u2603 \n', "uploader_id": "u",
             "video_url": "http://cdn/videos/v1/master.m3u8", "thumbnail": "http://cdn/videos/v1/thumb.jpg",
             "premium": True, "published_at": datetime(2026, 12, 1, tzinfo=UTC)}


@pytest.mark.parametrize(("schema", "record"), [
    ("VideoPublished", PUBLISHED),
    ("LikeUpdate", {"video_id": "v1", "like_count": 7, "delta": -1}),
    ("VideoTakenDown", {"video_id": "v1", "reason": "dmca"}),
    ("TranscodeProgress", {"video_id": "v1", "percent": 12.5}),
])
def test_every_event_frame_of_the_core_becomes_its_event_with_data_then_where_to_resume(
        schema: str, record: dict[str, Any]) -> None:
    history = History(10, 600, epoch="e")
    for pub in publications(schema, record):
        seq, data = history.append(pub, 1_700_000_000_000, 1_700_000_000.0)
        body = orjson.loads(data)
        assert decoded(event_packet(data)) == [pub.type, body["data"], {"channel": pub.channel, "seq": seq}]
        assert reply_packet(data) == event_packet(data)


TEXT = st.text(st.characters(exclude_categories=("Cs",)))  # orjson refuses lone surrogates


@settings(max_examples=40)
@given(st.dictionaries(TEXT, st.one_of(TEXT, st.integers(-2**63, 2**64 - 1), st.booleans(), st.none()), max_size=5),
       st.sampled_from(["feed", "video:a.b", "upload:x@y"]), st.one_of(st.none(), st.integers(0, 2**53)))
def test_the_splice_equals_a_json_round_trip(data: dict[str, Any], channel: str, seq: int | None) -> None:
    assert decoded(event_packet(frame("presence", channel, seq, data))) == ["presence", data,
                                                                           {"channel": channel, "seq": seq}]


def test_replies_become_events_named_by_their_type_with_the_rest_of_the_frame() -> None:
    assert decoded(reply_packet(subscribed_frame("feed", 5, True, "s1-x"))) == [
        "subscribed", {"channel": "feed", "seq": 5, "recovered": True, "epoch": "s1-x"}]
    assert decoded(reply_packet(reset_frame("feed", 5, "s1-x"))) == ["reset", {"channel": "feed", "seq": 5,
                                                                              "epoch": "s1-x"}]
    assert decoded(reply_packet(unsubscribed_frame("video:a"))) == ["unsubscribed", {"channel": "video:a"}]
    # a client's own channel name cannot pass for a frame's structure
    sneaky = 'x","data":{"a":1}'
    assert decoded(reply_packet(error_frame("bad_channel", "no", sneaky))) == [
        "error", {"code": "bad_channel", "message": "no", "channel": sneaky}]
    with pytest.raises(ValueError):
        event_packet(subscribed_frame("feed", 5, True, "s1-x"))


def test_presence_frames_are_events_too() -> None:
    presence = Presence(0)
    presence.touch("video:a")
    [(_, data)] = presence.due(lambda _: 2, 1.0)
    assert decoded(event_packet(data)) == ["presence", {"video_id": "a", "watching": 2},
                                           {"channel": "video:a", "seq": None}]


def test_the_handshake_takes_auth_token_then_the_authorization_header() -> None:
    assert parse_handshake(None, None) == Handshake(None)
    assert parse_handshake({"token": "T"}, "Bearer H") == Handshake("Bearer T")
    assert parse_handshake({}, "Bearer H") == Handshake("Bearer H")
    assert parse_handshake({"since": 42}, None) == Handshake(None, 42)
    for bad in ("token", ["x"], {"token": 42}, {"token": ""}):
        with pytest.raises(ProtocolError) as info:
            parse_handshake(bad, None)
        assert info.value.code == "bad_message"


def test_every_client_is_subscribed_to_the_feed_and_resumed_after_auth_since() -> None:
    core: Core[str] = Core(History(10, 600, epoch="e"), Limits())
    history = core.history
    seqs = [history.append(pub, 1_700_000_000_000 + n, 1_700_000_000.0)[0]
            for n in range(3) for pub in publications("VideoPublished", {**PUBLISHED, "video_id": f"v{n}"})]
    fresh = core.handle(Session("a", None, AGE_OK), feed_subscription(Handshake(None)), 1_700_000_000.0)
    assert [orjson.loads(r)["type"] for r in fresh.replies] == ["subscribed"]
    resumed = core.handle(Session("b", None, AGE_OK), feed_subscription(Handshake(None, seqs[0])), 1_700_000_000.0)
    assert [orjson.loads(r).get("seq") for r in resumed.replies] == [seqs[-1], *seqs[1:]]
    assert resumed.recovered == 1 and core.hub.count("feed") == 2
    bad = core.handle(Session("c", None, AGE_OK), feed_subscription(Handshake(None, "soon")), 1_700_000_000.0)
    assert orjson.loads(bad.replies[0])["code"] == "bad_message"


def test_the_age_token_comes_from_auth_else_the_cookie() -> None:
    assert parse_handshake({"age_token": "a.b.c"}, None, "lustrax_age=x.y.z").age_token == "a.b.c"
    assert parse_handshake({}, None, "other=1; lustrax_age=x.y.z").age_token == "x.y.z"
    assert parse_handshake(None, None).age_token is None
    with pytest.raises(ProtocolError) as info:
        parse_handshake({"age_token": 7}, None)
    assert info.value.code == "bad_message"
