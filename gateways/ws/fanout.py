"""The gateway's Kafka side: every partition of the topics it shows, read-only, merged in order.

No consumer group is shared and nothing is committed: each gateway instance assigns itself every
partition, so every instance sees every event and the gateway scales by adding instances. On
start each topic is read from `history_age_s` ago (the uploads topic from its beginning: it
builds the map video_id -> uploader), which rebuilds the recovery history after a restart.
Undecodable messages are counted and skipped: the gateway is a view and dead-letters nothing.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from gateways.ws.protocol import Merger, Positioned
from schemas.codec import decode
from schemas.errors import SchemaError
from schemas.topics import TOPIC_BY_SCHEMA, TopicSpec

log = logging.getLogger(__name__)

# What the gateway shows, by record; VideoUploaded only feeds the uploader map. Schemas without a
# topic yet (takedowns) are picked up once the catalogue has them.
GATEWAY_SCHEMAS = ("VideoUploaded", "VideoPublished", "LikeUpdate", "TranscodeProgress", "VideoTranscoded",
                   "TranscodeFailed", "ModerationDecided", "VideoTakenDown")
FULL_REPLAY_SCHEMAS = frozenset({"VideoUploaded"})
# Bumped when the seq derivation changes: clients holding older seqs then get a reset.
SEQ_SCHEME = "s1"


def gateway_topics() -> list[TopicSpec]:
    return [TOPIC_BY_SCHEMA[schema] for schema in GATEWAY_SCHEMAS if schema in TOPIC_BY_SCHEMA]


@dataclass
class FanoutStats:
    decoded: int = 0
    undecodable: int = 0
    lag: int = 0


class Fanout:
    """Runs in its own thread; hands batches of merged events to `deliver` (called in that thread:
    the server forwards them to its event loop)."""

    def __init__(self, bootstrap: str, history_age_s: float, deliver: Callable[[list[Positioned]], None],
                 topics: Sequence[TopicSpec] | None = None, max_hold_s: float = 0.2) -> None:
        self.topics = list(topics) if topics is not None else gateway_topics()
        self.history_age_s = history_age_s
        self.deliver = deliver
        self.stats = FanoutStats()
        self.caught_up = threading.Event()  # the replay reached the end of every partition
        self._stop = threading.Event()
        self._consumer = Consumer({
            "bootstrap.servers": bootstrap,
            # Required by the client even with manual assignment; never joined, never committed.
            "group.id": f"lustrax-ws-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            # Idle fetches return this often with fresh high watermarks (the merge relies on them).
            "fetch.wait.max.ms": 10,
            "socket.connection.setup.timeout.ms": 3000,
        }, logger=log)
        self.sources: list[TopicPartition] = []
        self.next_offset: list[int] = []
        self.high: list[int] = []
        self.epoch = ""
        self.started_ms = 0
        self._merger: Merger | None = None
        self._max_hold_s = max_hold_s

    def assign(self, timeout_s: float = 15.0) -> None:
        """Look up the partitions, pick the start offsets, assign them all (blocking)."""
        metadata = self._consumer.list_topics(timeout=timeout_s)
        missing = [spec.name for spec in self.topics if spec.name not in metadata.topics]
        if missing:
            raise KafkaException(f"topics missing (run `lustrax provision`): {', '.join(missing)}")
        # One epoch per Kafka cluster: the same on every instance, new if the cluster (and with it
        # the history a resume point refers to) is replaced.
        self.epoch = f"{SEQ_SCHEME}-{(metadata.cluster_id or 'local')[:12]}"
        self.started_ms = int((time.time() - self.history_age_s) * 1000)
        sources: list[TopicPartition] = []
        for spec in sorted(self.topics, key=lambda s: s.name):
            for partition in sorted(metadata.topics[spec.name].partitions):
                start = OFFSET_BEGINNING if spec.schema in FULL_REPLAY_SCHEMAS else self.started_ms
                sources.append(TopicPartition(spec.name, partition, start))
        timed = [tp for tp in sources if tp.offset != OFFSET_BEGINNING]
        by_time = {(tp.topic, tp.partition): tp.offset
                   for tp in self._consumer.offsets_for_times(timed, timeout=timeout_s)}
        self.sources, self.next_offset, self.high = [], [], []
        for tp in sources:
            low, high = self._consumer.get_watermark_offsets(tp, timeout=timeout_s)
            start = by_time.get((tp.topic, tp.partition), low)
            start = high if start < 0 else max(start, low)  # -1: nothing that recent
            self.sources.append(TopicPartition(tp.topic, tp.partition, start))
            self.next_offset.append(start)
            self.high.append(high)
        self._index = {(tp.topic, tp.partition): i for i, tp in enumerate(self.sources)}
        self._merger = Merger(len(self.sources), self._max_hold_s)
        self._consumer.assign(self.sources)

    def _is_caught_up(self, source: int) -> bool:
        return self.next_offset[source] >= self.high[source]

    def _refresh_watermarks(self) -> None:
        for i, tp in enumerate(self.sources):
            _, high = self._consumer.get_watermark_offsets(tp, cached=True)
            if high >= 0:
                self.high[i] = high
        self.stats.lag = sum(max(0, h - n) for h, n in zip(self.high, self.next_offset))

    def run(self) -> None:
        assert self._merger is not None, "assign() first"
        merger = self._merger
        while not self._stop.is_set():
            # Wait for one message, then take what else is there without waiting: consume(n, t)
            # alone would hold a batch up to t to fill it.
            first = self._consumer.poll(0.01 if merger.pending() else 0.05)
            messages = [] if first is None else [first, *self._consumer.consume(999, 0)]
            now = time.monotonic()
            for msg in messages:
                if msg.error():
                    log.warning("kafka: %s", msg.error())
                    continue
                source = self._index[(msg.topic(), msg.partition())]
                self.next_offset[source] = msg.offset() + 1
                if msg.value() is None:  # a compaction tombstone: nothing to show
                    continue
                try:
                    schema, record = decode(msg.value())
                except SchemaError as exc:
                    self.stats.undecodable += 1
                    log.warning("skipped undecodable message %s:%s:%s: %s", msg.topic(), msg.partition(),
                                msg.offset(), exc)
                    continue
                self.stats.decoded += 1
                merger.push(Positioned(msg.timestamp()[1], source, msg.offset(), (schema, record), now))
            self._refresh_watermarks()
            ready = merger.pop_ready(self._is_caught_up, time.monotonic())
            if ready:
                self.deliver(ready)
            if not self.caught_up.is_set() and merger.pending() == 0 and all(
                    self._is_caught_up(i) for i in range(len(self.sources))):
                self.caught_up.set()

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        self._consumer.close()
