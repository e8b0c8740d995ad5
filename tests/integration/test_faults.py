"""Faults on the whole supervised stack: `lustrax up --detach` with every component, one stack for
the module (the session's, which tests/integration/test_supervisor.py takes on next), traffic from
simulate's model through the ingest API (the project's client).

Each test breaks one thing while events flow, lets the supervisor (or the operator's `lustrax
restart`) bring it back, and prints what was acknowledged and what arrived:

- the broker restarted under traffic: 503 while it is down, never a false 202, every acknowledged
  event in ClickHouse exactly once;
- the heat worker SIGKILLed mid-stream: its scores converge to those of an undisturbed run of the
  same input;
- the ClickHouse store unwritable for a while (the embedded engine's table directories made
  immutable, so the sink's inserts fail while it runs): the sink holds one batch, catches up,
  loses nothing, and its memory does not grow with the backlog;
- the transcoder SIGKILLed mid-transcode: transcoded once, published once, never a partial ladder;
- the moderation worker SIGKILLed after the copy to the public bucket and before VideoPublished
  (the broker is paused meanwhile, so that the window is certain): published exactly once;
- a gateway SIGKILLed: its client resumes on another instance with exactly what it missed;
- a poison message on every input topic: parked by each of its consumers, the event behind it flows.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import m3u8
import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from common.process import free_port
from common.settings import Settings
from common.tokens import issue_token
from infra.clickhouse.analyst import _ask_sink
from infra.kafka.producer import OutgoingMessage, produce_acknowledged
from infra.s3.buckets import s3_client
from infra.s3.layout import MASTER_PLAYLIST, ladder_prefix, new_video_id, public_prefix, source_key
from lustrax.dead_letters import list_dead_letters
from processors.sink.rows import TABLE_OF_SCHEMA
from processors.sink.sink import CONSUMER as SINK_CONSUMER
from processors.sink.sink import GROUP_ID as SINK_GROUP
from producers.client import AsyncIngestClient, IngestClientError
from producers.simulate import TrafficModel
from schemas.codec import decode, encode
from schemas.envelope import new_record
from schemas.topics import TOPIC_BY_SCHEMA
from tests.helpers import SUPERVISED_ENV, age_headers, age_token, lustrax_command, report_service, running_service
from tests.helpers import SupervisedStack as Supervised, wait_until
from tests.integration.test_moderation_rejected import short_clip
from tests.integration.test_transcode_worker import _upload
from tests.unit.test_avro_codec import SAMPLES

pytestmark = pytest.mark.integration

SINK_BATCH_ROWS = int(SUPERVISED_ENV["LUSTRAX_SINK_BATCH_ROWS"])  # the store's outage: a backlog of many batches
TABLE_OF_TYPE = {"view": "views", "watch_tick": "watch_ticks", "like": "likes", "unlike": "likes"}
# Consumer groups of the processors and the topics they read (the sink reads every stored schema).
CONSUMERS_OF_SCHEMA: dict[str, set[str]] = {schema: {SINK_CONSUMER} for schema in TABLE_OF_SCHEMA}
for _schema in ("VideoView", "WatchTick", "VideoLike"):
    CONSUMERS_OF_SCHEMA[_schema].add("heat")
CONSUMERS_OF_SCHEMA["VideoUploaded"].add("transcode")
CONSUMERS_OF_SCHEMA["VideoTranscoded"].add("moderation")


@pytest.fixture(scope="module")
def supervised(supervised_stack: Supervised) -> Iterator[Supervised]:
    """The session's supervised stack (tests/conftest.py), which tests/integration/test_supervisor.py
    takes on after this module."""
    try:
        yield supervised_stack
    finally:
        _thaw(supervised_stack.home)  # whatever a failed test left frozen


# -- traffic ---------------------------------------------------------------------------------------

def model_events(seed: int, prefix: str, span_s: float, sessions: int = 30, users: int = 40, videos: int = 8
                 ) -> list[dict[str, Any]]:
    """simulate's model over the last `span_s` seconds (ticks every second), on videos `{prefix}-...`."""
    now_ms = int(time.time() * 1000)
    model = TrafficModel(seed, users, videos, tick_interval_s=1.0, concurrent_sessions=sessions,
                         start_ms=now_ms - int(span_s * 1000))
    return [{**event, "video_id": f"{prefix}-{event['video_id']}"} for event in model.events_until(now_ms)]


def renamed(events: list[dict[str, Any]], prefix: str) -> list[dict[str, Any]]:
    """The same input on other videos: other video ids and event ids, everything else equal."""
    def video(name: str) -> str:
        return f"{prefix}-{name.split('-', 1)[1]}"
    return [{**event, "video_id": video(event["video_id"]),
             "event_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{prefix}:{event['event_id']}"))} for event in events]


@dataclass
class Answer:
    sent_at: float  # monotonic
    answered_at: float
    status: int | None  # None: no answer
    count: int
    code: str = ""  # the error's code, for a refusal
    retry_after_s: float | None = None


@dataclass
class Sender:
    """Sends `events` in order through the ingest API at `rate` events/s, in batches, with the
    project's client told not to retry: each answer is recorded, and a refused batch is sent again
    (same event_ids) half a second later, as a client does."""

    settings: Settings
    events: list[dict[str, Any]]
    rate: float
    batch: int = 50
    acked: dict[str, dict[str, Any]] = field(default_factory=dict)
    answers: list[Answer] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def __enter__(self) -> Sender:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.thread.join(timeout=30)

    async def _run(self) -> None:
        token = issue_token(self.settings.jwt_signing_secret, "faults", ("service",), 3600)
        url = f"http://127.0.0.1:{self.settings.ingest_port}"
        async with AsyncIngestClient(url, token, timeout_s=15, max_retries=0) as client:
            position, began = 0, time.monotonic()
            while position < len(self.events) and not self.stopping.is_set():
                batch = self.events[position:position + self.batch]
                sent_at = time.monotonic()
                code, retry_after_s = "", None
                try:
                    await client.send_batch(batch)
                    status: int | None = 202
                except IngestClientError as exc:
                    status, code, retry_after_s = exc.status, exc.code, exc.retry_after_s
                self.answers.append(Answer(sent_at, time.monotonic(), status, len(batch), code, retry_after_s))
                if status == 202:
                    self.acked.update((event["event_id"], event) for event in batch)
                    position += len(batch)
                    await asyncio.sleep(max(0.0, began + position / self.rate - time.monotonic()))
                else:
                    await asyncio.sleep(0.5)
        self.done.set()

    def wait_acked(self, at_least: int, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.acked) < at_least:
            assert time.monotonic() < deadline, f"{len(self.acked)} of {at_least} events acknowledged"
            time.sleep(0.1)

    def refused(self) -> list[Answer]:
        return [a for a in self.answers if a.status != 202]


def run_sql(settings: Settings, sql: str, parameters: dict[str, str]) -> tuple[list[str], list[list[Any]]]:
    """An analyst query through the sink's endpoint only, waiting while the sink restarts. (`lustrax
    sql`'s fallback would open the embedded store in this process and keep it from the sink for good.)"""
    deadline = time.monotonic() + 60
    while (answer := _ask_sink(settings, sql, parameters)) is None:
        assert time.monotonic() < deadline, "the sink's query endpoint did not answer within 60 s"
        time.sleep(0.5)
    return answer


def stored_counts(settings: Settings, prefix: str) -> dict[str, int]:
    """event_id -> rows stored, over the engagement tables (no FINAL: a duplicate row would show)."""
    counts: dict[str, int] = {}
    for table in sorted(set(TABLE_OF_TYPE.values())):
        _, rows = run_sql(settings, f"SELECT toString(event_id), count() FROM {{db}}.{table} "
                          "WHERE startsWith(video_id, {p:String}) GROUP BY event_id", {"p": f"{prefix}-"})
        counts.update((event_id, int(n)) for event_id, n in rows)
    return counts


def wait_stored(settings: Settings, prefix: str, acked: set[str], timeout_s: float = 60) -> dict[str, int]:
    deadline, stored = time.monotonic() + timeout_s, {}
    while time.monotonic() < deadline:
        stored = stored_counts(settings, prefix)
        if acked <= stored.keys():
            break
        time.sleep(0.5)
    return stored


def assert_each_acked_once(sender: Sender, stored: dict[str, int]) -> None:
    missing = sender.acked.keys() - stored.keys()
    doubled = {event_id: n for event_id, n in stored.items() if n != 1}
    assert not missing, f"{len(missing)} acknowledged events not in ClickHouse, e.g. {sorted(missing)[:3]}"
    assert not doubled, f"events stored more than once: {dict(list(doubled.items())[:3])}"


def _port_open(bootstrap: str) -> bool:
    host, port = bootstrap.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=0.3):
            return True
    except OSError:
        return False


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


# -- Kafka records -----------------------------------------------------------------------------

def records_now(settings: Settings, schema: str, video_id: str) -> list[tuple[dict[str, Any], int]]:
    """Every record of `video_id` on the schema's topic so far, with its broker timestamp (ms)."""
    topic = TOPIC_BY_SCHEMA[schema].name
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": f"t-{uuid.uuid4().hex}",
                         "enable.auto.commit": False})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions}
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions if ends[p]])
        found, done = [], {p for p, end in ends.items() if end == 0}
        deadline = time.monotonic() + 30
        while len(done) < len(partitions) and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            if msg.offset() + 1 >= ends[msg.partition()]:
                done.add(msg.partition())
            try:
                _, record = decode(msg.value())
            except Exception:  # noqa: BLE001 - the poison test's bytes
                continue
            if record.get("video_id") == video_id:
                found.append((record, msg.timestamp()[1]))
        return found
    finally:
        consumer.close()


def wait_records(settings: Settings, schema: str, video_id: str, timeout_s: float = 90
                 ) -> list[tuple[dict[str, Any], int]]:
    deadline = time.monotonic() + timeout_s
    while not (found := records_now(settings, schema, video_id)):
        assert time.monotonic() < deadline, f"no {schema} for {video_id} within {timeout_s} s"
        time.sleep(1)
    return found


def _wait(what: str, check: Callable[[], Any], timeout_s: float = 60, every_s: float = 0.5) -> Any:
    return wait_until(what, check, timeout_s, every_s)


# -- the faults --------------------------------------------------------------------------------

def test_a_poison_message_on_every_input_topic_is_parked_and_the_event_behind_it_flows(
        supervised: Supervised) -> None:
    settings = supervised.settings
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    good: dict[str, dict[str, Any]] = {}
    schema_of_key: dict[str, str] = {}
    for schema in CONSUMERS_OF_SCHEMA:
        key = new_video_id()  # a valid id: the transcoder and moderation judge the event, not its key
        schema_of_key[key] = schema
        good[schema] = {**SAMPLES[schema], "event_id": uuid.uuid4(), "occurred_at": datetime.now(UTC),
                        "video_id": key}
        if schema == "VideoUploaded":  # its source does not exist: the transcoder answers TranscodeFailed
            good[schema] |= {"source_bucket": settings.s3_uploads_bucket, "source_key": source_key(key)}
        topic = TOPIC_BY_SCHEMA[schema].name
        producer.produce(topic, b"\xc3\x01 poison", key.encode())  # same key, same partition: poison first
        producer.produce(topic, encode(schema, good[schema]), key.encode())
    assert producer.flush(10) == 0

    def parked() -> dict[str, set[str]]:
        _, rows = list_dead_letters(settings)
        found: dict[str, set[str]] = {}
        for _, _, consumer, reason, key, _ in rows:
            if key in schema_of_key and ("ndecodable" in reason or "Error" in reason):
                found.setdefault(schema_of_key[key], set()).add(consumer)
        return found if all(want <= found.get(s, set()) for s, want in CONSUMERS_OF_SCHEMA.items()) else {}

    found = _wait("every consumer's dead letter", parked, timeout_s=45)
    print(f"poison parked by: { {schema: sorted(consumers) for schema, consumers in sorted(found.items())} }")

    # What followed each poison message went on: stored by the sink, scored, transcoded (here: a
    # source that does not exist, answered with TranscodeFailed), moderated (a ladder outside staging,
    # refused with its reason).
    for schema, record in good.items():
        table = TABLE_OF_SCHEMA[schema].table
        _, rows = run_sql(settings, f"SELECT count() FROM {{db}}.`{table}` WHERE event_id = {{e:UUID}}",
                          {"e": str(record["event_id"])})
        assert rows == [[1]], (schema, rows)
    view_key = good["VideoView"]["video_id"]
    _wait("the view behind the poison scored", lambda: run_sql(
        settings, "SELECT count() FROM {db}.heat_scores WHERE video_id = {v:String}", {"v": view_key})[1][0][0])
    [(failed, _)] = wait_records(settings, "TranscodeFailed", good["VideoUploaded"]["video_id"], timeout_s=30)
    assert failed["retryable"] is False
    _, rows = list_dead_letters(settings, consumer="moderation")
    assert any(row[4] == good["VideoTranscoded"]["video_id"] and "points outside" in row[3] for row in rows)


async def _next(ws: ClientConnection, types: tuple[str, ...], count: int, timeout_s: float = 20
                ) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < count:
        frame = orjson.loads(await asyncio.wait_for(ws.recv(), max(0.01, deadline - time.monotonic())))
        if frame["type"] in types:
            got.append(frame)
    return got


def _publish(settings: Settings, schema: str, rows: list[dict[str, Any]]) -> None:
    produce_acknowledged(settings.kafka_bootstrap, [
        OutgoingMessage(TOPIC_BY_SCHEMA[schema].name, row["video_id"].encode(),
                        encode(schema, new_record(schema, "faults", row))) for row in rows])


def _new_video(video_id: str) -> dict[str, Any]:
    return {"video_id": video_id, "title": "t", "uploader_id": "u", "video_url": f"http://cdn/{video_id}",
            "thumbnail": f"http://cdn/{video_id}.jpg", "premium": False, "published_at": datetime.now(UTC)}


def test_a_killed_gateways_client_resumes_on_another_with_what_it_missed(supervised: Supervised) -> None:
    settings = supervised.settings
    video = f"gw-{uuid.uuid4().hex[:8]}"
    channels = ["feed", f"video:{video}"]
    kinds = ("new_video", "like_update")
    alice = issue_token(settings.jwt_signing_secret, "alice")
    other = settings.model_copy(update={"ws_port": free_port(), "socketio_port": free_port()})

    def ws_url(port: int) -> str:
        return f"ws://127.0.0.1:{port}/v1/ws?token={alice}&age_token={age_token(settings)}"

    async def subscribe(ws: ClientConnection, since: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
        await ws.send(orjson.dumps({"op": "subscribe", "channels": channels, **({"since": since} if since else {})}))
        return {f["channel"]: f for f in await _next(ws, ("subscribed",), len(channels))}

    async def before_and_during_the_kill() -> tuple[dict[str, Any], list[dict[str, Any]], float]:
        async with connect(ws_url(other.ws_port)) as watcher, connect(ws_url(settings.ws_port)) as client:
            await subscribe(watcher)
            await subscribe(client)
            _publish(settings, "VideoPublished", [_new_video(f"{video}-a{i}") for i in range(2)])
            _publish(settings, "LikeUpdate", [{"video_id": video, "like_count": 1, "delta": 1}])
            seen = await _next(client, kinds, 3)
            await _next(watcher, kinds, 3)
            since = {f["channel"]: f["seq"] for f in seen}
            pid = supervised.pid("gateway")
            os.kill(pid, signal.SIGKILL)
            with pytest.raises(ConnectionClosed):
                while True:
                    await asyncio.wait_for(client.recv(), 10)
            # Missed while the client is away: on every partition of the feed, and on its video. One
            # acknowledged produce each: one request appending to several partitions within a millisecond
            # may be merged in another order by a gateway under load (docs/ws-protocol.md, "Guarantee").
            for i in range(4):
                _publish(settings, "VideoPublished", [_new_video(f"{video}-b{i}")])
            _publish(settings, "LikeUpdate", [{"video_id": video, "like_count": n, "delta": 1} for n in (2, 3)])
            missed = await _next(watcher, kinds, 6)
            return since, missed, float(pid)

    async def resume(port: int, since: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
        async with connect(ws_url(port)) as ws:
            await ws.send(orjson.dumps({"op": "subscribe", "channels": channels, "since": since}))
            got = await _next(ws, ("subscribed", *kinds), len(channels) + 6)  # recovered frames may come first
            return {f["channel"]: f for f in got if f["type"] == "subscribed"}, [f for f in got if f["type"] in kinds]

    with running_service(other, "gateway", other.ws_port):
        since, missed, pid = asyncio.run(before_and_during_the_kill())
        subscribed, recovered = asyncio.run(resume(other.ws_port, since))
        assert all(f["recovered"] for f in subscribed.values()), subscribed
        assert recovered == missed
        back_s = supervised.wait_back("gateway", int(pid), settings.ws_port)
        subscribed, again = asyncio.run(resume(settings.ws_port, since))  # the restarted one knows it too
        assert all(f["recovered"] for f in subscribed.values()) and again == missed
    print(f"gateway SIGKILLed: the client missed {len(missed)} frames, recovered {len(recovered)} on another "
          f"instance; the killed one was back after {back_s:.1f} s and recovered the same")


def test_the_broker_restarted_under_traffic_gives_503_never_a_false_202_and_loses_nothing(
        supervised: Supervised) -> None:
    settings, prefix = supervised.settings, f"broker{uuid.uuid4().hex[:6]}"
    closed: list[tuple[float, float]] = []  # intervals with nothing listening on the broker's port
    ready_while_closed: list[int] = []  # the API's /readyz answers while the port was closed
    watching = threading.Event()

    def watch_port() -> None:
        since: float | None = None
        while not watching.is_set():
            is_open, now = _port_open(settings.kafka_bootstrap), time.monotonic()
            if not is_open and since is None:
                since = now
            elif is_open and since is not None:
                closed.append((since, now))
                since = None
            time.sleep(0.05)

    def watch_ready() -> None:  # apart: with the broker down, /readyz takes its 2 s metadata timeout
        while not watching.is_set():
            if not _port_open(settings.kafka_bootstrap):
                try:
                    ready_while_closed.append(httpx.get(f"http://127.0.0.1:{settings.ingest_port}/readyz",
                                                        timeout=10.0).status_code)
                except httpx.HTTPError:
                    pass  # the API busy with the refusals: ask again
            time.sleep(0.2)

    watchers = [threading.Thread(target=watch, daemon=True) for watch in (watch_port, watch_ready)]
    with Sender(settings, model_events(1, prefix, span_s=90), rate=120) as sender:
        sender.wait_acked(300)
        for watcher in watchers:
            watcher.start()
        began = time.monotonic()
        restart = lustrax_command(supervised.env, "restart", "kafka")
        assert restart.returncode == 0, restart.stderr
        restart_s = time.monotonic() - began
        acked_at_restart = len(sender.acked)
        sender.wait_acked(acked_at_restart + 150, timeout_s=60)  # flowing again
        watching.set()
        for watcher in watchers:
            watcher.join(timeout=15)
    stored = wait_stored(settings, prefix, set(sender.acked))
    refused = sender.refused()
    print(f"broker restart took {restart_s:.1f} s, port closed {[round(b - a, 1) for a, b in closed]} s; "
          f"sent {sum(a.count for a in sender.answers)} in {len(sender.answers)} batches: acknowledged "
          f"{len(sender.acked)}, refused {len(refused)} batches ({sorted({a.status for a in refused}, key=str)}); "
          f"stored {len(stored)} distinct, {sum(stored.values())} rows")
    assert closed, "the broker's port never closed"
    assert refused and {a.status for a in refused} == {503}
    # Each refusal says why and when to come back, and came within the delivery timeout, not hanging.
    assert {a.code for a in refused} == {"broker_unavailable"}
    assert all(a.retry_after_s is not None and a.retry_after_s > 0 for a in refused)
    assert max(a.answered_at - a.sent_at for a in refused) < 10
    assert 503 in ready_while_closed, f"/readyz while the broker was down: {sorted(set(ready_while_closed))}"
    # Sent after the port closed and answered before it opened again: the broker had nothing of it.
    false = [a for a in sender.answers if a.status == 202 and any(
        start < a.sent_at and a.answered_at < end for start, end in closed)]
    assert not false, f"202 while the broker was down: {false}"
    assert_each_acked_once(sender, stored)


HEAT_COLUMNS = ("views", "unique_viewers", "net_likes", "completion_rate", "rewatch_rate", "avg_watched_fraction")


def heat_rows(settings: Settings, prefix: str) -> dict[str, tuple[Any, ...]]:
    """The latest 1h score per video, keyed by the video's name without the run's prefix."""
    _, rows = run_sql(settings, f"SELECT video_id, {', '.join(HEAT_COLUMNS)}, score FROM {{db}}.heat_scores_latest "
                      "FINAL WHERE `window` = '1h' AND startsWith(video_id, {p:String})", {"p": f"{prefix}-"})
    return {row[0].split("-", 1)[1]: tuple(row[1:]) for row in rows}


def views_per_video(events: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for event in events:
        if event["type"] == "view":
            name = event["video_id"].split("-", 1)[1]
            counts[name] = counts.get(name, 0) + 1
    return counts


def _same_scores(a: dict[str, tuple[Any, ...]], b: dict[str, tuple[Any, ...]]) -> bool:
    return a.keys() == b.keys() and all(
        x[:len(HEAT_COLUMNS)] == y[:len(HEAT_COLUMNS)] and abs(x[-1] - y[-1]) <= 1e-2 * max(abs(y[-1]), 1e-9)
        for name in a for x, y in [(a[name], b[name])])


def test_a_heat_worker_killed_mid_stream_converges_to_the_undisturbed_scores(supervised: Supervised) -> None:
    settings, run = supervised.settings, uuid.uuid4().hex[:6]
    calm_prefix, killed_prefix = f"calm{run}", f"kill{run}"
    calm = model_events(2, calm_prefix, span_s=40)
    expected_views = views_per_video(calm)

    def views_scored(prefix: str) -> dict[str, tuple[Any, ...]] | None:
        rows = heat_rows(settings, prefix)
        return rows if {name: row[0] for name, row in rows.items()} == expected_views else None

    with Sender(settings, calm, rate=1000, batch=200) as sender:
        assert sender.done.wait(60) and len(sender.acked) == len(calm)
    def settled() -> dict[str, tuple[Any, ...]] | None:
        first = views_scored(calm_prefix)
        time.sleep(2.5)  # longer than an emission and a sink batch: nothing of the run still on its way
        return first if first and heat_rows(settings, calm_prefix) == first else None

    undisturbed = _wait("the undisturbed run scored", settled, timeout_s=40)

    disturbed = renamed(calm, killed_prefix)
    with Sender(settings, disturbed, rate=len(disturbed) / 6, batch=25) as sender:
        sender.wait_acked(len(disturbed) // 2)
        pid = supervised.pid("heat")
        os.kill(pid, signal.SIGKILL)
        killed_after = len(sender.acked)
        assert sender.done.wait(60) and len(sender.acked) == len(disturbed)
    back_s = supervised.wait_back("heat", pid, settings.heat_web_port)
    began = time.monotonic()
    last: dict[str, tuple[Any, ...]] = {}

    def converged() -> bool:
        nonlocal last
        last = heat_rows(settings, killed_prefix)
        return _same_scores(last, undisturbed)

    try:
        # Convergence is the property; it took 3.5-5.8 s after the worker was back in 13 runs here.
        _wait("the scores after the kill equal the undisturbed ones", converged, timeout_s=45)
    except AssertionError:
        report_service("heat", settings.heat_web_port, settings.logs_dir / "heat.log", supervised.pid("heat"))
        raise
    finally:
        print(f"heat: {len(disturbed)} events acknowledged ({killed_after} before the SIGKILL), worker back after "
              f"{back_s:.1f} s, scores equal {time.monotonic() - began:.1f} s later; undisturbed {undisturbed}; "
              f"after the kill {last}")


def _table_dirs(home: Path) -> list[Path]:
    return [path.resolve() for path in (home / "data" / "clickhouse" / "data" / "lustrax").iterdir()]


def _freeze(home: Path) -> None:
    # Immutable directories refuse new entries, even to root: every insert fails to create its part.
    subprocess.run(["chattr", "+i", *map(str, _table_dirs(home))], check=True)


def _thaw(home: Path) -> None:
    if (home / "data" / "clickhouse" / "data" / "lustrax").is_dir():
        subprocess.run(["chattr", "-i", *map(str, _table_dirs(home))], check=False)


def committed(settings: Settings, group: str, schema: str) -> int:
    """How many messages of the schema's topic `group` has committed, over all partitions."""
    topic = TOPIC_BY_SCHEMA[schema]
    probe = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        offsets = probe.committed([TopicPartition(topic.name, p) for p in range(topic.partitions)], timeout=10)
        return sum(max(tp.offset, 0) for tp in offsets)
    finally:
        probe.close()


def test_the_store_unwritable_for_a_while_the_sink_catches_up_with_bounded_memory(supervised: Supervised) -> None:
    """The embedded store belongs to the sink (chDB: one process per data directory), so it cannot
    be stopped apart from its writer; it is made unwritable instead: its table directories become
    immutable (`chattr +i`), every insert fails, while the sink, the API and the broker run on. A
    backlog produced straight to Kafka meanwhile is twenty times the sink's batch."""
    settings, home, prefix = supervised.settings, supervised.home, f"store{uuid.uuid4().hex[:6]}"
    sink_pid = supervised.pid("sink")
    rss_before = _rss_kib(sink_pid)
    backlog, frozen_s = 10_000, 8.0
    with Sender(settings, model_events(3, prefix, span_s=120), rate=150) as sender:
        sender.wait_acked(100)
        _freeze(home)
        try:
            _wait("the sink reports failing inserts", lambda: httpx.get(
                f"http://127.0.0.1:{settings.sink_query_port}/healthz", timeout=3).status_code == 503, timeout_s=20)
            acked_frozen = len(sender.acked)
            committed_frozen = committed(settings, SINK_GROUP, "VideoView")
            producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "linger.ms": 50})
            for i in range(backlog):
                record = new_record("VideoView", "faults", {"video_id": f"bulk{prefix}-{i % 50}",
                                                            "user_id": f"u{i}", "session_id": f"s{i}"})
                producer.produce(TOPIC_BY_SCHEMA["VideoView"].name, encode("VideoView", record),
                                 record["video_id"].encode())
                if i % 5000 == 0:
                    producer.poll(0)
            assert producer.flush(30) == 0
            peak_frozen, deadline = rss_before, time.monotonic() + frozen_s  # unwritable a while longer
            while time.monotonic() < deadline:
                peak_frozen = max(peak_frozen, _rss_kib(sink_pid))
                time.sleep(0.2)
            acked_during = len(sender.acked) - acked_frozen
            # Nothing committed while nothing could be stored: the backlog waits in Kafka.
            assert committed(settings, SINK_GROUP, "VideoView") == committed_frozen
        finally:
            _thaw(home)
        thawed = time.monotonic()
        sender.wait_acked(len(sender.acked) + 100)
    peak = peak_frozen

    def caught_up() -> bool:
        nonlocal peak
        peak = max(peak, _rss_kib(sink_pid))
        _, rows = run_sql(settings, "SELECT count() FROM {db}.views WHERE startsWith(video_id, {p:String})",
                          {"p": f"bulk{prefix}-"})
        return bool(rows[0][0] == backlog)

    _wait("the sink stored the backlog", caught_up, timeout_s=60, every_s=0.3)
    caught_up_s = time.monotonic() - thawed
    stored = wait_stored(settings, prefix, set(sender.acked))
    print(f"store unwritable {frozen_s + 2:.0f} s and more: the API acknowledged {acked_during} events meanwhile, "
          f"plus {backlog} views straight to Kafka; all stored {caught_up_s:.1f} s after the store was writable "
          f"again; acknowledged {len(sender.acked)}, stored {len(stored)}; sink RSS {rss_before // 1024} MiB before, "
          f"peak {peak_frozen // 1024} MiB while unwritable, {peak // 1024} MiB while catching up")
    assert supervised.pid("sink") == sink_pid, "the sink was restarted: it should have waited for the store"
    assert_each_acked_once(sender, stored)
    # A fixed allowance (librdkafka's fetch queue is up to 64 MiB), whatever the backlog.
    assert peak - rss_before < 128 * 1024


def _ffmpeg_in_group(pgid: int) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                stat = (proc / "stat").read_text().rsplit(")", 1)[1].split()
                if int(stat[2]) == pgid and b"ffmpeg" in (proc / "cmdline").read_bytes():
                    found.append(int(proc.name))
            except (OSError, IndexError, ValueError):
                continue
    return found


class PublicLadderWatch:
    """Polls the public bucket: each time the video's master playlist is there, every playlist and
    segment it names must be there too (the moment a player could start)."""

    def __init__(self, settings: Settings, video_id: str) -> None:
        self.s3 = s3_client(settings)
        self.bucket = settings.s3_public_bucket
        self.prefix = public_prefix(video_id, False)
        self.checks = 0
        self.partial: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PublicLadderWatch:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=10)

    def _run(self) -> None:
        while not self.stop.is_set():
            keys = {o["Key"] for o in self.s3.list_objects_v2(Bucket=self.bucket, Prefix=self.prefix).get("Contents", [])}
            if self.prefix + MASTER_PLAYLIST in keys:
                self.checks += 1
                master = m3u8.loads(self.s3.get_object(Bucket=self.bucket, Key=self.prefix + MASTER_PLAYLIST)[
                    "Body"].read().decode())
                for variant in master.playlists:
                    key = self.prefix + variant.uri
                    if key not in keys:
                        self.partial.append(key)
                        continue
                    playlist = m3u8.loads(self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read().decode())
                    folder = key.rsplit("/", 1)[0] + "/"
                    self.partial += [folder + s.uri for s in playlist.segments if folder + s.uri not in keys]
            self.stop.wait(0.1)


def _published_once(settings: Settings, video_id: str, after_ms: float) -> dict[str, Any]:
    published = wait_records(settings, "VideoPublished", video_id, timeout_s=120)
    assert len({str(r["event_id"]) for r, _ in published}) == 1, published
    assert all(ts > after_ms for _, ts in published), "published before the kill"
    _wait("the publication stored", lambda: run_sql(
        settings, "SELECT count() FROM {db}.publications WHERE video_id = {v:String}", {"v": video_id})[1][0][0])
    _, rows = run_sql(settings, "SELECT count() FROM {db}.publications WHERE video_id = {v:String}", {"v": video_id})
    assert rows == [[1]]
    answer = httpx.get(f"http://127.0.0.1:{settings.ingest_port}/v1/videos/{video_id}", headers=age_headers(settings),
                       timeout=10)
    assert answer.status_code == 200 and answer.json()["state"] == "published", answer.text
    return published[0][0]


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return short_clip(tmp_path_factory.mktemp("clips") / "clip.mp4").read_bytes()


def test_the_transcoder_killed_mid_transcode_transcodes_and_publishes_once(supervised: Supervised,
                                                                         clip: bytes) -> None:
    settings = supervised.settings
    api = f"http://127.0.0.1:{settings.ingest_port}"
    pid = supervised.pid("transcode")
    video_id = _upload(api, settings, clip)
    with PublicLadderWatch(settings, video_id) as watch:
        ffmpeg = _wait("ffmpeg running for the upload", lambda: _ffmpeg_in_group(pid), timeout_s=30, every_s=0.05)
        os.kill(pid, signal.SIGKILL)
        killed_ms = time.time() * 1000
        back_s = supervised.wait_back("transcode", pid, settings.transcode_web_port)
        assert not _ffmpeg_in_group(pid), "the killed worker's ffmpeg outlived it"
        published = _published_once(settings, video_id, killed_ms)
        watch.stop.wait(1.0)  # a few more looks at the public ladder
    transcoded = records_now(settings, "VideoTranscoded", video_id)
    failed = records_now(settings, "TranscodeFailed", video_id)
    print(f"transcoder SIGKILLed with ffmpeg {ffmpeg} running, back after {back_s:.1f} s; VideoTranscoded "
          f"{len(transcoded)} record(s), {len({str(r['event_id']) for r, _ in transcoded})} id(s); VideoPublished "
          f"{published['event_id']}; the public ladder checked {watch.checks} times, partial: {watch.partial}")
    assert len({str(r["event_id"]) for r, _ in transcoded}) == 1 and not failed
    assert all(ts > killed_ms for _, ts in transcoded), "announced before the kill: the kill was not mid-transcode"
    assert watch.checks > 0 and watch.partial == []


def test_the_moderation_worker_killed_between_the_copy_and_the_publish_event_publishes_once(
        supervised: Supervised, clip: bytes) -> None:
    settings, home = supervised.settings, supervised.home
    api = f"http://127.0.0.1:{settings.ingest_port}"
    s3 = s3_client(settings)
    pid, broker = supervised.pid("moderation"), supervised.pid("kafka")
    video_id = _upload(api, settings, clip)
    work = home / "data" / "moderation-work"
    _wait("the moderation worker deciding", lambda: list(work.glob(f"{video_id}-*")), timeout_s=90, every_s=0.05)
    # The broker paused: the decision's events cannot be acknowledged, the S3 copies go on.
    os.kill(broker, signal.SIGSTOP)
    try:
        master = public_prefix(video_id, False) + MASTER_PLAYLIST
        _wait("the ladder copied to the public bucket", lambda: "Contents" in s3.list_objects_v2(
            Bucket=settings.s3_public_bucket, Prefix=master), timeout_s=30, every_s=0.05)
        os.kill(pid, signal.SIGKILL)
        killed_ms = time.time() * 1000
    finally:
        os.kill(broker, signal.SIGCONT)
    staged = s3.list_objects_v2(Bucket=settings.s3_staging_bucket, Prefix=ladder_prefix(video_id))["KeyCount"]
    back_s = supervised.wait_back("moderation", pid, settings.moderation_web_port)
    published = _published_once(settings, video_id, killed_ms)
    decided = records_now(settings, "ModerationDecided", video_id)
    print(f"moderation SIGKILLed after the copy ({staged} staged objects, the public master present), back after "
          f"{back_s:.1f} s; ModerationDecided {len(decided)} record(s) of "
          f"{len({str(r['event_id']) for r, _ in decided})} id(s); VideoPublished {published['event_id']}")
    assert len({str(r["event_id"]) for r, _ in decided}) == 1
