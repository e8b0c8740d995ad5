"""The real broker: topics as catalogued, produce and consume, no auto-creation."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource

from infra.kafka.topics import all_topics, ensure_topics
from common.settings import Settings

pytestmark = pytest.mark.integration


def _producer(settings: Settings) -> Producer:
    return Producer({"bootstrap.servers": settings.kafka_bootstrap, "enable.idempotence": True, "acks": "all"})


def test_every_catalogued_topic_exists_with_its_partitions_and_retention(stack: Settings) -> None:
    admin = AdminClient({"bootstrap.servers": stack.kafka_bootstrap})
    topics = admin.list_topics(timeout=10).topics
    for spec in all_topics():
        assert spec.name in topics, spec.name
        assert len(topics[spec.name].partitions) == spec.partitions, spec.name
    resources = [ConfigResource(ConfigResource.Type.TOPIC, spec.name) for spec in all_topics()]
    for resource, future in admin.describe_configs(resources).items():
        configs = future.result()
        spec = next(s for s in all_topics() if s.name == resource.name)
        for key, value in spec.config.items():
            assert configs[key].value == value, (spec.name, key)


def test_ensure_topics_is_idempotent(stack: Settings) -> None:
    assert ensure_topics(stack.kafka_bootstrap) == []


def test_produce_and_consume_through_the_broker_keeps_per_key_order(stack: Settings) -> None:
    topic = "lustrax.engagement.views"
    run = uuid.uuid4().hex
    producer = _producer(stack)
    acked: list[tuple[int, int]] = []

    def on_delivery(err: KafkaError | None, msg) -> None:  # type: ignore[no-untyped-def]
        assert err is None, err
        acked.append((msg.partition(), msg.offset()))

    for i in range(50):
        producer.produce(topic, key=f"video-{run}".encode(), value=f"{run}:{i}".encode(), on_delivery=on_delivery)
    assert producer.flush(15) == 0
    assert len(acked) == 50
    assert len({partition for partition, _ in acked}) == 1  # one key, one partition

    # Read the key's partition from the first acknowledged offset: the topic holds other tests' events.
    [partition] = {partition for partition, _ in acked}
    consumer = Consumer({"bootstrap.servers": stack.kafka_bootstrap, "group.id": f"smoke-{run}",
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, partition, min(offset for _, offset in acked))])
    seen: list[str] = []
    try:
        for _ in range(200):
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            if msg.key() == f"video-{run}".encode():
                seen.append(msg.value().decode())
            if len(seen) == 50:
                break
    finally:
        consumer.close()
    assert seen == [f"{run}:{i}" for i in range(50)]


def test_unknown_topics_are_not_auto_created(stack: Settings) -> None:
    producer = Producer({"bootstrap.servers": stack.kafka_bootstrap, "message.timeout.ms": 3000})
    errors: list[KafkaError] = []
    try:
        producer.produce(f"not-in-catalogue-{uuid.uuid4().hex}", value=b"x",
                         on_delivery=lambda err, msg: errors.append(err))
    except KafkaException as exc:  # librdkafka may refuse at once when metadata is known
        errors.append(exc.args[0])
    producer.flush(10)
    assert errors and errors[0] is not None
    admin = AdminClient({"bootstrap.servers": stack.kafka_bootstrap})
    assert not [t for t in admin.list_topics(timeout=10).topics if t.startswith("not-in-catalogue-")]
