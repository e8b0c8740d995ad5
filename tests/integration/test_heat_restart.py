"""The heat worker's state survives a restart (RocksDB tables, changelogs in Kafka) and a crash
between checkpoints (uncommitted events are replayed)."""

from __future__ import annotations

import os
import signal
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from common.process import free_port
from common.settings import Settings
from schemas.codec import encode
from schemas.topics import TOPIC_BY_SCHEMA
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


def test_a_crash_between_checkpoints_loses_nothing(stack: Settings, sink: Any) -> None:
    settings = stack.model_copy(update={"heat_web_port": free_port(), "heat_emit_interval_s": 1.0,
                                        "heat_checkpoint_interval_s": 60.0})
    video_id, now = f"crash-{uuid.uuid4().hex[:8]}", datetime.now(UTC)
    with running_service(settings, "heat", settings.heat_web_port) as worker:
        _send(settings, [_view(video_id, f"u{i}", now - timedelta(seconds=30 - i)) for i in range(3)])
        assert _wait_for_viewers(sink, video_id, 3) == (3, 3)  # scored from memory, not yet written
        assert _uncommitted(settings) >= 3
        os.killpg(worker.process.pid, signal.SIGKILL)
        worker.process.popen.wait(timeout=10)
    # The three views were never committed: the new process takes them again, then the fourth. It
    # joins once the group has given up on the killed member (the session timeout, up to 60 s).
    settings = settings.model_copy(update={"heat_checkpoint_interval_s": 0.5})
    with running_service(settings, "heat", settings.heat_web_port):
        _send(settings, [_view(video_id, "u3", now)])
        assert _wait_for_viewers(sink, video_id, 4, timeout_s=150) == (4, 4)
        assert _events_taken(settings) >= 4
        _wait_committed(settings)  # leave nothing for the next test's worker to replay
