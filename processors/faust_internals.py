"""Everything the project relies on inside Faust, in one place; tests/unit/test_faust_internals.py
fails if a Faust upgrade changes any of it (faust-streaming's range is pinned in pyproject.toml).

1. Batched table writes. A Faust table write (`table[key] = value`) serializes twice and goes
   through the producer buffer one message at a time, which drains sequentially and stalls the
   streams when more than 100 wait: a heat checkpoint writes tens of thousands of small entries,
   and that path made it the bottleneck (about 3 ms per entry on the loaded reference machine).
   `write_table(table, partition, items)` writes what `table[key] = value` would, to the same two
   places, in bulk: one RocksDB write batch into the table's store for that partition, and the
   changelog records as aiokafka batches (`create_batch`/`send_batch`) to that partition of the
   table's changelog topic; it returns once the broker has them, and records the changelog offset
   as the store's persisted offset (what recovery starts from), as Faust's own write callback does.
   `read_table(table, key)` reads the stored bytes back, undecoded (the caller decodes faster).

2. A cheaper hand-off from the fetch loop to the streams. Faust's fetch loop hands every message to the streams with
`wait_first(deliver(message), suspend_flow.wait())`: the delivery races a rebalance, so that a
delivery blocked on a full stream buffer is abandoned when the partitions are about to move. That
race costs four tasks and one event-loop turn per message; on the 2-core reference machine it
halves what a Faust agent can consume (bench/heat measured 5.5k against 11.9k messages/s for an
agent that only counts). Nearly every delivery completes without waiting, so the consumer here
runs the delivery directly up to its first suspension, and only a delivery that has to wait goes
into Faust's race. Behaviour is otherwise Faust's own.

3. Stream partitions held back until the streams' queues are cleared. After every assignment
(the first one too) Faust's recovery resumes the stream partitions, then awaits the seek to the
committed offsets, and only then resumes its flow control, which empties every stream's queue
(`clear_on_resume`). Whatever the fetcher handed to the streams during that await was dropped
there, though the positions had moved past it: with a backlog, or events arriving while a worker
joins, those records were never processed or acknowledged, and the commits stopped at the first
of them (the heat tests' stalls: a partition of a new worker consumed to its end, nothing of it
processed). The consumer here keeps stream partitions that Faust resumes while rebalancing paused
until the flow resumes (`resume_flow`, right after the queues are cleared): they are read from
the sought positions only. Two more ways records were consumed and never handed over close with
it: Faust lets the fetcher thread read its live set of active partitions (the thread takes the
records of the partitions in it when they arrive), and aiokafka takes an empty set (all partitions
paused, as while partitions are held) for "every partition", whose records Faust then drops as
inactive, consumed: the thread is given a view of the live set that is never taken for "every
partition" (`_ActivePartitions`). And the
records a rebalance drops (the rest of a fetched batch, a delivery given up) come back only by the
seek after the assignment, which Faust makes for the partitions with a committed offset: a
partition without one is sought to its beginning too, where the earliest reset starts it anyway.

4. An assignment that survives a restart. Faust's assignor is sticky: each member sends the
partitions it holds, and the leader keeps them where they are. But a member's holdings live in
memory only, so after a restart of the workers (a deploy, the supervisor) every member claims
nothing and the leader deals the partitions out afresh: two heat workers restarted together
swapped halves, and each re-read the other's changelogs (10-15 s for 15,000 entries) before taking
an event. `RestartStickyAssignor` writes each assignment to the app's directory and claims it
again at the next start. The first member back takes every partition until the others return:
it goes on claiming only its own meanwhile (else its claim of all would collide with each
returning member's, and the leader's tie-break, first member wins, swapped them). A stale claim
(a partition another member took over meanwhile) is one of the duplicate claims the leader
already resolves (`CopartitionedAssignor._unassign_overassigned`).
5. Fetches that wait for a batch. Faust builds its aiokafka consumer with aiokafka's
`fetch_min_bytes=1`: a worker that keeps up asks the broker again the moment a fetch returns with
a handful of records, and the broker's CPU went to answering fetches. `BatchFetchConsumerThread`
gives it infra/kafka/fetching.py's `FETCH_MIN_BYTES` / `FETCH_MAX_WAIT_MS`: a fetch waits until
64 KiB are there or 100 ms have passed (at most that much added latency, for far fewer requests).
At a steady 2,500 events/s to one heat worker, with the sink fetching the same way, the broker
went from 88 % to 60 % of a core and the worker's lag p99 from 4.9 s to 1.8 s. A backlog (or a
changelog being recovered) fills a fetch at once, as before.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Coroutine, Generator, Iterable, Iterator
from pathlib import Path
from typing import Any

import faust
import rocksdict
from aiokafka import TopicPartition
from faust.assignor import PartitionAssignor
from faust.assignor.client_assignment import ClientAssignment, ClientMetadata
from faust.transport.drivers import aiokafka as aiokafka_driver
from faust.types import TP
from mode.services import WaitResults

from infra.kafka.fetching import FETCH_MAX_WAIT_MS, FETCH_MIN_BYTES

log = logging.getLogger(__name__)


def read_table(table: faust.Table, key: bytes) -> bytes | None:
    """The raw bytes stored under `key` (written by `write_table` or recovered from the changelog);
    from the current event's partition when there is one, else from any partition of the store."""
    value: bytes | None = table.data._get(key)
    return value


async def write_table(table: faust.Table, partition: int, items: Iterable[tuple[bytes, bytes | None]],
                      still_owned: Callable[[], bool] = lambda: True) -> int:
    """Write encoded (key, value) pairs (None deletes), as the table's serializers would encode them,
    to its RocksDB store and its changelog for `partition`; wait until the broker has them all. The
    number written. Once `still_owned()` is false (a rebalance: the partition may be another
    worker's now) it stops sending and leaves the store alone: a late write would land on the
    changelog after the new owner's recovery, and the persisted offset would skip the new owner's
    writes at the next recovery here."""
    store = table.data
    producer = table.app.producer._ensure_producer()  # the aiokafka producer
    topic = table.changelog_topic.get_topic_name()
    rows = rocksdict.WriteBatch(raw_mode=True)
    sent: list[tuple[Any, int]] = []  # (delivery future, records in the batch)
    batch, in_batch, count = producer.create_batch(), 0, 0
    for key, value in items:
        if value is None:
            rows.delete(key)
        else:
            rows.put(key, value)
        if batch.append(key=key, value=value, timestamp=None) is None:  # full: send it, start another
            if not still_owned():
                return 0
            sent.append((await producer.send_batch(batch, topic, partition=partition), in_batch))
            batch, in_batch = producer.create_batch(), 0
            batch.append(key=key, value=value, timestamp=None)
        in_batch += 1
        count += 1
    if in_batch:
        batch.close()
        if not still_owned():
            return 0
        sent.append((await producer.send_batch(batch, topic, partition=partition), in_batch))
    last_offset = None
    for future, records in sent:
        metadata = await future
        last_offset = metadata.offset + records - 1
    if not still_owned():
        return 0
    store._db_for_partition(partition).write(rows)
    if last_offset is not None:
        store.set_persisted_offset(TP(topic, partition), last_offset)
    return count


async def produce(app: faust.App, topic: str, records: Iterable[tuple[bytes, bytes]],
                  headers: list[tuple[str, bytes]] | None = None) -> list[Any]:
    """Hand encoded (key, value) records, each with `headers`, to the app's aiokafka producer,
    partitioned by key as `topic.send` would, without Faust's per-message layers (serializers,
    FutureMessage, callbacks, sensors: most of a send's cost); the broker's acknowledgements, to
    await when they are needed. The project's one way to produce from a Faust app."""
    producer = app.producer._ensure_producer()
    return [await producer.send(topic, value=value, key=key, headers=headers) for key, value in records]


def table_partitions(table: faust.Table) -> list[int]:
    """The partitions whose store this worker has open (the table's assigned partitions)."""
    return sorted(table.data._dbs)


def table_keys(table: faust.Table, partition: int, after: bytes | None, limit: int) -> list[bytes]:
    """Up to `limit` raw keys stored for `partition`, in key order, after `after` (from the start
    if None): a new RocksDB iterator each call, so that no iterator outlives a turn of the event loop
    (a revoked partition's store is closed)."""
    db = table.data._dbs.get(partition)
    if db is None:
        return []
    keys: list[bytes] = []
    for key in db.keys(from_key=after):
        if key == after:
            continue
        keys.append(key)
        if len(keys) >= limit:
            break
    return keys


def faust_speedups() -> dict[str, str]:
    """Which of Faust's compiled fast paths and which event loop this process really runs (called
    on the loop): the Cython stream iterator and conductor ship in the faust-streaming wheel and
    load unless NO_CYTHON is set or their import fails, silently either way."""
    from faust import streams
    from faust.transport import conductor

    loop = type(asyncio.get_running_loop())
    return {"event loop": f"{loop.__module__}.{loop.__qualname__}",
            "Cython stream iterator": "loaded" if streams._CStreamIterator is not None else "NOT loaded",
            "Cython conductor": "loaded" if conductor.ConductorHandler is not None else "NOT loaded"}


class _Resumed:
    """Awaitable that carries on with a coroutine already run up to its first suspension."""

    def __init__(self, coroutine: Coroutine[Any, Any, Any], suspended_on: Any) -> None:
        self._coroutine = coroutine
        self._suspended_on = suspended_on

    def __await__(self) -> Generator[Any, Any, Any]:
        coroutine, value = self._coroutine, self._suspended_on
        while True:
            try:
                sent = yield value
            except GeneratorExit:
                coroutine.close()
                raise
            except BaseException as exc:  # noqa: BLE001 - cancellation and errors go to the coroutine
                try:
                    value = coroutine.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    value = coroutine.send(sent)
                except StopIteration as stop:
                    return stop.value


def _is_wait_on(coroutine: object, event: asyncio.Event) -> bool:
    """Whether `coroutine` is a not yet started `event.wait()`."""
    frame = getattr(coroutine, "cr_frame", None)
    return asyncio.iscoroutine(coroutine) and frame is not None and frame.f_locals.get("self") is event


class _ActivePartitions:
    """The consumer's live set of active partitions as the fetcher thread reads it (3. above):
    membership follows the set; it is never empty in aiokafka's sense, which is "every partition"."""

    def __init__(self, live: set[TP]) -> None:
        self._live = live

    def __contains__(self, tp: object) -> bool:
        return tp in self._live

    def __bool__(self) -> bool:
        return True

    def __iter__(self) -> Iterator[TP]:
        return iter(set(self._live))


class DirectDeliveryConsumer(aiokafka_driver.Consumer):
    _held: frozenset[TP] = frozenset()  # stream partitions Faust resumed while rebalancing (3.)

    def _new_consumer_thread(self) -> aiokafka_driver.AIOKafkaConsumerThread:
        return BatchFetchConsumerThread(self, loop=self.loop, beacon=self.beacon)

    def resume_partitions(self, tps: Iterable[TP]) -> None:
        tps = set(tps)
        if self.app.rebalancing:
            streams = {tp for tp in tps if not self._is_changelog_tp(tp)}
            self._held |= streams
            tps -= streams
        super().resume_partitions(tps)

    def pause_partitions(self, tps: Iterable[TP]) -> None:
        tps = set(tps)
        self._held -= tps  # paused again (a new rebalance): no longer waiting for the flow
        super().pause_partitions(tps)

    def resume_flow(self) -> None:
        held, self._held = self._held, frozenset()
        if held:
            super().resume_partitions(held)
        super().resume_flow()

    async def _getmany(self, active_partitions: set[TP] | None, timeout: float) -> Any:
        return await super()._getmany(None if active_partitions is None else _ActivePartitions(active_partitions),
                                      timeout)

    async def perform_seek(self) -> None:
        await super().perform_seek()
        never_committed = [tp for tp in self.assignment()
                           if not self._is_changelog_tp(tp) and not self._committed_offset.get(tp)]
        if never_committed:
            await self._thread.seek_to_beginning(*(TopicPartition(tp.topic, tp.partition) for tp in never_committed))
            for tp in never_committed:
                self._read_offset[tp] = None

    async def wait_first(self, *coros: Any, timeout: Any = None) -> WaitResults:
        if not (len(coros) == 2 and timeout is None and asyncio.iscoroutine(coros[0])
                and _is_wait_on(coros[1], self.suspend_flow)) or self.suspend_flow.is_set():
            return await super().wait_first(*coros, timeout=timeout)
        delivery, flow_suspended = coros
        try:
            suspended_on = delivery.send(None)
        except StopIteration as done:
            flow_suspended.close()  # never started: nothing to cancel
            return WaitResults([delivery], [done.value], False)
        except BaseException:
            flow_suspended.close()
            raise
        # The delivery has to wait (a full buffer, flow control): race it against a rebalance.
        return await super().wait_first(_Resumed(delivery, suspended_on), flow_suspended)


class BatchFetchConsumerThread(aiokafka_driver.AIOKafkaConsumerThread):
    """Faust's consumer thread, its worker consumer's fetches waiting for a batch (5.)."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # Read by AIOKafkaConsumer.start() when it builds its fetcher: not started yet here.
        consumer._fetch_min_bytes = FETCH_MIN_BYTES
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
        return consumer


class Transport(aiokafka_driver.Transport):
    Consumer = DirectDeliveryConsumer


class RestartStickyAssignor(PartitionAssignor):
    """Faust's assignor, each member claiming its partitions of before a restart (4.): the claim
    is kept on disk. A member that gets more than it claims (it came back first, or the others
    are away) goes on claiming only its own, so that each of the others gets its partitions back
    as it returns; a member that gets less or other partitions claims what it got from then on."""

    SAVED_NAME = "last-assignment.json"

    def __init__(self, app: faust.App, replicas: int = 0) -> None:
        super().__init__(app, replicas)
        self._saved = Path(app.conf.appdir) / self.SAVED_NAME
        self._claim: ClientAssignment | None = None
        try:
            self._claim = ClientAssignment.loads(self._saved.read_bytes())
        except FileNotFoundError:
            pass
        except Exception as exc:  # noqa: BLE001 - unreadable: claim nothing, as Faust would
            log.warning("ignoring the saved assignment %s: %s", self._saved, exc)

    @property
    def _metadata(self) -> ClientMetadata:
        metadata = super()._metadata
        if self._claim is not None:
            metadata.assignment = self._claim
        return metadata

    def on_assignment(self, assignment: Any) -> None:
        super().on_assignment(assignment)
        if self._claim is not None and self._claim.active_tps <= self._assignment.active_tps:
            return  # more than its own, for now: it keeps claiming its own
        self._claim = self._assignment
        self._saved.parent.mkdir(parents=True, exist_ok=True)
        partial = self._saved.with_suffix(".partial")
        partial.write_bytes(self._claim.dumps())
        os.replace(partial, self._saved)  # never a half-written claim
