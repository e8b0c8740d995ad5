"""One dead-letter path: a poison message on each input topic is parked, listed, replayed, and the
stream behind it flows on (real broker, real ClickHouse engine, the sink as in production)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from confluent_kafka import Producer

from common.errors import LustraxError
from common.settings import Settings
from lustrax.dead_letters import list_dead_letters, replay
from processors.sink.query_server import start_query_server
from processors.sink.rows import TABLE_OF_SCHEMA
from processors.sink.service import sink_health
from schemas.codec import encode
from schemas.dead_letters import REPLAY_HEADER
from schemas.topics import TOPIC_BY_SCHEMA
from tests.helpers import wait_until
from tests.unit.test_avro_codec import SAMPLES

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def analyst_path(stack: Settings, clickhouse: Any, sink: Any) -> Iterator[Settings]:
    """`lustrax sql`'s route while a stack runs: the sink process's loopback query endpoint."""
    server = start_query_server("127.0.0.1", stack.sink_query_port, stack, lambda: sink_health(sink))
    yield stack
    server.shutdown()


_wait = wait_until


def _parked(settings: Settings, key: str) -> list[list[Any]]:
    _, rows = list_dead_letters(settings, consumer="clickhouse-sink")
    return [row for row in rows if row[4] == key]


# One schema per table: the trust-and-safety records share one table and one row path (their rows:
# tests/unit/test_takedown_machine.py).
ONE_SCHEMA_PER_TABLE = sorted({mapping.table: schema for schema, mapping in sorted(TABLE_OF_SCHEMA.items())}.values())


@pytest.mark.parametrize("schema", ONE_SCHEMA_PER_TABLE)
def test_a_poison_message_is_parked_listed_replayed_and_the_stream_flows_on(
        analyst_path: Settings, clickhouse: Any, schema: str) -> None:
    topic = TOPIC_BY_SCHEMA[schema].name
    key = f"poison-{uuid.uuid4().hex[:12]}"
    good = {**SAMPLES[schema], "event_id": uuid.uuid4(), "occurred_at": datetime.now(UTC), "video_id": key}
    producer = Producer({"bootstrap.servers": analyst_path.kafka_bootstrap})
    producer.produce(topic, b"\xc3\x01 not an event", key.encode())  # same key: same partition, poison first
    producer.produce(topic, encode(schema, good), key.encode())
    assert producer.flush(10) == 0

    [row] = _wait("the poison message listed", lambda: _parked(analyst_path, key))
    dead_id, _, consumer, reason, _, size = row
    assert dead_id.startswith(f"{topic}:") and consumer == "clickhouse-sink" and size == 15
    assert "Error" in reason
    table = TABLE_OF_SCHEMA[schema].table
    stored = clickhouse.query(f"SELECT count() FROM {analyst_path.clickhouse_database}.`{table}` "
                              "WHERE event_id = {e:UUID}", parameters={"e": good["event_id"]}).result_rows[0][0]
    assert stored == 1  # the good event behind the poison was stored

    assert replay(analyst_path, dead_letter=dead_id) == [dead_id]
    assert _replayed(analyst_path, topic, dead_id)  # back on its source topic, naming where it came from
    # Still poison: parked again from its new position, listed beside the first.
    again = _wait("the replayed message parked again", lambda: [r for r in _parked(analyst_path, key)
                                                               if r[0] != dead_id])
    assert len(again) == 1


def _replayed(settings: Settings, topic: str, dead_id: str) -> bool:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": f"t-{uuid.uuid4().hex}"})
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and not msg.error() and dict(msg.headers() or []).get(REPLAY_HEADER) == dead_id.encode():
                return True
    finally:
        consumer.close()
    return False


@pytest.mark.parametrize("bad", ["nope", "lustrax.video.uploaded:1", "other.topic:0:1",
                                 "lustrax.video.uploaded:x:1", "../etc:0:0"])
def test_replay_refuses_ids_that_name_no_project_topic_position(analyst_path: Settings, bad: str) -> None:
    with pytest.raises(LustraxError):
        replay(analyst_path, dead_letter=bad)


def test_replay_of_an_unknown_dead_letter_is_a_clear_error(analyst_path: Settings) -> None:
    with pytest.raises(LustraxError, match="no dead letter"):
        replay(analyst_path, dead_letter=f"{TOPIC_BY_SCHEMA['VideoView'].name}:0:999999999")


def test_a_message_two_consumers_parked_is_one_dead_letter_replayed_once(analyst_path: Settings) -> None:
    """The heat worker (Faust) and the sink both read the views topic: each parks the poison, both are
    listed under the one source position, and a replay puts it back once."""
    from tests.helpers import running_service, stable_port

    settings = analyst_path.model_copy(update={"heat_web_port": stable_port("heat-1")})
    topic, key = TOPIC_BY_SCHEMA["VideoView"].name, f"poison-{uuid.uuid4().hex[:12]}"
    with running_service(settings, "heat", settings.heat_web_port):
        producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
        producer.produce(topic, b"\xc3\x01 poison for two", key.encode())
        assert producer.flush(10) == 0

        def both() -> list[list[Any]]:
            _, rows = list_dead_letters(settings)
            mine = [row for row in rows if row[4] == key]
            return mine if {row[2] for row in mine} == {"heat", "clickhouse-sink"} else []

        rows = _wait("both consumers' dead letters listed", both, timeout_s=60)
        assert len({row[0] for row in rows}) == 1
        _, heat_only = list_dead_letters(settings, consumer="heat")
        assert [row[0] for row in heat_only if row[4] == key] == [rows[0][0]]
        assert replay(settings, consumer="heat").count(rows[0][0]) == 1
