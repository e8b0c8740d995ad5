"""The heat worker's state survives a restart (RocksDB tables, changelogs in Kafka), a crash
between checkpoints (uncommitted events are replayed), and a crash between a checkpoint and the
next score (the video is still scored)."""

from __future__ import annotations

import os
import signal
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from common.process import free_port
from common.settings import Settings
from schemas.codec import encode
from schemas.topics import HEAT_TABLES, TOPIC_BY_SCHEMA
from tests.helpers import heat_worker_counts, running_service

pytestmark = pytest.mark.integration


def _view(video_id: str, user: str, at: datetime) -> dict[str, Any]:
    return {"event_id": uuid.uuid4(), "occurred_at": at, "producer": "test", "schema_version": 1,
            "video_id": video_id, "user_id": user, "session_id": f"{user}-s"}


def _send(settings: Settings, records: list[dict[str, Any]]) -> None:
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    for record in records:
        producer.produce(TOPIC_BY_SCHEMA["VideoView"].name, encode("VideoView", record), record["video_id"].encode())
    assert producer.flush(15) == 0


def _wait_for_viewers(sink: Any, video_id: str, viewers: int, timeout_s: float = 60) -> tuple[Any, ...]:
    deadline, row = time.monotonic() + timeout_s, ()
    while time.monotonic() < deadline:
        with sink.lock:
            rows = sink.client.query(
                f"SELECT views, unique_viewers FROM `{sink.database}`.heat_scores_latest FINAL "
                "WHERE `window` = '1h' AND video_id = {v:String}", parameters={"v": video_id}).result_rows
        if rows:
            row = rows[0]
            if row[1] == viewers:
                return row
        time.sleep(0.5)
    raise AssertionError(f"{video_id}: wanted {viewers} viewers, the latest heat row says {row}")


def _uncommitted(settings: Settings, group: str = "lustrax-heat") -> int:
    """Engagement events the heat worker's group has not committed yet."""
    topics = [TOPIC_BY_SCHEMA[schema] for schema in ("VideoView", "WatchTick", "VideoLike")]
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": group})
    try:
        committed = consumer.committed([TopicPartition(topic.name, p) for topic in topics
                                        for p in range(topic.partitions)], timeout=10)
        return sum(consumer.get_watermark_offsets(tp, timeout=10)[1] - max(tp.offset, 0) for tp in committed)
    finally:
        consumer.close()


def _wait_committed(settings: Settings) -> None:
    deadline = time.monotonic() + 30  # checkpointed, hence acked, hence committed
    while _uncommitted(settings) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _uncommitted(settings) == 0


def _checkpointed_viewers(settings: Settings, video_id: str, timeout_s: float = 60) -> int:
    """Viewers of `video_id` whose entry is on the heat table's changelog (written by a checkpoint)."""
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": f"probe-{uuid.uuid4().hex}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([f"lustrax-heat-{HEAT_TABLES[0]}-changelog"])
    # The viewers' keys (processors/heat_score/processor.py), JSON-encoded, without the closing quote.
    prefix = orjson.dumps(f"p\x00{video_id}\x00")[:-1]
    viewers: set[bytes] = set()
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and len(viewers) < 3:
            msg = consumer.poll(0.5)
            if msg is not None and not msg.error() and msg.key().startswith(prefix):
                viewers.add(msg.key())
    finally:
        consumer.close()
    return len(viewers)


def _events_taken(settings: Settings) -> float:
    counts = heat_worker_counts(settings)
    return counts["applied"] + counts["duplicate_or_late"] + counts["dead_letter"]


def test_state_survives_a_worker_restart(stack: Settings, sink: Any) -> None:
    settings = stack.model_copy(update={"heat_web_port": free_port(), "heat_emit_interval_s": 1.0,
                                        "heat_checkpoint_interval_s": 0.5})
    video_id, now = f"restart-{uuid.uuid4().hex[:8]}", datetime.now(UTC)
    with running_service(settings, "heat", settings.heat_web_port):
        _send(settings, [_view(video_id, f"u{i}", now - timedelta(seconds=30 - i)) for i in range(3)])
        assert _wait_for_viewers(sink, video_id, 3) == (3, 3)
        _wait_committed(settings)
    # A new process that replays nothing: what it knows of the first three viewers comes from its
    # table's changelog.
    with running_service(settings, "heat", settings.heat_web_port):
        _send(settings, [_view(video_id, "u3", now)])
        assert _wait_for_viewers(sink, video_id, 4) == (4, 4)
        assert _events_taken(settings) == 1
        _wait_committed(settings)  # leave nothing for the next test's worker to replay


def _kill(worker: Any) -> None:
    os.killpg(worker.process.pid, signal.SIGKILL)
    worker.process.popen.wait(timeout=10)


def test_a_crash_at_either_point_loses_nothing(stack: Settings, sink: Any) -> None:
    """Killed between a checkpoint and the next score, then between a score and the next
    checkpoint: three worker processes in a row, each started as the previous one was killed."""
    settings = stack.model_copy(update={"heat_web_port": free_port(), "heat_emit_interval_s": 300.0,
                                        "heat_checkpoint_interval_s": 0.5})
    unscored, unwritten, now = f"unscored-{uuid.uuid4().hex[:8]}", f"crash-{uuid.uuid4().hex[:8]}", datetime.now(UTC)
    with running_service(settings, "heat", settings.heat_web_port) as worker:
        _send(settings, [_view(unscored, f"u{i}", now - timedelta(seconds=30 - i)) for i in range(3)])
        assert _checkpointed_viewers(settings, unscored) == 3  # written; the score is minutes away
        assert _uncommitted(settings) >= 3  # so the events are not acknowledged yet
        _kill(worker)
    # The next worker takes the three views again: they change nothing, but the video is scored
    # (nothing is resent). It then scores from memory what it has not written yet.
    settings = settings.model_copy(update={"heat_emit_interval_s": 1.0, "heat_checkpoint_interval_s": 60.0})
    with running_service(settings, "heat", settings.heat_web_port) as worker:
        assert _wait_for_viewers(sink, unscored, 3, timeout_s=150) == (3, 3)
        assert heat_worker_counts(settings)["duplicate_or_late"] >= 3
        _send(settings, [_view(unwritten, f"u{i}", now - timedelta(seconds=30 - i)) for i in range(3)])
        assert _wait_for_viewers(sink, unwritten, 3) == (3, 3)  # scored from memory, not yet written
        assert _uncommitted(settings) >= 3  # the three views of the second video
        _kill(worker)
    # The three views of the second video were never committed: the third process takes them again,
    # then a fourth viewer.
    settings = settings.model_copy(update={"heat_checkpoint_interval_s": 0.5})
    with running_service(settings, "heat", settings.heat_web_port):
        _send(settings, [_view(unwritten, "u3", now)])
        assert _wait_for_viewers(sink, unwritten, 4, timeout_s=150) == (4, 4)
        assert _events_taken(settings) >= 4
        _wait_committed(settings)  # leave nothing for the next test's worker to replay


def _sessions(video_id: str, viewers: range, now: datetime) -> list[tuple[str, dict[str, Any]]]:
    """A view and two ticks per viewer; viewers with an even number watch to the end."""
    events: list[tuple[str, dict[str, Any]]] = []
    for i in viewers:
        view = _view(video_id, f"u{i}", now - timedelta(seconds=60 - i))
        events.append(("VideoView", view))
        for position in (30_000, 60_000 if i % 2 == 0 else 40_000):
            events.append(("WatchTick", {**view, "event_id": uuid.uuid4(), "position_ms": position,
                                         "duration_ms": 60_000}))
    return events


def _send_events(settings: Settings, events: list[tuple[str, dict[str, Any]]]) -> None:
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    for schema, record in events:
        producer.produce(TOPIC_BY_SCHEMA[schema].name, encode(schema, record), record["video_id"].encode())
    assert producer.flush(15) == 0


def test_two_workers_rebalance_mid_stream_lose_nothing_and_count_nothing_twice(stack: Settings, sink: Any) -> None:
    base = stack.model_copy(update={"heat_emit_interval_s": 1.0, "heat_checkpoint_interval_s": 1.0})
    first, second = (base.model_copy(update={"heat_web_port": free_port()}) for _ in range(2))
    run, now = uuid.uuid4().hex[:8], datetime.now(UTC)
    videos = [f"workers-{run}-{n}" for n in range(12)]  # over all six partitions
    with running_service(first, "heat", first.heat_web_port):
        _send_events(first, [e for video in videos for e in _sessions(video, range(0, 6), now)])
        # A second worker joins the group while the first has events in memory, unacknowledged.
        with running_service(second, "heat", second.heat_web_port):
            _send_events(first, [e for video in videos for e in _sessions(video, range(6, 10), now)])
            for video in videos:
                assert _wait_for_viewers(sink, video, 10, timeout_s=90) == (10, 10)
            with sink.lock:
                rows = sink.client.query(
                    f"SELECT video_id, completion_rate FROM `{sink.database}`.heat_scores_latest FINAL "
                    "WHERE `window` = '1h' AND video_id IN {v:Array(String)}", parameters={"v": videos}).result_rows
            assert sorted(rows) == sorted((video, 0.5) for video in videos)
            # Both took part: the second worker applied events too.
            assert heat_worker_counts(second)["applied"] > 0
            _wait_committed(first)
