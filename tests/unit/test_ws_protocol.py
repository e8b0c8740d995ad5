"""The gateway's sans-I/O core: channels, permissions, messages, frames, seq, history, recovery."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import orjson
import pytest

from common.tokens import Principal
from gateways.ws.protocol import (
    FEED,
    SEQ_PER_MS,
    Core,
    History,
    Hub,
    Limits,
    Merger,
    Ping,
    Positioned,
    Presence,
    ProtocolError,
    Publication,
    Resume,
    Session,
    Subscribe,
    UploaderIndex,
    check_access,
    cookie_value,
    parse_channel,
    parse_client_message,
    publications,
)

ALICE = Principal("alice", frozenset(), expires_at=4e9)
BOB = Principal("bob", frozenset(), expires_at=4e9)
ADMIN = Principal("root", frozenset({"admin"}), expires_at=4e9)
T0 = 1_790_000_000_000  # ms
NOW = T0 / 1000
AGE_OK = 4e9  # a connection whose age token is good until then (the handshake checked it)


def _pub(channel: str = FEED, n: int = 0) -> Publication:
    return Publication(channel, "new_video", {"video_id": f"v{n}"})


def _core(max_frames: int = 100, max_age_s: float = 600, max_channels: int = 128) -> Core[str]:
    core: Core[str] = Core(History(max_frames, max_age_s, epoch="e1"), Limits(max_channels, anonymous_feed=True))
    core.uploaders.add("vid1", "alice")
    return core


def _frames(replies: list[bytes]) -> list[dict]:
    return [orjson.loads(r) for r in replies]


# -- channels and access --------------------------------------------------------------------------

@pytest.mark.parametrize("name, parsed", [("feed", ("feed", "")), ("video:abc", ("video", "abc")),
                                          ("upload:x.y-z", ("upload", "x.y-z")), ("video:a:b", ("video", "a:b"))])
def test_valid_channels_parse(name: str, parsed: tuple[str, str]) -> None:
    assert parse_channel(name) == parsed


@pytest.mark.parametrize("name", ["", "feeds", "video:", "video", "chat:1", "video:" + "a" * 129, "video:a b", 7])
def test_invalid_channels_are_refused(name: object) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_channel(name)
    assert info.value.code == "bad_channel"


def test_upload_channels_are_for_the_uploader_and_admins_only() -> None:
    uploader = {"vid1": "alice"}.get
    check_access(ALICE, "upload:vid1", uploader, True, True)
    check_access(ADMIN, "upload:vid1", uploader, True, True)
    check_access(ADMIN, "upload:unknown", uploader, True, True)
    for principal, channel in ((BOB, "upload:vid1"), (ALICE, "upload:unknown")):
        with pytest.raises(ProtocolError) as info:
            check_access(principal, channel, uploader, True, True)
        assert info.value.code == "forbidden"


def test_anonymous_clients_get_the_feed_only_when_allowed() -> None:
    check_access(None, FEED, lambda _: None, True, True)
    for channel, allowed in ((FEED, False), ("video:v1", True), ("upload:vid1", True)):
        with pytest.raises(ProtocolError) as info:
            check_access(None, channel, {"vid1": "alice"}.get, allowed, True)
        assert info.value.code == "unauthenticated"


# -- client messages ------------------------------------------------------------------------------

def test_subscribe_with_since_in_both_forms() -> None:
    op = parse_client_message(b'{"op":"subscribe","channels":["feed","video:a","feed"],'
                              b'"since":{"feed":5,"video:a":{"seq":7,"epoch":"e1"},"other":3}}')
    assert op == Subscribe(("feed", "video:a"), {"feed": Resume(5), "video:a": Resume(7, "e1")})
    assert parse_client_message('{"op":"ping"}') == Ping()


@pytest.mark.parametrize("raw, code", [
    (b"{not json", "bad_json"), (b"[]", "bad_message"), (b'{"op":"dance"}', "unknown_op"), (b"{}", "unknown_op"),
    (b'{"op":"subscribe"}', "bad_message"), (b'{"op":"subscribe","channels":[]}', "bad_message"),
    (b'{"op":"subscribe","channels":[1]}', "bad_message"),
    (b'{"op":"subscribe","channels":["feed"],"since":[]}', "bad_message"),
    (b'{"op":"subscribe","channels":["feed"],"since":{"feed":-1}}', "bad_message"),
    (b'{"op":"subscribe","channels":["feed"],"since":{"feed":true}}', "bad_message"),
    (b'{"op":"subscribe","channels":["feed"],"since":{"feed":{"seq":1,"epoch":2}}}', "bad_message"),
    (b"\xff\xfe", "bad_json"),
])
def test_malformed_messages_get_an_error_frame_naming_the_problem(raw: bytes, code: str) -> None:
    core = _core()
    out = core.handle(Session("c1", ALICE, AGE_OK), raw, NOW)
    assert [f["type"] for f in _frames(out.replies)] == ["error"]
    assert _frames(out.replies)[0]["code"] == code
    assert core.hub.channels_of("c1") == set()


# -- events -> frames -----------------------------------------------------------------------------

def test_video_published_becomes_new_video_on_the_feed_with_the_api_fields() -> None:
    record = {"event_id": uuid.uuid4(), "video_id": "v1", "title": "T", "uploader_id": "u",
              "video_url": "http://cdn/videos/v1/master.m3u8", "thumbnail": "http://cdn/videos/v1/thumb.jpg",
              "premium": False, "published_at": datetime(2026, 12, 1, 8, 0, 0, 250000, tzinfo=UTC)}
    [pub] = publications("VideoPublished", record)
    assert pub.channel == FEED and pub.type == "new_video"
    assert pub.data == {"video_id": "v1", "title": "T", "video_url": record["video_url"],
                        "thumbnail": record["thumbnail"], "premium": False,
                        "published_at": "2026-12-01T08:00:00.250Z"}


def test_like_updates_progress_and_outcomes_go_to_their_channels() -> None:
    [like] = publications("LikeUpdate", {"video_id": "v1", "like_count": 12, "delta": 3})
    assert (like.channel, like.type, like.data) == ("video:v1", "like_update",
                                                    {"video_id": "v1", "like_count": 12, "delta": 3})
    [progress] = publications("TranscodeProgress", {"video_id": "v1", "percent": 40.0})
    [failed] = publications("TranscodeFailed", {"video_id": "v1", "reason": "r", "retryable": True, "attempt": 1})
    [decided] = publications("ModerationDecided", {"video_id": "v1", "decision": "APPROVED", "reason": None})
    assert {progress.channel, failed.channel, decided.channel} == {"upload:v1"}
    assert decided.data["decision"] == "approved"
    assert publications("VideoView", {"video_id": "v1"}) == []
    assert [p.channel for p in publications("VideoTakenDown", {"video_id": "v1"})] == [FEED, "video:v1"]


def test_uploads_feed_the_uploader_index_which_stays_bounded() -> None:
    index = UploaderIndex(max_entries=2)
    for n in range(3):
        index.add(f"v{n}", f"u{n}")
    assert (index.get("v0"), index.get("v2"), len(index)) == (None, "u2", 2)
    core = _core()
    assert core.observe("VideoUploaded", {"video_id": "v9", "uploader_id": "bob"}) == []
    assert core.uploaders.get("v9") == "bob"


# -- seq, history, recovery -----------------------------------------------------------------------

def test_seq_comes_from_the_event_time_and_is_strictly_increasing_per_channel() -> None:
    history = History(100, 600, "e1")
    seqs = [history.append(_pub(), ts, NOW)[0] for ts in (T0, T0, T0 + 5, T0 + 3)]
    assert seqs == [T0 * SEQ_PER_MS, T0 * SEQ_PER_MS + 1, (T0 + 5) * SEQ_PER_MS, (T0 + 5) * SEQ_PER_MS + 1]
    # Another instance (or a restart) that started later, and so saw only the later events, numbers
    # them alike: seq is not a local counter.
    later = History(100, 600, "e1")
    assert [later.append(_pub(), ts, NOW)[0] for ts in (T0 + 5, T0 + 3)] == seqs[2:]
    _, data = history.append(_pub(n=7), T0 + 9, NOW)
    assert orjson.loads(data) == {"type": "new_video", "channel": FEED, "seq": (T0 + 9) * SEQ_PER_MS,
                                  "data": {"video_id": "v7"}}


def _filled(count: int, max_frames: int = 100, max_age_s: float = 600) -> tuple[History, list[int], list[bytes]]:
    history = History(max_frames, max_age_s, "e1")
    appended = [history.append(_pub(n=n), T0 + n, NOW) for n in range(count)]
    return history, [s for s, _ in appended], [d for _, d in appended]


def test_recovery_delivers_exactly_the_missed_frames_in_order() -> None:
    history, seqs, frames = _filled(10)
    got = history.recover(FEED, Resume(seqs[3], "e1"), NOW)
    assert got.recovered and got.frames == tuple(frames[4:]) and got.seq == seqs[-1]
    assert history.recover(FEED, Resume(seqs[-1]), NOW) == type(got)(True, seqs[-1])


def test_recovery_is_all_or_nothing_when_the_point_fell_out_of_the_size_bound() -> None:
    history, seqs, frames = _filled(10, max_frames=5)
    # The client saw the newest frame that was dropped: everything it missed is still kept.
    assert history.recover(FEED, Resume(seqs[4]), NOW).frames == tuple(frames[5:])
    got = history.recover(FEED, Resume(seqs[3]), NOW)
    assert not got.recovered and got.frames == ()


def test_recovery_fails_when_frames_aged_out_and_for_another_epoch() -> None:
    history, seqs, _ = _filled(10, max_age_s=60)
    assert history.recover(FEED, Resume(seqs[2]), NOW + 30).recovered
    assert not history.recover(FEED, Resume(seqs[2]), NOW + 120).recovered
    history, seqs, _ = _filled(10)
    assert not history.recover(FEED, Resume(seqs[2], "other-epoch"), NOW).recovered


def test_a_client_ahead_of_this_instance_recovers_and_skips_what_it_has_seen() -> None:
    history, seqs, _ = _filled(3)
    history.horizon = T0 * SEQ_PER_MS - 1000
    got = history.recover(FEED, Resume(seqs[-1] + 5000), NOW)
    assert got.recovered and got.skip_through == seqs[-1] + 5000
    # A channel this instance has no state for is known only from its horizon (its replay start).
    assert history.recover("video:x", Resume(T0 * SEQ_PER_MS), NOW).recovered
    assert not history.recover("video:x", Resume(T0 * SEQ_PER_MS - 2000), NOW).recovered


def test_expiry_trims_idle_channels_by_age_and_keeps_their_floor() -> None:
    history = History(10, 60, "e1")
    old_seq, _ = history.append(_pub("video:idle"), T0, NOW)
    history.append(_pub("video:busy"), T0 + 50_000, NOW)
    assert history.expire(NOW + 70) == 1  # the idle channel's frame aged out, the busy one's did not
    assert history.recover("video:idle", Resume(old_seq), NOW + 70).recovered  # nothing was missed
    assert not history.recover("video:idle", Resume(old_seq - 1), NOW + 70).recovered


def test_forgetting_a_channel_raises_the_horizon() -> None:
    history = History(10, 600, "e1", max_channels=2)
    for n in range(3):
        history.append(_pub(f"video:{n}"), T0 + n, NOW)
    assert history.horizon == T0 * SEQ_PER_MS
    assert not history.recover("video:0", Resume(T0 * SEQ_PER_MS - 1), NOW).recovered


# -- the core: subscribe, recover, limits, fan-out ------------------------------------------------

def test_subscribe_replies_then_the_missed_frames_or_a_reset() -> None:
    core = _core(max_frames=3)
    seqs = [core.publish(_pub(n=n), T0 + n, NOW)[0] for n in range(6)]
    seqs = [orjson.loads(d)["seq"] for d in seqs]
    out = core.handle(Session("c1", ALICE, AGE_OK), orjson.dumps(
        {"op": "subscribe", "channels": [FEED], "since": {FEED: {"seq": seqs[3], "epoch": "e1"}}}), NOW)
    frames = _frames(out.replies)
    assert frames[0] == {"type": "subscribed", "channel": FEED, "seq": seqs[-1], "recovered": True, "epoch": "e1"}
    assert [f["seq"] for f in frames[1:]] == seqs[4:] and out.recovered == 1
    out = core.handle(Session("c2", ALICE, AGE_OK), orjson.dumps(
        {"op": "subscribe", "channels": [FEED], "since": {FEED: seqs[0]}}), NOW)
    assert [(f["type"], f.get("recovered")) for f in _frames(out.replies)] == [("subscribed", False), ("reset", None)]
    assert out.reset == 1 and core.hub.count(FEED) == 2


def test_publish_reaches_the_channels_subscribers_only() -> None:
    core = _core()
    core.handle(Session("feed-only", ALICE, AGE_OK), b'{"op":"subscribe","channels":["feed"]}', NOW)
    core.handle(Session("video", BOB, AGE_OK), b'{"op":"subscribe","channels":["video:v1"]}', NOW)
    data, live, joined = core.publish(_pub(), T0, NOW)
    assert live == {"feed-only"} and joined == []
    _, live, _ = core.publish(Publication("video:v1", "like_update", {}), T0, NOW)
    assert live == {"video"}
    core.handle(Session("feed-only", ALICE, AGE_OK), b'{"op":"unsubscribe","channels":["feed"]}', NOW)
    assert core.publish(_pub(), T0, NOW)[1] == set()


def test_a_client_ahead_joins_the_live_set_after_the_frames_it_has_seen() -> None:
    core = _core()
    core.history.horizon = 0
    ahead = (T0 + 10) * SEQ_PER_MS
    core.handle(Session("c", ALICE, AGE_OK),
                orjson.dumps({"op": "subscribe", "channels": [FEED], "since": {FEED: ahead}}),
                NOW)
    assert core.publish(_pub(), T0 + 10, NOW)[1:] == (set(), [])  # seq == ahead: already seen
    assert core.publish(_pub(), T0 + 11, NOW)[1:] == (set(), ["c"])
    assert core.publish(_pub(), T0 + 12, NOW)[1:] == ({"c"}, [])



def test_a_batch_groups_each_channels_frames_in_order_for_one_write_per_recipient() -> None:
    core = _core()
    core.history.horizon = 0
    core.handle(Session("feed", ALICE, AGE_OK), b'{"op":"subscribe","channels":["feed"]}', NOW)
    core.handle(Session("both", BOB, AGE_OK), b'{"op":"subscribe","channels":["feed","video:v1"]}', NOW)
    ahead = (T0 + 1) * SEQ_PER_MS  # has seen the feed up to the second frame of the batch
    core.handle(Session("ahead", ALICE, AGE_OK), orjson.dumps({"op": "subscribe", "channels": [FEED],
                                                       "since": {FEED: ahead}}), NOW)
    like = Publication("video:v1", "like_update", {"n": 9})
    out = core.publish_batch([(_pub(n=0), T0), (like, T0), (_pub(n=1), T0 + 1), (_pub(n=2), T0 + 2),
                              (_pub(n=3), T0 + 3)], NOW)
    feed, video = out
    assert (feed.channel, video.channel) == (FEED, "video:v1")
    assert [_frames([f])[0]["data"]["video_id"] for f in feed.frames] == ["v0", "v1", "v2", "v3"]
    assert [_frames([f])[0]["seq"] for f in feed.frames] == [(T0 + n) * SEQ_PER_MS for n in range(4)]
    assert feed.ts_ms == [T0, T0 + 1, T0 + 2, T0 + 3]
    # "ahead" gets only the frames after its seq, and is live for the next batch
    assert feed.live == {"feed", "both"} and feed.joined == {"ahead": 2}
    assert video.frames == [core.history.frames_of("video:v1", NOW)[0]] and video.live == {"both"}
    assert core.publish_batch([(_pub(n=4), T0 + 4)], NOW)[0].live == {"feed", "both", "ahead"}
    # a channel nobody follows is still sequenced and kept for recovery
    alone = core.publish_batch([(Publication("video:v2", "like_update", {}), T0)], NOW)[0]
    assert alone.live == set() and not alone.joined and core.history.last_seq("video:v2") == T0 * SEQ_PER_MS

def test_channel_limit_forbidden_and_unauthenticated_channels_answer_error_frames() -> None:
    core = _core(max_channels=3)
    session = Session("c", BOB, AGE_OK)
    out = core.handle(session, b'{"op":"subscribe","channels":["feed","upload:vid1","video:a","bad"]}', NOW)
    assert [(f["type"], f.get("code"), f.get("channel")) for f in _frames(out.replies)] == [
        ("subscribed", None, FEED), ("error", "forbidden", "upload:vid1"), ("subscribed", None, "video:a"),
        ("error", "bad_channel", "bad")]
    out = core.handle(session, b'{"op":"subscribe","channels":["video:b","video:c"]}', NOW)
    assert _frames(out.replies)[1:] == [{"type": "error", "code": "too_many_channels", "channel": "video:c",
                                         "message": "at most 3 channels per connection"}]
    assert core.hub.channels_of("c") == {FEED, "video:a", "video:b"}
    anonymous = core.handle(Session("anon", None, AGE_OK), b'{"op":"subscribe","channels":["feed","video:a"]}', NOW)
    assert [f.get("code") for f in _frames(anonymous.replies)] == [None, "unauthenticated"]
    expired = Session("old", Principal("alice", frozenset(), expires_at=NOW - 1), AGE_OK)
    assert _frames(core.handle(expired, b'{"op":"subscribe","channels":["feed"]}', NOW).replies)[0]["code"] == \
        "token_expired"


def test_the_channel_limit_holds_within_the_first_message() -> None:
    core = _core(max_channels=2)
    out = core.handle(Session("c", ALICE, AGE_OK), b'{"op":"subscribe","channels":["video:1","video:2","video:3"]}',
                      NOW)
    assert [f.get("code") for f in _frames(out.replies)] == [None, None, "too_many_channels"]
    assert len(core.hub.channels_of("c")) == 2


def test_ping_gets_a_pong_and_disconnect_forgets_the_connection() -> None:
    core = _core()
    session = Session("c", ALICE, AGE_OK)
    assert _frames(core.handle(session, b'{"op":"ping"}', NOW).replies) == [{"type": "pong"}]
    core.handle(session, b'{"op":"subscribe","channels":["feed","video:a"]}', NOW)
    assert core.hub.subscriptions() == 2
    core.disconnect("c")
    assert core.hub.subscriptions() == 0 and core.hub.count(FEED) == 0


def test_hub_resubscribe_does_not_duplicate() -> None:
    hub: Hub[str] = Hub()
    hub.subscribe("c", FEED)
    hub.subscribe("c", FEED, skip_through=5)
    assert hub.count(FEED) == 1 and hub.members(FEED) == ["c"]


# -- presence -------------------------------------------------------------------------------------

def test_presence_is_rate_limited_and_sent_only_on_change() -> None:
    presence = Presence(interval_s=2)
    counts = {"video:a": 3}
    presence.touch("video:a")
    presence.touch(FEED)  # the feed has no presence
    [(channel, data)] = presence.due(counts.__getitem__, 100.0)
    assert channel == "video:a" and orjson.loads(data)["data"] == {"video_id": "a", "watching": 3}
    presence.touch("video:a")
    assert presence.due(counts.__getitem__, 101.0) == []  # too soon
    assert presence.due(counts.__getitem__, 102.5) == []  # no change
    counts["video:a"] = 0
    presence.touch("video:a")
    assert orjson.loads(presence.due(counts.__getitem__, 105.0)[0][1])["data"]["watching"] == 0


# -- the merge of partitions ----------------------------------------------------------------------

def test_the_merge_orders_by_time_across_partitions_once_all_are_caught_up() -> None:
    merger = Merger(sources=2, max_hold_s=1.0, settle_s=0.0)
    merger.push(Positioned(T0 + 5, 0, 10, "a5", arrived=0.0))
    merger.push(Positioned(T0 + 9, 0, 11, "a9", arrived=0.0))
    # Partition 1 has more on the broker: wait for it rather than guess.
    assert merger.pop_ready(lambda source: source == 0, now=0.1) == []
    merger.push(Positioned(T0 + 7, 1, 3, "b7", arrived=0.1))
    assert [p.payload for p in merger.pop_ready(lambda source: False, now=0.2)] == ["a5", "b7"]
    assert [p.payload for p in merger.pop_ready(lambda source: True, now=0.2)] == ["a9"]


def test_the_merge_lets_a_fresh_head_settle_before_trusting_a_caught_up_partition() -> None:
    merger = Merger(sources=2, max_hold_s=1.0, settle_s=0.03)
    merger.push(Positioned(T0, 1, 1, "b", arrived=0.0))
    assert merger.pop_ready(lambda source: True, now=0.01) == []  # a's may be on its way
    merger.push(Positioned(T0, 0, 7, "a", arrived=0.02))  # same millisecond, other partition
    assert [p.payload for p in merger.pop_ready(lambda source: True, now=0.02)] == ["a"]
    assert merger.pop_ready(lambda source: True, now=0.025) == []
    assert [p.payload for p in merger.pop_ready(lambda source: True, now=0.04)] == ["b"]


def test_the_merge_keeps_each_partitions_order_and_releases_a_stalled_one_after_the_hold() -> None:
    merger = Merger(sources=2, max_hold_s=0.5, settle_s=0.0)
    merger.push(Positioned(T0 + 9, 0, 1, "first", arrived=0.0))
    merger.push(Positioned(T0 + 1, 0, 2, "second", arrived=0.0))  # earlier clock, later offset
    assert merger.pop_ready(lambda source: False, now=0.1) == []
    assert [p.payload for p in merger.pop_ready(lambda source: False, now=0.6)] == ["first", "second"]


# -- the age gate (docs/trust-and-safety.md) ------------------------------------------------------

def test_adult_channels_need_a_connection_that_passed_the_age_gate_and_uploads_do_not() -> None:
    core = _core()
    core.uploaders.add("vid1", "alice")
    for age_until in (0.0, NOW - 1):  # no age token, or one that expired since the handshake
        out = core.handle(Session(f"c{age_until}", ALICE, age_until),
                          b'{"op":"subscribe","channels":["feed","video:a","upload:vid1"]}', NOW)
        assert [(f["type"], f.get("code")) for f in _frames(out.replies)] == [
            ("error", "age_verification_required"), ("error", "age_verification_required"), ("subscribed", None)]
    with pytest.raises(ProtocolError) as info:
        check_access(None, FEED, lambda _: None, True, False)
    assert info.value.code == "age_verification_required"


def test_the_age_cookie_is_read_from_a_cookie_header() -> None:
    assert cookie_value("a=1; lustrax_age=tok.en-1; b=2", "lustrax_age") == "tok.en-1"
    for header in (None, "", "a=1", 'lustrax_age=""', "lustrax_age"):
        assert cookie_value(header, "lustrax_age") is None
