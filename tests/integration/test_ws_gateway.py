"""The WebSocket gateway as its own process (`lustrax serve gateway`) against the real broker."""

from __future__ import annotations

import asyncio
import socket
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlencode
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from common.process import free_port
from common.settings import Settings
from common.tokens import issue_age_token, issue_token
from infra.kafka.producer import OutgoingMessage, produce_acknowledged
from schemas.codec import encode
from schemas.envelope import new_record
from schemas.topics import TOPIC_BY_SCHEMA
from tests.helpers import age_token, metric_sum, running_service

pytestmark = pytest.mark.integration


@contextmanager
def gateway(stack: Settings, **overrides: Any) -> Iterator[Settings]:
    settings = stack.model_copy(update={"ws_port": free_port(), "socketio_port": free_port(), **overrides})
    with running_service(settings, "gateway", settings.ws_port):
        yield settings


@pytest.fixture(scope="module")
def gw(stack: Settings) -> Iterator[Settings]:
    with gateway(stack) as settings:
        yield settings


def url(settings: Settings, token: str | None = None, age: bool = True) -> str:
    """The endpoint, with a user token if given and, unless `age` is false, an age token."""
    query = {**({"token": token} if token else {}), **({"age_token": age_token(settings)} if age else {})}
    return f"ws://127.0.0.1:{settings.ws_port}/v1/ws" + (f"?{urlencode(query)}" if query else "")


def token(settings: Settings, user: str, *roles: str) -> str:
    return issue_token(settings.jwt_signing_secret, user, roles)


def publish(settings: Settings, schema: str, rows: list[dict[str, Any]]) -> None:
    topic = TOPIC_BY_SCHEMA[schema].name
    produce_acknowledged(settings.kafka_bootstrap, [
        OutgoingMessage(topic, row["video_id"].encode(), encode(schema, new_record(schema, "ws-test", row)))
        for row in rows])


def published(video_id: str, title: str = "a video") -> dict[str, Any]:
    return {"video_id": video_id, "title": title, "uploader_id": "u1",
            "video_url": f"http://cdn/videos/{video_id}/master.m3u8", "thumbnail": f"http://cdn/videos/{video_id}/thumb.jpg",
            "premium": False, "published_at": datetime.now(UTC)}


def new_ids(n: int) -> list[str]:
    return [f"v{uuid.uuid4().hex[:12]}" for _ in range(n)]


async def send(ws: ClientConnection, message: dict[str, Any]) -> None:
    await ws.send(orjson.dumps(message).decode())


async def frames(ws: ClientConnection, count: int, timeout_s: float = 20.0, types: tuple[str, ...] = ()
                 ) -> list[dict[str, Any]]:
    """The next `count` frames (of the given types, if any; others are skipped)."""
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < count:
        frame = orjson.loads(await asyncio.wait_for(ws.recv(), max(0.01, deadline - time.monotonic())))
        if not types or frame["type"] in types:
            got.append(frame)
    return got


async def quiet(ws: ClientConnection, seconds: float = 0.7) -> list[dict[str, Any]]:
    """Whatever arrives within `seconds` (expected: nothing)."""
    got = []
    try:
        while True:
            got.append(orjson.loads(await asyncio.wait_for(ws.recv(), seconds)))
    except TimeoutError:
        return got


async def subscribe(ws: ClientConnection, channels: list[str], since: dict[str, Any] | None = None
                    ) -> list[dict[str, Any]]:
    await send(ws, {"op": "subscribe", "channels": channels, **({"since": since} if since else {})})
    replies = await frames(ws, len(channels), types=("subscribed", "error"))
    return replies


def metric(settings: Settings, name: str, **labels: str) -> float:
    return metric_sum(f"http://127.0.0.1:{settings.ws_port}/metrics", name, **labels)


def test_events_reach_the_subscribers_of_their_channel_and_no_others(gw: Settings) -> None:
    video, other = new_ids(2)

    async def scenario() -> None:
        async with connect(url(gw)) as anonymous_feed, connect(url(gw, token(gw, "alice"))) as watcher, \
                connect(url(gw, token(gw, "bob"))) as elsewhere:
            assert [r["type"] for r in await subscribe(anonymous_feed, ["feed"])] == ["subscribed"]
            await subscribe(watcher, [f"video:{video}"])
            await subscribe(elsewhere, [f"video:{other}"])
            publish(gw, "VideoPublished", [published(video, "fresh")])
            publish(gw, "LikeUpdate", [{"video_id": video, "like_count": 10, "delta": 4}])
            [new_video] = await frames(anonymous_feed, 1, types=("new_video",))
            assert new_video["channel"] == "feed" and new_video["data"]["video_id"] == video
            assert set(new_video["data"]) == {"video_id", "title", "video_url", "thumbnail", "premium", "published_at"}
            assert new_video["data"]["title"] == "fresh" and isinstance(new_video["seq"], int)
            [presence] = await frames(watcher, 1, types=("presence",), timeout_s=5)
            assert presence["data"] == {"video_id": video, "watching": 1}
            [like] = await frames(watcher, 1, types=("like_update",))
            assert like["channel"] == f"video:{video}"
            assert like["data"] == {"video_id": video, "like_count": 10, "delta": 4}
            assert [f for f in await quiet(elsewhere) if f["type"] != "presence"] == []
            assert [f for f in await quiet(anonymous_feed, 0.3) if f["type"] == "like_update"] == []

    asyncio.run(scenario())
    assert metric(gw, "lustrax_ws_frames_sent_total") >= 2


def test_the_uploader_follows_progress_and_moderation_live_and_others_are_refused(gw: Settings) -> None:
    [video] = new_ids(1)
    publish(gw, "VideoUploaded", [{"video_id": video, "uploader_id": "carol", "title": "t",
                                   "content_type": "video/mp4", "size_bytes": 10, "source_bucket": "b",
                                   "source_key": "k", "premium": False, "tags": []}])

    async def scenario() -> None:
        async with connect(url(gw, token(gw, "carol"))) as uploader, connect(url(gw, token(gw, "dave"))) as dave, \
                connect(url(gw)) as anonymous:
            deadline = time.monotonic() + 15
            while (reply := (await subscribe(uploader, [f"upload:{video}"]))[0])["type"] == "error":
                assert reply["code"] == "forbidden" and time.monotonic() < deadline  # until the gateway read it
                await asyncio.sleep(0.2)
            [refused] = await subscribe(dave, [f"upload:{video}"])
            assert (refused["type"], refused["code"], refused["channel"]) == ("error", "forbidden", f"upload:{video}")
            [anon] = await subscribe(anonymous, [f"video:{video}"])
            assert anon["code"] == "unauthenticated"
            publish(gw, "TranscodeProgress", [{"video_id": video, "percent": 50.0}])
            publish(gw, "ModerationDecided", [{"video_id": video, "decision": "APPROVED", "provider": "local",
                                               "labels": [], "reason": None, "reviewer_id": None}])
            got = await frames(uploader, 2, types=("transcode_progress", "moderation"))
            assert [(f["type"], f["channel"]) for f in got] == [("transcode_progress", f"upload:{video}"),
                                                                ("moderation", f"upload:{video}")]
            assert got[1]["data"]["decision"] == "approved" and got[0]["seq"] < got[1]["seq"]
            # dave's connection is still usable after the refusal
            await send(dave, {"op": "ping"})
            assert (await frames(dave, 1, types=("pong",)))[0] == {"type": "pong"}

    asyncio.run(scenario())


def test_bad_messages_tokens_origins_and_limits(gw: Settings) -> None:
    async def scenario() -> None:
        for bad in (url(gw, "not-a-jwt"), url(gw, issue_token("another-secret-of-at-least-32-bytes!", "alice"))):
            with pytest.raises(InvalidStatus) as info:
                async with connect(bad):
                    pass
            assert info.value.response.status_code == 401
            assert orjson.loads(info.value.response.body)["error"]["code"] == "invalid_token"
        with pytest.raises(InvalidStatus) as info:
            async with connect(url(gw), origin="http://evil.example"):  # type: ignore[arg-type]
                pass
        assert info.value.response.status_code == 403
        # The page's origin (where the ingest API serves GET /) is allowed by default.
        async with connect(url(gw, token(gw, "alice")), origin=gw.page_origins[0]) as ws:  # type: ignore[arg-type]
            await ws.send("{nope")
            await send(ws, {"op": "dance"})
            await send(ws, {"op": "subscribe", "channels": ["video:x", "feed:now"]})
            errors = await frames(ws, 4)
            assert [(f["type"], f.get("code")) for f in errors] == [
                ("error", "bad_json"), ("error", "unknown_op"), ("subscribed", None), ("error", "bad_channel")]
            too_many = [f"video:c{n}" for n in range(gw.ws_max_channels + 1)]
            replies = await subscribe(ws, too_many)
            assert [r["channel"] for r in replies if r.get("code") == "too_many_channels"] == too_many[-2:]
            await send(ws, {"op": "ping"})
            assert (await frames(ws, 1, types=("pong",)))[0]["type"] == "pong"  # the connection stayed
            with pytest.raises(ConnectionClosed) as closed:
                await ws.send("x" * (gw.ws_max_message_bytes + 1))
                await ws.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009

    asyncio.run(scenario())
    with urllib.request.urlopen(f"http://127.0.0.1:{gw.ws_port}/healthz", timeout=5) as response:
        assert response.status == 200
    assert metric(gw, "lustrax_ws_rejected_connections_total", reason="token") >= 2


def test_adult_channels_need_an_age_token_at_the_handshake(gw: Settings) -> None:
    """docs/trust-and-safety.md: an anonymous client without an age token is refused, a forged or
    expired one is refused, a signed-in user without one gets upload:{id} only; the cookie counts."""
    async def refused(address: str, **options: Any) -> dict[str, Any]:
        with pytest.raises(InvalidStatus) as info:
            async with connect(address, **options):
                pass
        assert info.value.response.status_code == 401
        error: dict[str, Any] = orjson.loads(info.value.response.body)["error"]
        return error

    async def scenario() -> None:
        assert (await refused(url(gw, age=False)))["code"] == "age_verification_required"
        expired = issue_age_token(gw.age_token_key, "self_declaration", "ZZ", 60, now=time.time() - 120)[0]
        forged = issue_age_token("not-the-gateway-key-but-long-enough!", "self_declaration", "ZZ", 60)[0]
        for bad in (expired, forged):
            error = await refused(f"{url(gw, token(gw, 'erin'), age=False)}&age_token={bad}")
            assert (error["code"], error["field"]) == ("age_verification_required", "age_token")
        async with connect(url(gw, token(gw, "erin"), age=False)) as ws:
            replies = await subscribe(ws, ["feed", "video:a", "upload:unknown-upload"])
            assert [(r["channel"], r.get("code")) for r in replies] == [
                ("feed", "age_verification_required"), ("video:a", "age_verification_required"),
                ("upload:unknown-upload", "forbidden")]  # the upload rules still apply, the age gate does not
        async with connect(url(gw, age=False), additional_headers={"Cookie": f"lustrax_age={age_token(gw)}"}) as ws:
            assert [r.get("code") for r in await subscribe(ws, ["feed"])] == [None]

    asyncio.run(scenario())
    assert metric(gw, "lustrax_ws_rejected_connections_total", reason="age_token") >= 3


def test_a_client_that_stops_reading_does_not_delay_the_others_and_is_closed_slow(gw: Settings) -> None:
    ids = new_ids(150)
    title = "x" * 60_000  # 150 frames of 60 KB: more than the socket buffers and twice the 1 MiB bound

    async def scenario() -> None:
        # A small receive buffer (no autotuning) on the slow client, so that the kernel cannot
        # absorb what the gateway must bound itself.
        small = socket.socket()
        small.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
        small.connect(("127.0.0.1", gw.ws_port))
        small.setblocking(False)
        async with connect(url(gw, token(gw, "slow")), max_queue=4, sock=small) as slow, \
                connect(url(gw, token(gw, "fast")), max_size=None) as fast:
            await subscribe(slow, ["feed"])
            await subscribe(fast, ["feed"])
            closes_before = metric(gw, "lustrax_ws_slow_closes_total")
            # A server that waited on the stalled client would hold the fast one until the keep-alive
            # gave up on the slow one (40 s): longer than this timeout.
            reading = asyncio.create_task(frames(fast, len(ids), types=("new_video",), timeout_s=30))

            async def publishing() -> None:
                # In bursts of 300 KB, as a busy channel sends: a healthy client may pass the bound for
                # a moment when a loaded gateway delivers several bursts in one write, never for the grace.
                for start in range(0, len(ids), 5):
                    await asyncio.to_thread(publish, gw, "VideoPublished",
                                            [published(v, title) for v in ids[start:start + 5]])
                    await asyncio.sleep(0.1)
            sending = asyncio.create_task(publishing())
            deadline = time.monotonic() + 30
            while await asyncio.to_thread(metric, gw, "lustrax_ws_slow_closes_total") == closes_before:
                assert time.monotonic() < deadline, "the slow client was not closed"
                await asyncio.sleep(0.1)
            # Read what the slow client still has, up to the close frame, before the gateway's close
            # handshake times out (10 s) and drops the connection instead.
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await asyncio.wait_for(slow.recv(), 10)
            assert closed.value.rcvd is not None
            assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (3008, "slow")
            await sending
            got = await reading
            assert sorted(f["data"]["video_id"] for f in got) == sorted(ids)
            assert [f["seq"] for f in got] == sorted({f["seq"] for f in got})

    asyncio.run(scenario())


def _frames_after(gateway_settings: Settings, since: dict[str, Any], channels: list[str], token_: str,
                  count: int) -> list[dict[str, Any]]:
    async def scenario() -> list[dict[str, Any]]:
        async with connect(url(gateway_settings, token_)) as ws:
            await send(ws, {"op": "subscribe", "channels": channels, "since": since})
            got = await frames(ws, count + len(channels), types=("subscribed", "reset", "new_video", "like_update"))
            assert [f for f in await quiet(ws, 0.5) if f["type"] != "presence"] == []  # exactly these
            return got
    return asyncio.run(scenario())


def test_recovery_after_a_disconnect_on_another_process_and_after_a_restart(stack: Settings, gw: Settings) -> None:
    """A watcher stays connected to gateway A; a client leaves A, misses frames, and resumes on gateway B
    (another process), then once more after B restarted: it gets exactly the frames the watcher saw."""
    video = new_ids(1)[0]
    channels = ["feed", f"video:{video}"]
    alice = token(gw, "alice")

    async def first_part() -> tuple[list[dict[str, Any]], dict[str, Any]]:
        async with connect(url(gw, alice)) as watcher:
            await subscribe(watcher, channels)
            async with connect(url(gw, alice)) as leaver:
                await subscribe(leaver, channels)
                publish(gw, "VideoPublished", [published(v) for v in new_ids(2)])
                seen = await frames(leaver, 2, types=("new_video",))
            since = {"feed": {"seq": seen[-1]["seq"], "epoch": None}, f"video:{video}": 0}
            publish(gw, "VideoPublished", [published(v) for v in new_ids(4)])  # several partitions
            publish(gw, "LikeUpdate", [{"video_id": video, "like_count": n, "delta": 1} for n in (1, 2, 3)])
            watched = await frames(watcher, 2 + 4 + 3, types=("new_video", "like_update"))
            return watched, since

    with gateway(stack) as other:  # B reads the same events live, as A does
        watched, since = asyncio.run(first_part())
        feed_missed = [f for f in watched if f["channel"] == "feed"][2:]
        likes = [f for f in watched if f["channel"] != "feed"]
        since["feed"].pop("epoch")
        # feed: resumed from the last frame seen; video: from its first like (the client saw that one)
        resume = {"feed": since["feed"], f"video:{video}": likes[0]["seq"]}
        got = _frames_after(other, resume, channels, alice, len(feed_missed) + 2)
        subscribed = {f["channel"]: f for f in got if f["type"] == "subscribed"}
        assert all(f["recovered"] for f in subscribed.values()), subscribed
        assert [f for f in got if f["channel"] == "feed" and f["type"] == "new_video"] == feed_missed
        assert [f for f in got if f["channel"] != "feed" and f["type"] == "like_update"] == likes[1:]
        epoch = subscribed["feed"]["epoch"]
    # a restart: the history is rebuilt from the topics, identical
    with gateway(stack) as restarted:
        got = _frames_after(restarted, {"feed": {"seq": since["feed"]["seq"], "epoch": epoch}}, ["feed"], alice,
                            len(feed_missed))
        assert got[0]["recovered"] is True and got[1:] == feed_missed
        # a point this instance cannot vouch for (before its history) or of another epoch: reset
        for point in ({"seq": 1, "epoch": epoch}, {"seq": since["feed"]["seq"], "epoch": "other"}):
            got = _frames_after(restarted, {"feed": point}, ["feed"], alice, 1)
            assert [(f["type"], f.get("recovered")) for f in got] == [("subscribed", False), ("reset", None)]
        assert metric(restarted, "lustrax_ws_recoveries_total", outcome="miss") == 2


def test_processes_share_the_port_and_shutdown_closes_every_client_with_going_away(stack: Settings) -> None:
    async def connected(settings: Settings) -> ClientConnection:
        ws = await connect(url(settings))
        await subscribe(ws, ["feed"])
        return ws

    [video] = new_ids(1)
    loop = asyncio.new_event_loop()
    with gateway(stack, ws_processes=2) as settings:  # two processes on one port (SO_REUSEPORT)
        async def open_some() -> list[ClientConnection]:
            clients = [await connected(settings) for _ in range(6)]
            publish(settings, "VideoPublished", [published(video)])
            for ws in clients:  # whichever process took it, every client gets the event
                [got] = await frames(ws, 1, types=("new_video",))
                assert got["data"]["video_id"] == video
            return clients
        clients = loop.run_until_complete(open_some())
    codes = []
    for ws in clients:
        loop.run_until_complete(ws.wait_closed())
        codes.append(ws.close_code)
    loop.close()
    assert codes == [1001] * 6


def test_connections_per_address_are_limited(stack: Settings) -> None:
    async def scenario(settings: Settings) -> None:
        async with connect(url(settings)), connect(url(settings)):
            with pytest.raises(InvalidStatus) as info:
                async with connect(url(settings)):
                    pass
            assert info.value.response.status_code == 429
        async with connect(url(settings)):  # the count drops as connections close
            pass

    with gateway(stack, ws_max_connections_per_ip=2, ws_anonymous_feed=True) as settings:
        asyncio.run(scenario(settings))
