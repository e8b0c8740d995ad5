"""The gateway's Socket.IO endpoint with the prototype's real client: Node running socket.io-client 4.x
(tests/socketio_client/feed.js, the seed's RealTimeFeed logic) against `lustrax serve gateway`."""

from __future__ import annotations

import json
import queue
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from common.process import free_port
from common.settings import Settings
from common.tokens import issue_token
from infra.kafka.producer import OutgoingMessage, produce_acknowledged
from lustrax.services import http_ok
from schemas.codec import encode
from schemas.envelope import new_record
from schemas.topics import TOPIC_BY_SCHEMA
from tests.helpers import age_token, metric_sum, running_service
from tests.lifecycle import Event, Video

pytestmark = pytest.mark.integration

CLIENT = Path(__file__).resolve().parents[1] / "socketio_client"
SEED_LINE = "New video dropped: "
Line = dict[str, Any]


class NodeClient:
    """One `node feed.js` process; its stdout lines (JSON, or the seed's own console.log) in order.
    It passes the age gate (auth.age_token) with `default_age_token` unless given `age_token=None`."""

    default_age_token: str | None = None  # set by the module's `passed_the_age_gate` fixture

    def __init__(self, url: str, age_token: str | None = "default", **options: Any) -> None:
        age = self.default_age_token if age_token == "default" else age_token
        if age:
            options["auth"] = {**(options.get("auth") or {}), "age_token": age}
        self.process = subprocess.Popen(["node", str(CLIENT / "feed.js"), url, json.dumps(options)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True, cwd=CLIENT)
        self.lines: list[Line | str] = []
        self._new: queue.Queue[Line | str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            raw = raw.rstrip("\n")
            self._new.put(raw if raw.startswith(SEED_LINE) else json.loads(raw))

    def wait(self, predicate: Callable[[Line | str], bool], timeout_s: float = 20.0) -> Line | str:
        """The first line so far or to come that satisfies `predicate`."""
        deadline = time.monotonic() + timeout_s
        seen = 0
        while True:
            for line in self.lines[seen:]:
                if predicate(line):
                    return line
            seen = len(self.lines)
            try:
                self.lines.append(self._new.get(timeout=max(0.01, deadline - time.monotonic())))
            except queue.Empty:
                raise AssertionError(f"not seen within {timeout_s} s; got {self.lines}") from None

    def event(self, name: str, timeout_s: float = 20.0, **where: Any) -> Line:
        def match(line: Line | str) -> bool:
            if not isinstance(line, dict) or line["event"] != name:
                return False
            first = (line.get("args") or [None])[0]
            return all(line.get(k) == v or (isinstance(first, dict) and first.get(k) == v) for k, v in where.items())
        got = self.wait(match, timeout_s)
        assert isinstance(got, dict)
        return got

    def events(self, name: str) -> list[Line]:
        self.drain()
        return [line for line in self.lines if isinstance(line, dict) and line["event"] == name]

    def drain(self, seconds: float = 0.0) -> None:
        deadline = time.monotonic() + seconds
        while True:
            try:
                self.lines.append(self._new.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                return

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@contextmanager
def clients(*made: NodeClient) -> Iterator[tuple[NodeClient, ...]]:
    try:
        yield made
    finally:
        for client in made:
            client.close()


@contextmanager
def gateway(stack: Settings, **overrides: Any) -> Iterator[Settings]:
    settings = stack.model_copy(update={"ws_port": free_port(), "socketio_port": free_port(), **overrides})
    with running_service(settings, "gateway", settings.ws_port):
        deadline = time.monotonic() + 10
        while not http_ok(f"{url(settings)}/healthz"):  # the Socket.IO port opens right after the WebSocket one
            assert time.monotonic() < deadline, "the Socket.IO port did not open"
            time.sleep(0.05)
        yield settings


@pytest.fixture(scope="module", autouse=True)
def passed_the_age_gate(stack: Settings) -> Iterator[None]:
    NodeClient.default_age_token = age_token(stack)
    yield
    NodeClient.default_age_token = None


@pytest.fixture(scope="module")
def gw(stack: Settings) -> Iterator[Settings]:
    # Two processes share the WebSocket port; polling must still reach one Socket.IO server.
    with gateway(stack, ws_processes=2, socketio_client_queue_frames=16) as settings:
        yield settings


def url(settings: Settings) -> str:
    return f"http://127.0.0.1:{settings.socketio_port}"


def token(settings: Settings, user: str) -> str:
    return issue_token(settings.jwt_signing_secret, user)


def produce(settings: Settings, events: list[Event]) -> None:
    produce_acknowledged(settings.kafka_bootstrap, [
        OutgoingMessage(TOPIC_BY_SCHEMA[schema].name, record["video_id"].encode(), encode(schema, record))
        for schema, record in events])


def like(video_id: str, like_count: int, delta: int) -> Event:
    return "LikeUpdate", new_record("LikeUpdate", "socketio-test",
                                    {"video_id": video_id, "like_count": like_count, "delta": delta})


def metric(settings: Settings, name: str, **labels: str) -> float:
    return metric_sum(f"http://127.0.0.1:{settings.socketio_port}/metrics", name, **labels)


def test_the_seeds_feed_gets_a_published_title_over_polling_websocket_and_the_upgrade(gw: Settings) -> None:
    video = Video(title="Fresh from the oven")
    with clients(NodeClient(url(gw)), NodeClient(url(gw), transports=["polling"]),
                 NodeClient(url(gw), transports=["websocket"])) as (seed, polling, websocket):
        for client in (seed, polling, websocket):
            client.event("subscribed", channel="feed")  # without asking: the seed never subscribes
        assert polling.event("connect")["transport"] == "polling"
        assert websocket.event("connect")["transport"] == "websocket"
        assert seed.event("open")["transport"] == "polling"  # polling first, then the upgrade
        assert seed.event("upgrade")["transport"] == "websocket"
        produce(gw, [video.published()])
        for client in (seed, polling, websocket):
            assert client.wait(lambda line: line == SEED_LINE + video.title) == SEED_LINE + video.title
            data, where = client.event("new_video", video_id=video.video_id)["args"]
            assert set(data) == {"video_id", "title", "video_url", "thumbnail", "premium", "published_at"}
            assert (data["title"], data["premium"]) == (video.title, False)
            assert data["video_url"].endswith(f"/videos/{video.video_id}/master.m3u8")
            assert where["channel"] == "feed" and isinstance(where["seq"], int)
        # the polling client kept polling the same process: several round trips, still connected
        polling.drain(0.5)
        assert polling.events("disconnect") == [] and polling.events("upgrade") == []
    assert metric(gw, "lustrax_socketio_frames_sent_total") >= 3


def test_a_like_reaches_the_client_subscribed_to_its_video_and_no_other(gw: Settings) -> None:
    video, other = Video(), Video()
    alice, bob = token(gw, "alice"), token(gw, "bob")
    with clients(NodeClient(url(gw), auth={"token": alice}, subscribe=[f"video:{video.video_id}"]),
                 NodeClient(url(gw), auth={"token": bob}, subscribe=[f"video:{other.video_id}"],
                            transports=["polling"])) as (watcher, elsewhere):
        [replies] = watcher.event("ack")["args"]
        assert [(r["type"], r["channel"], r["recovered"]) for r in replies] == [
            ("subscribed", f"video:{video.video_id}", False)]
        elsewhere.event("ack")
        produce(gw, [like(video.video_id, 10, 4)])
        [data, where] = watcher.event("like_update")["args"]
        assert data == {"video_id": video.video_id, "like_count": 10, "delta": 4}
        assert where["channel"] == f"video:{video.video_id}"
        [presence, _] = watcher.event("presence", timeout_s=5)["args"]
        assert presence == {"video_id": video.video_id, "watching": 1}
        elsewhere.drain(0.5)
        assert elsewhere.events("like_update") == []


def test_bad_tokens_forbidden_channels_unknown_events_and_origins_are_refused(gw: Settings) -> None:
    upload = Video(uploader_id="carol")
    produce(gw, [upload.uploaded()])
    wrong_secret = issue_token("another-secret-of-at-least-32-bytes!", "alice")
    rejected_before = metric(gw, "lustrax_socketio_rejected_connections_total", reason="token")
    with clients(NodeClient(url(gw), auth={"token": "not-a-jwt"}), NodeClient(url(gw), auth={"token": wrong_secret}),
                 NodeClient(url(gw), auth={"token": 42}),
                 NodeClient(url(gw), subscribe=[f"video:{upload.video_id}"],
                            emit=[["dance", {}], ["subscribe", "feed"]]),
                 NodeClient(url(gw), auth={"token": token(gw, "dave")}, subscribe=[f"upload:{upload.video_id}"]),
                 NodeClient(url(gw), transports=["polling"], io={"extraHeaders": {"Origin": "http://evil.example"}}),
                 NodeClient(url(gw), transports=["websocket"], io={"reconnection": False},
                            emit=[["subscribe", {"channels": ["feed"], "pad": "x" * (gw.ws_max_message_bytes + 1)}]]),
                 NodeClient(url(gw), age_token=None), NodeClient(url(gw), age_token="forged.age.token")
                 ) as (garbage, forged, typed, anonymous, dave, evil, big, unverified, forged_age):
        for client in (unverified, forged_age):  # docs/trust-and-safety.md: no adult channel before the gate
            refused = client.event("connect_error")
            assert (refused["message"], refused["data"]["field"]) == ("age_verification_required", "age_token")
        for client in (garbage, forged):
            refused = client.event("connect_error")
            assert refused["message"] == "invalid_token"
            assert refused["data"] == {"code": "invalid_token", "message": refused["data"]["message"],
                                       "field": "token"}
        assert typed.event("connect_error")["data"]["code"] == "bad_message"
        [[reply]] = anonymous.event("ack")["args"]
        assert (reply["type"], reply["code"]) == ("error", "unauthenticated")
        assert [e["args"][0]["code"] for e in (anonymous.event("error", code=code) for code in (
            "unknown_op", "bad_message", "unauthenticated"))] == ["unknown_op", "bad_message", "unauthenticated"]
        anonymous.drain(0.3)
        assert anonymous.events("disconnect") == []  # refusals leave the connection open
        [[reply]] = dave.event("ack")["args"]
        assert (reply["type"], reply["code"], reply["channel"]) == ("error", "forbidden", f"upload:{upload.video_id}")
        evil.event("connect_error")  # Engine.IO answers 400: not an accepted origin
        assert evil.events("connect") == []
        big.event("connect")
        assert big.event("disconnect")["reason"] == "transport close"  # a message over the limit: closed
        for client in (garbage, forged, typed, unverified, forged_age):
            assert client.events("connect") == [] and client.events("subscribed") == []
    assert metric(gw, "lustrax_socketio_rejected_connections_total", reason="token") == rejected_before + 2


def test_a_client_that_stops_polling_is_dropped_and_does_not_delay_the_others(gw: Settings) -> None:
    polling = f"{url(gw)}/socket.io/?EIO=4&transport=polling"
    with httpx.Client(timeout=10) as http:  # Engine.IO by hand: open, join the namespace, never poll again
        sid = orjson.loads(http.get(polling).text[1:])["sid"]
        joined = "40" + orjson.dumps({"age_token": age_token(gw)}).decode()  # past the age gate: the feed
        assert http.post(f"{polling}&sid={sid}", content=joined).text == "OK"
    burst = [Video(title=f"burst {n}") for n in range(40)]  # more than the 16 packets it may leave unread
    closes_before = metric(gw, "lustrax_socketio_slow_closes_total")
    with clients(NodeClient(url(gw), transports=["websocket"])) as (reader,):
        reader.event("subscribed", channel="feed")
        produce(gw, [v.published() for v in burst])
        for v in burst:
            reader.event("new_video", video_id=v.video_id)
    deadline = time.monotonic() + 5
    while metric(gw, "lustrax_socketio_slow_closes_total") == closes_before:
        assert time.monotonic() < deadline, "the stalled client was not dropped"
        time.sleep(0.1)
    assert httpx.get(f"{polling}&sid={sid}", timeout=10).status_code == 400  # its session is gone


def test_a_reconnecting_client_resumes_after_its_last_seq_and_shutdown_sends_it_away(stack: Settings) -> None:
    """Connections per address are limited. The gateway stops: its clients are sent away and
    reconnect by themselves; the real client's auth.since (re-read on every attempt) gets exactly
    the new_video events it missed meanwhile."""
    before, missed = [Video(title=f"before {n}") for n in range(2)], [Video(title=f"missed {n}") for n in range(3)]
    ports = {"ws_port": free_port(), "socketio_port": free_port()}
    address = f"http://127.0.0.1:{ports['socketio_port']}"
    with clients(NodeClient(address, resume=True, transports=["websocket"],
                            io={"reconnectionDelay": 200, "reconnectionDelayMax": 500})) as (client,):
        with gateway(stack, ws_max_connections_per_ip=2, **ports) as first:
            client.event("subscribed", channel="feed")
            with clients(NodeClient(address), NodeClient(address)) as (second, third):
                refused = [c for c in (second, third) if c.wait(lambda line: isinstance(line, dict) and line[
                    "event"] in ("subscribed", "connect_error"))["event"] == "connect_error"]
                assert [c.event("connect_error")["message"] for c in refused] == ["too_many_connections"]
            produce(first, [v.published() for v in before])
            for v in before:
                client.event("new_video", video_id=v.video_id)
        assert client.event("disconnect")["reason"] == "transport close"  # not "io server disconnect": it retries
        client.event("reconnect_attempt")
        produce(stack, [v.published() for v in missed])
        with gateway(stack, **ports):
            resumed = client.event("subscribed", channel="feed", recovered=True)
            client.event("new_video", video_id=missed[-1].video_id)
            client.drain(0.5)
            after = client.lines[client.lines.index(resumed):]
            got = [line["args"] for line in after if isinstance(line, dict) and line["event"] == "new_video"]
            # exactly the missed ones, none seen before; in the merged order (time, then partition)
            assert sorted(data["title"] for data, _ in got) == [v.title for v in missed]
            assert [where["seq"] for _, where in got] == sorted({where["seq"] for _, where in got})
