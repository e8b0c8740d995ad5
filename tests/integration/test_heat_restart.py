"""The heat worker's state survives a restart (RocksDB tables, changelogs in Kafka)."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from confluent_kafka import Producer

from lustrax.process import free_port
from lustrax.settings import Settings
from schemas.codec import encode
from schemas.topics import TOPIC_BY_SCHEMA
from tests.helpers import running_service

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


def test_state_survives_a_worker_restart(stack: Settings, sink: Any) -> None:
    settings = stack.model_copy(update={"heat_web_port": free_port(), "heat_emit_interval_s": 1.0})
    video_id, now = f"restart-{uuid.uuid4().hex[:8]}", datetime.now(UTC)
    with running_service(settings, "heat", settings.heat_web_port):
        _send(settings, [_view(video_id, f"u{i}", now - timedelta(seconds=30 - i)) for i in range(3)])
        assert _wait_for_viewers(sink, video_id, 3) == (3, 3)
    # A new process: what it knows of the first three viewers comes from its table's changelog.
    with running_service(settings, "heat", settings.heat_web_port):
        _send(settings, [_view(video_id, "u3", now)])
        assert _wait_for_viewers(sink, video_id, 4) == (4, 4)
