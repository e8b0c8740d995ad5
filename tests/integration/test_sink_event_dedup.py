"""An event retried with the same event_id counts once, whatever occurred_at the retry carries:
real broker, the real sink, embedded chDB; the base tables, the rollups and every documented query.

The restart test comes first on purpose: it runs sinks of its own, and the module's `sink` fixture
(started by the next test, reading every topic from the start) must not run beside them.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client
from confluent_kafka import Producer

from common.settings import Settings
from infra.clickhouse.migrate import migrate
from processors.sink.dedup import stored_event_ids
from processors.sink.sink import Batch, ClickHouseSink
from schemas.codec import encode
from schemas.topics import TOPIC_BY_SCHEMA

pytestmark = pytest.mark.integration

QUERIES = Path(__file__).resolve().parents[2] / "infra" / "clickhouse" / "queries"
FMT = "%Y-%m-%d %H:%M:%S"


def _events(video: str, at: datetime) -> list[tuple[str, dict[str, Any]]]:
    """One event of each kind the documented queries read, for one video."""
    def envelope() -> dict[str, Any]:
        return {"event_id": uuid.uuid4(), "occurred_at": at, "producer": "test", "schema_version": 1}

    user, session = f"{video}-user", f"{video}-session"
    return [
        ("VideoUploaded", {**envelope(), "video_id": video, "uploader_id": "alice", "title": "t",
                           "content_type": "video/mp4", "size_bytes": 10, "source_bucket": "b",
                           "source_key": "k", "premium": False, "tags": []}),
        ("VideoView", {**envelope(), "video_id": video, "user_id": user, "session_id": session}),
        ("WatchTick", {**envelope(), "video_id": video, "user_id": user, "session_id": session,
                       "position_ms": 50_000, "duration_ms": 60_000}),
        ("VideoLike", {**envelope(), "video_id": video, "user_id": user, "action": "LIKE"}),
        ("VideoPublished", {**envelope(), "video_id": video, "title": "t", "uploader_id": "alice",
                            "video_url": "u", "thumbnail": "t", "premium": False,
                            "published_at": at + timedelta(minutes=1)}),
        ("HeatScoreUpdated", {**envelope(), "video_id": video, "window": "1h", "window_end": at, "score": 1.5,
                              "views": 1, "unique_viewers": 1, "net_likes": 1, "completion_rate": 0.0,
                              "rewatch_rate": 0.0, "avg_watched_fraction": 0.8}),
    ]


def _retried(events: list[tuple[str, dict[str, Any]]], at: datetime) -> list[tuple[str, dict[str, Any]]]:
    """The same events (same event_id) with another occurred_at, as a retry without one gets."""
    return [(schema, {**record, "occurred_at": at}) for schema, record in events]


def _produce(settings: Settings, events: list[tuple[str, dict[str, Any]]]) -> None:
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "enable.idempotence": True})
    for schema, record in events:
        producer.produce(TOPIC_BY_SCHEMA[schema].name, encode(schema, record), record["video_id"].encode())
    assert producer.flush(30) == 0


def _query(client: Client, lock: threading.Lock, db: str, sql: str, **parameters: Any) -> list[tuple[Any, ...]]:
    with lock:
        return client.query(sql.replace("{db}", db), parameters=parameters).result_rows


def _wait_stored(client: Client, lock: threading.Lock, db: str, video: str, timeout_s: float = 90) -> None:
    """Until the video's view is in; a marker produced after the retries, so they were handled."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _query(client, lock, db, "SELECT count() FROM {db}.views WHERE video_id = {v:String}", v=video)[0][0]:
            return
        time.sleep(0.3)
    raise AssertionError(f"{video} not stored within {timeout_s} s")


def _counts(client: Client, lock: threading.Lock, db: str, video: str) -> dict[str, int]:
    """Stored rows per base table (no FINAL: a duplicate would show) and rollup sums."""
    counts = {}
    for table in ("uploads", "views", "watch_ticks", "likes", "publications", "heat_scores"):
        counts[table] = _query(client, lock, db, f"SELECT count() FROM {{db}}.{table} WHERE video_id = {{v:String}}",
                               v=video)[0][0]
    for rollup in ("video_stats_1m", "video_stats_1h"):
        views, ticks, likes = _query(client, lock, db, f"SELECT sum(views), sum(ticks), sum(likes) FROM {{db}}.{rollup}"
                                                       " WHERE video_id = {v:String}", v=video)[0]
        counts |= {f"{rollup}.views": views, f"{rollup}.ticks": ticks, f"{rollup}.likes": likes}
    return counts


def _once(counts: dict[str, int]) -> dict[str, int]:
    return dict.fromkeys(counts, 1)


class _CrashesAfterInsert(ClickHouseSink):
    """Stores the batch holding `event_id`, then dies before committing its offsets."""

    def __init__(self, *args: Any, event_id: uuid.UUID, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.event_id, self.crashed = event_id, threading.Event()

    def flush(self) -> None:
        if any(row[0] == self.event_id for rows in self.batch.rows.values() for row in rows):
            self._insert_all()
            self.batch = Batch()  # lost with the process: nothing committed
            self.crashed.set()
            self.stop()
            return
        super().flush()


def _running(sink: ClickHouseSink) -> threading.Thread:
    thread = threading.Thread(target=sink.run, daemon=True)
    thread.start()
    return thread


def test_a_retry_counts_once_across_a_sink_crash_and_restart(stack: Settings, clickhouse: Client) -> None:
    db, lock, group = stack.clickhouse_database, threading.Lock(), f"test-dedup-restart-{uuid.uuid4().hex}"
    run = uuid.uuid4().hex[:10]
    now = datetime.now(UTC).replace(microsecond=0)
    events = [e for e in _events(f"{run}-v", now - timedelta(minutes=5)) if e[0] == "VideoView"]
    view_id = events[0][1]["event_id"]
    _produce(stack, events)

    first = _CrashesAfterInsert(clickhouse, db, stack.kafka_bootstrap, batch_interval_s=0.5, lock=lock,
                                group_id=group, event_id=view_id)
    thread = _running(first)
    assert first.crashed.wait(120), "the first sink stored the view"
    thread.join(timeout=30)
    # Redelivered after the restart in a batch with other offsets (the retry and a marker follow).
    _produce(stack, _retried(events, now - timedelta(hours=2, minutes=5)))
    _produce(stack, [e for e in _events(f"{run}-marker", now) if e[0] == "VideoView"])

    second = ClickHouseSink(clickhouse, db, stack.kafka_bootstrap, batch_interval_s=0.5, lock=lock, group_id=group)
    thread = _running(second)
    try:
        _wait_stored(clickhouse, lock, db, f"{run}-marker")
    finally:
        second.stop()
        thread.join(timeout=30)
    views = _query(clickhouse, lock, db, "SELECT count(), min(occurred_at) FROM {db}.views WHERE video_id = {v:String}",
                   v=f"{run}-v")[0]
    assert views == (1, (now - timedelta(minutes=5)).replace(tzinfo=None))  # chDB returns naive UTC
    rollups = _query(clickhouse, lock, db, "SELECT (SELECT sum(views) FROM {db}.video_stats_1m WHERE video_id = {v:String}),"
                                           " (SELECT sum(views) FROM {db}.video_stats_1h WHERE video_id = {v:String})",
                     v=f"{run}-v")[0]
    assert rollups == (1, 1)


def test_ids_stored_under_the_batchs_own_token_do_not_count_as_seen(clickhouse: Client) -> None:
    # A batch retried after a failed insert must send the same blocks, so that insert
    # deduplication (by token) drops what the first attempt stored, in tables and rollups alike.
    db = f"test_{uuid.uuid4().hex[:12]}"
    migrate(clickhouse, db)
    event_id, at = uuid.uuid4(), datetime.now(UTC) - timedelta(minutes=5)
    clickhouse.insert(f"`{db}`.views", [[event_id, at, "test", "v", "u", "s"]],
                      column_names=["event_id", "occurred_at", "producer", "video_id", "user_id", "session_id"],
                      settings={"insert_deduplication_token": "views|t:0:0-0"})
    assert stored_event_ids(clickhouse, db, [event_id], ["views|t:0:0-0", "likes|t:0:0-0"]) == set()
    assert stored_event_ids(clickhouse, db, [event_id, uuid.uuid4()], ["views|t:0:1-1"]) == {event_id}
    assert stored_event_ids(clickhouse, db, [], ["views|t:0:1-1"]) == set()


@pytest.fixture(scope="module")
def retried(stack: Settings, sink: ClickHouseSink) -> Iterator[tuple[str, datetime]]:
    """A video whose events were each delivered twice: first now - 5 min, then retried with the
    same event_ids two hours earlier (another hour bucket, another sorting key), in later batches."""
    run = uuid.uuid4().hex[:10]
    video, at = f"{run}-v", datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    events = _events(video, at)
    _produce(stack, events)
    _wait_stored(sink.client, sink.lock, sink.database, video)
    _produce(stack, _retried(events, at - timedelta(hours=2)))
    _produce(stack, _events(f"{run}-marker", at))
    _wait_stored(sink.client, sink.lock, sink.database, f"{run}-marker")
    time.sleep(1.5)  # the marker's other tables: at most one more batch
    yield video, at


def test_a_retry_with_another_hour_is_stored_once(sink: ClickHouseSink, retried: tuple[str, datetime]) -> None:
    video, at = retried
    counts = _counts(sink.client, sink.lock, sink.database, video)
    assert counts == _once(counts)
    assert _query(sink.client, sink.lock, sink.database,
                  "SELECT min(occurred_at) FROM {db}.views WHERE video_id = {v:String}", v=video)[0][0] == at.replace(tzinfo=None)


def _documented(sink: ClickHouseSink, name: str, **parameters: Any) -> dict[str, dict[str, Any]]:
    with sink.lock:
        result = sink.client.query((QUERIES / f"{name}.sql").read_text().replace("{db}", sink.database),
                                   parameters=parameters)
    return {row[0]: dict(zip(result.column_names, row)) for row in result.result_rows}


def test_every_documented_query_counts_the_retry_once(sink: ClickHouseSink, retried: tuple[str, datetime]) -> None:
    video, at = retried
    period = {"since": (at - timedelta(hours=4)).strftime(FMT), "until": (at + timedelta(hours=1)).strftime(FMT)}
    trending = _documented(sink, "trending_now", minutes=240, limit=1_000_000)[video]
    assert (trending["views"], trending["unique_viewers"], trending["likes"], trending["net_likes"],
            trending["completed_sessions"], trending["watch_time_ms"]) == (1, 1, 1, 1, 0, 50_000)
    completion = _documented(sink, "completion_by_video", **period, limit=1_000_000)[video]
    assert (completion["sessions"], completion["watched_sessions"], completion["watch_time_ms"]) == (1, 1, 50_000)
    rewatch = _documented(sink, "rewatch_rate", **period, min_viewers=1, limit=1_000_000)[video]
    assert (rewatch["viewers"], rewatch["sessions"], rewatch["rewatchers"]) == (1, 1, 0)
    published = _documented(sink, "upload_to_published", **period, limit=1_000_000)[video]
    assert published["uploaded_at"] == at.replace(tzinfo=None), "the retry's earlier occurred_at was not stored"
    assert published["upload_to_published_s"] == 60
    heat = _documented(sink, "latest_heat_scores", window="1h", max_age_minutes=60, limit=1_000_000)[video]
    assert heat["window_end"] == at.replace(tzinfo=None)
