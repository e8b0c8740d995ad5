"""Kafka -> ClickHouse in batches: at least once, deduplicated, bounded.

A batch closes at LUSTRAX_SINK_BATCH_ROWS rows or LUSTRAX_SINK_BATCH_INTERVAL_S seconds, whichever
comes first. Offsets are committed only after every table of the batch was inserted, so a crash
re-reads and re-inserts. Two layers of dedup make that harmless: each insert carries an
`insert_deduplication_token` built from the topic/partition/offset ranges it holds (a retried batch
is dropped by ClickHouse), and events whose event_id is already stored are dropped before the
insert (processors/sink/dedup.py: a retried event counts once, whatever occurred_at it carries).

While ClickHouse refuses inserts, the sink keeps the batch, pauses its partitions (memory stays at
one batch), keeps polling so the group does not drop it, and retries with backoff up to 30 s.
Messages that cannot be decoded or mapped are parked on the dead-letter topic (acknowledged by the
broker before their offsets are committed); the sink also reads that topic, and every consumer's
dead letters land in the `dead_letters` table (schemas/dead_letters.py).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from clickhouse_connect.driver.client import Client
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from infra.kafka.fetching import FETCH_MAX_WAIT_MS, FETCH_MIN_BYTES
from infra.kafka.producer import OutgoingMessage, produce_acknowledged
from processors.sink.dedup import batch_event_ids, drop_seen, stored_event_ids
from processors.sink.rows import MAPPING_BY_TABLE, TABLE_OF_SCHEMA
from schemas.codec import decode
from schemas.dead_letters import DeadLetter, from_message
from schemas.errors import SchemaError
from schemas.topics import DEAD_LETTER_TOPIC, TOPIC_BY_SCHEMA

log = logging.getLogger(__name__)
GROUP_ID = "lustrax-clickhouse-sink"
CONSUMER = "clickhouse-sink"
DEAD_LETTER_COLUMNS = ("consumer", "topic", "partition", "offset", "key", "payload", "reason")
MAX_BACKOFF_S = 30.0
# Commit errors that pass once the coordinator is back (librdkafka does not mark all of them retriable).
COMMIT_RETRIED = frozenset({KafkaError.COORDINATOR_LOAD_IN_PROGRESS, KafkaError.COORDINATOR_NOT_AVAILABLE,
                            KafkaError.NOT_COORDINATOR, KafkaError.REQUEST_TIMED_OUT, KafkaError.NETWORK_EXCEPTION,
                            KafkaError._TRANSPORT, KafkaError._TIMED_OUT, KafkaError._WAIT_COORD})


@dataclass
class Batch:
    rows: dict[str, list[list[Any]]] = field(default_factory=lambda: defaultdict(list))
    dead: list[list[Any]] = field(default_factory=list)  # rows of dead letters read from the topic
    parked: list[DeadLetter] = field(default_factory=list)  # messages this sink could not store
    ranges: dict[tuple[str, int], tuple[int, int]] = field(default_factory=dict)
    size: int = 0
    started: float = 0.0

    def track(self, msg: Message) -> None:
        key = (msg.topic(), msg.partition())
        low, _ = self.ranges.get(key, (msg.offset(), msg.offset()))
        self.ranges[key] = (low, msg.offset())
        if self.size == 0:
            self.started = time.monotonic()
        self.size += 1

    def token(self, table: str) -> str:
        """Same messages, same token: ClickHouse drops a repeated insert of this batch."""
        spans = ";".join(f"{t}:{p}:{lo}-{hi}" for (t, p), (lo, hi) in sorted(self.ranges.items()))
        return f"{table}|{spans}"

    def commit_offsets(self) -> list[TopicPartition]:
        return [TopicPartition(t, p, hi + 1) for (t, p), (_, hi) in self.ranges.items()]


def _is_fatal(error: KafkaError) -> bool:
    # librdkafka reports a fenced static member as a plain commit error, then as _FATAL on consume.
    return bool(error.fatal()) or error.code() in (KafkaError._FATAL, KafkaError.FENCED_INSTANCE_ID)


def sink_topics() -> list[str]:
    return [TOPIC_BY_SCHEMA[schema].name for schema in TABLE_OF_SCHEMA] + [DEAD_LETTER_TOPIC.name]


def dead_letter_row(letter: DeadLetter) -> list[Any]:
    return [letter.consumer, letter.topic, letter.partition, letter.offset, letter.key.decode("utf-8", "replace"),
            letter.value.hex(), letter.reason]


class ClickHouseSink:
    def __init__(self, client: Client, database: str, bootstrap: str, batch_rows: int = 10_000,
                 batch_interval_s: float = 1.0, lock: threading.Lock | None = None,
                 group_id: str = GROUP_ID) -> None:
        self.client = client
        self.database = database
        self.batch_rows = batch_rows
        self.batch_interval_s = batch_interval_s
        self.bootstrap = bootstrap
        self.lock = lock or threading.Lock()  # the query server shares the embedded engine
        self.consumer = Consumer({
            "bootstrap.servers": bootstrap, "group.id": group_id, "enable.auto.commit": False,
            "auto.offset.reset": "earliest", "max.poll.interval.ms": 600_000,
            "partition.assignment.strategy": "cooperative-sticky",
            # Rows wait for the batch interval anyway (infra/kafka/fetching.py).
            "fetch.min.bytes": FETCH_MIN_BYTES, "fetch.wait.max.ms": FETCH_MAX_WAIT_MS,
            # Static membership: a restarted sink (same host) takes its partitions back at once
            # instead of waiting out the session of the member it replaces.
            "group.instance.id": f"{group_id}-{socket.gethostname()}",
        }, logger=log)
        self.batch = Batch()
        self.stopping = threading.Event()
        self.insert_error: str | None = None  # the last insert failure until one succeeds (/healthz)

    def run(self) -> None:
        self.consumer.subscribe(sink_topics(), on_revoke=self._on_revoke)
        try:
            while not self.stopping.is_set():
                room = max(1, self.batch_rows - self.batch.size)
                for msg in self.consumer.consume(num_messages=min(room, 5000), timeout=0.2):
                    self._add(msg)
                if self.batch.size and (self.batch.size >= self.batch_rows
                                        or time.monotonic() - self.batch.started >= self.batch_interval_s):
                    self.flush()
            if self.batch.size:
                self.flush()
        finally:
            self.consumer.close()

    def stop(self) -> None:
        self.stopping.set()

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Hand the partitions over with what we read from them stored; the next owner starts after.
        if self.batch.size:
            self.flush()

    def _add(self, msg: Message) -> None:
        if msg.error():
            if _is_fatal(msg.error()):  # e.g. fenced after a lost session: this consumer can do nothing more
                raise KafkaException(msg.error())  # exit: the supervisor starts a fresh one
            if msg.error().code() != KafkaError._PARTITION_EOF:
                log.warning("consumer error: %s", msg.error())
            return
        self.batch.track(msg)
        if msg.topic() == DEAD_LETTER_TOPIC.name:
            self.batch.dead.append(dead_letter_row(
                from_message(msg.headers(), msg.key(), msg.value(), (msg.partition(), msg.offset()))))
            return
        try:
            schema, record = decode(msg.value())
            mapping = TABLE_OF_SCHEMA.get(schema)
            if mapping is None:
                raise SchemaError(f"no table for {schema}")
            self.batch.rows[mapping.table].append(mapping.row(record))
        except (SchemaError, KeyError, TypeError) as exc:
            self.batch.parked.append(DeadLetter(CONSUMER, f"{type(exc).__name__}: {exc}", msg.topic(),
                                                msg.partition(), msg.offset(), msg.key() or b"", msg.value() or b""))

    def flush(self) -> None:
        """Park what could not be stored, insert the batch (retrying until ClickHouse takes it), then
        commit its offsets."""
        delay, paused = 0.5, False
        while True:
            try:
                self._park()
                self._insert_all()
                self.insert_error = None
                break
            except Exception as exc:  # noqa: BLE001 - any ClickHouse failure: keep the batch, back off
                self.insert_error = str(exc) or repr(exc)
                if self.stopping.is_set() and delay >= MAX_BACKOFF_S:
                    raise
                log.warning("ClickHouse insert failed (%s); retrying in %.1f s", exc, delay)
                if not paused:
                    self.consumer.pause(self.consumer.assignment())
                    paused = True
                deadline = time.monotonic() + delay
                while time.monotonic() < deadline:
                    self.consumer.poll(0.1)  # keeps the group membership; partitions are paused
                delay = min(MAX_BACKOFF_S, delay * 2)
        self._commit(self.batch.commit_offsets())
        if paused:
            self.consumer.resume(self.consumer.assignment())
        self.batch = Batch()

    def _commit(self, offsets: list[TopicPartition]) -> None:
        """Commit after the insert. A retriable failure (the group coordinator moving or loading, as
        after a broker restart) is retried with backoff; a fatal one (this static member fenced) ends
        the process, for the supervisor to start a fresh consumer; any other (the partitions went to
        another member) leaves them uncommitted: whoever reads them next stores them again, and the
        dedup drops what is already stored."""
        delay = 0.2
        while True:
            try:
                self.consumer.commit(offsets=offsets, asynchronous=False)
                return
            except KafkaException as exc:
                error = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
                if error is not None and _is_fatal(error):
                    raise
                if error is None or not (error.retriable() or error.code() in COMMIT_RETRIED) \
                        or self.stopping.is_set():
                    log.warning("offset commit failed (%s); the batch will be read again", exc)
                    return
                log.warning("offset commit failed (%s); retrying in %.1f s", exc, delay)
                time.sleep(delay)  # no poll: it would hand over messages past the batch (heartbeats go on)
                delay = min(MAX_BACKOFF_S, delay * 2)

    def _park(self) -> None:
        if self.batch.parked:
            produce_acknowledged(self.bootstrap, [
                OutgoingMessage(DEAD_LETTER_TOPIC.name, letter.key, letter.value, letter.headers())
                for letter in self.batch.parked])
            self.batch.parked.clear()

    def _insert_all(self) -> None:
        with self.lock:
            # Drop events already stored (a retry with the same event_id): exact counts everywhere.
            own_tokens = [self.batch.token(table) for table in self.batch.rows]
            seen = stored_event_ids(self.client, self.database, batch_event_ids(self.batch.rows), own_tokens)
            for table, rows in drop_seen(self.batch.rows, seen).items():
                if rows:
                    columns = list(MAPPING_BY_TABLE[table].columns)
                    self.client.insert(f"`{self.database}`.`{table}`", rows, column_names=columns,
                                       settings={"insert_deduplication_token": self.batch.token(table)})
            if self.batch.dead:
                self.client.insert(f"`{self.database}`.dead_letters", self.batch.dead,
                                   column_names=list(DEAD_LETTER_COLUMNS),
                                   settings={"insert_deduplication_token": self.batch.token("dead_letters")})
