"""Create the project's topics with explicit partitions and configuration (idempotent)."""

from __future__ import annotations

from collections.abc import Iterable

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, NewTopic

from infra.kafka.broker import QUIET_LOGGER
from common.errors import ComponentError
from schemas.topics import DEAD_LETTER_TOPIC, STATE_TOPICS, TOPICS, TopicSpec


def all_topics() -> list[TopicSpec]:
    return [*TOPICS, DEAD_LETTER_TOPIC, *STATE_TOPICS]


def ensure_topics(bootstrap: str, specs: Iterable[TopicSpec] | None = None, replication_factor: int = 1,
                  timeout_s: float = 30.0) -> list[str]:
    """Create missing topics and bring existing ones to the catalogue's configuration.

    Returns the names created. A topic that exists with a different partition count is an error:
    changing it would move keys to other partitions and break per-video ordering.
    """
    specs = list(all_topics() if specs is None else specs)
    admin = AdminClient({"bootstrap.servers": bootstrap}, logger=QUIET_LOGGER)
    existing = admin.list_topics(timeout=timeout_s).topics
    created: list[str] = []
    missing = [s for s in specs if s.name not in existing]
    if missing:
        futures = admin.create_topics(
            [NewTopic(s.name, num_partitions=s.partitions, replication_factor=replication_factor, config=s.config)
             for s in missing],
            operation_timeout=timeout_s, request_timeout=timeout_s,
        )
        for name, future in futures.items():
            try:
                future.result()
                created.append(name)
            except KafkaException as exc:
                if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":  # a concurrent creator won the race
                    raise ComponentError("kafka", f"cannot create topic {name}: {exc.args[0].str()}") from None
    for spec in specs:
        if spec.name in existing:
            partitions = len(existing[spec.name].partitions)
            if partitions != spec.partitions:
                raise ComponentError("kafka", f"topic {spec.name} has {partitions} partitions, the catalogue says "
                                              f"{spec.partitions}; migrate it deliberately")
            if spec.config:
                entries = [ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET) for k, v in spec.config.items()]
                resource = ConfigResource(ConfigResource.Type.TOPIC, spec.name, incremental_configs=entries)
                for future in admin.incremental_alter_configs([resource], request_timeout=timeout_s).values():
                    future.result()
    return created
