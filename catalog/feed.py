"""The catalog's feed: a consumer thread that replays the lifecycle topics into a CatalogProjection
(or other topics into another read model: the trust-and-safety case book, catalog/cases.py).

A read model, not a group member: it assigns every partition of every lifecycle topic from the
beginning (no group, no commits), so each API replica holds the whole catalog, a restart rebuilds
it from scratch, and replicas never share or rebalance work. It is caught up once it has read up
to the end offsets the partitions had when it started (what `/readyz` reports).

An event that cannot be decoded is logged and skipped here: every replica reads it, so parking it
on the dead-letter topic from here would park it once per replica (the processors that own the
topics park it once).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from catalog.cases import TRUST_SCHEMAS
from catalog.fold import LIFECYCLE_SCHEMAS
from schemas.codec import decode
from schemas.errors import SchemaError
from schemas.topics import TOPIC_BY_SCHEMA

log = logging.getLogger(__name__)
LIFECYCLE_TOPICS: dict[str, str] = {TOPIC_BY_SCHEMA[schema].name: schema for schema in LIFECYCLE_SCHEMAS}
TRUST_TOPICS: dict[str, str] = {TOPIC_BY_SCHEMA[schema].name: schema for schema in TRUST_SCHEMAS}
_BATCH = 2000
_RETRY_S = 1.0


class ReadModel(Protocol):
    def __len__(self) -> int: ...

    def apply_all(self, events: Iterable[tuple[str, Mapping[str, Any]]]) -> None: ...


class CatalogFeed:
    def __init__(self, bootstrap: str, projection: ReadModel, topics: Mapping[str, str] = LIFECYCLE_TOPICS,
                 name: str = "catalog") -> None:
        self.bootstrap = bootstrap
        self.projection = projection
        self.topics = dict(topics)
        self.name = name
        self.stopping = threading.Event()
        self.caught_up = threading.Event()
        self.skipped = 0  # undecodable messages
        self._thread: threading.Thread | None = None
        self._behind: dict[tuple[str, int], int] = {}  # partition -> end offset at start, until reached

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"{self.name}-feed", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self.stopping.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def wait_caught_up(self, timeout_s: float) -> bool:
        return self.caught_up.wait(timeout_s)

    def _run(self) -> None:
        while not self.stopping.is_set():
            # librdkafka wants a group.id; without subscribe() or commits no group is ever joined.
            consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": "lustrax-catalog",
                                 "enable.auto.commit": False, "enable.auto.offset.store": False,
                                 "socket.connection.setup.timeout.ms": 3000}, logger=log)
            try:
                self._assign(consumer)
                while not self.stopping.is_set():
                    messages = consumer.consume(num_messages=_BATCH, timeout=0.2)
                    self._take(messages)
                    if not messages and self._behind:
                        self._passed(consumer)
            except KafkaException as exc:  # the broker or a topic not there yet: the next attempt rebuilds
                log.warning("%s feed: %s; retrying in %.0f s", self.name, exc, _RETRY_S)
                self.stopping.wait(_RETRY_S)
            except Exception:  # noqa: BLE001 - a bug must not leave the replica without a catalog for good
                log.exception("%s feed failed; starting again in %.0f s", self.name, _RETRY_S)
                self.stopping.wait(_RETRY_S)
            finally:
                consumer.close()

    def _assign(self, consumer: Consumer) -> None:
        partitions = []
        metadata = consumer.list_topics(timeout=5)
        for topic in self.topics:
            found = metadata.topics.get(topic)
            if found is None or found.error is not None:
                raise KafkaException(KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART, f"topic {topic} does not exist"))
            for partition in found.partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=5)
                if high > low and not self.caught_up.is_set():
                    self._behind[(topic, partition)] = high
                partitions.append(TopicPartition(topic, partition, OFFSET_BEGINNING))
        # A reconnect replays from the beginning too: the fold makes that harmless.
        consumer.assign(partitions)
        self._check_caught_up()

    def _take(self, messages: list[Any]) -> None:
        events: list[tuple[str, Mapping[str, Any]]] = []
        for message in messages:
            if message.error():
                if message.error().code() != KafkaError._PARTITION_EOF:
                    log.warning("catalog feed: %s", message.error())
                continue
            topic, schema = message.topic(), self.topics[message.topic()]
            try:
                events.append(decode(message.value(), schema))
            except SchemaError as exc:
                self.skipped += 1
                log.warning("catalog feed: skipped undecodable %s at %s:%d:%d: %s", schema, topic,
                            message.partition(), message.offset(), exc)
            where = (topic, message.partition())
            if where in self._behind and message.offset() + 1 >= self._behind[where]:
                del self._behind[where]
        self.projection.apply_all(events)
        self._check_caught_up()

    def _passed(self, consumer: Consumer) -> None:
        """Idle: the positions tell too (the last offsets before the end may hold no record)."""
        for position in consumer.position([TopicPartition(t, p) for t, p in self._behind]):
            if position.offset >= self._behind[(position.topic, position.partition)]:
                del self._behind[(position.topic, position.partition)]
        self._check_caught_up()

    def _check_caught_up(self) -> None:
        if not self._behind and not self.caught_up.is_set():
            self.caught_up.set()
            log.info("%s caught up: %d entries", self.name, len(self.projection))

