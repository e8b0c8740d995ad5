"""The heat worker: one Faust agent over views, watch ticks and likes, around the pure
processor of processors/heat_score/processor.py.

The agent decodes (or dead-letters) each event and hands it to the processor; timers carry out
what the processor asks for: checkpoints (its writes to the `heat-state` table: RocksDB on disk,
a changelog in Kafka, so a restarted or moved worker recovers it), HeatScoreUpdated records every
LUSTRAX_HEAT_EMIT_INTERVAL_S (the sink stores them in ClickHouse `heat_scores`), LikeUpdate
broadcasts, and the acknowledgements of the events all of that covers.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from datetime import UTC, datetime
from typing import Any

import faust
import mode.loop
import orjson
from faust.types import EventT
from prometheus_client import CollectorRegistry

from common.settings import Settings
from processors.app import expose_metrics, faust_app, handle_events, start_sending
from processors.faust_internals import faust_speedups, read_table, table_keys, table_partitions, write_table
from processors.heat_score.like_rule import LikeBroadcastRule
from processors.heat_score.metrics import HeatMetrics
from processors.heat_score.processor import HeatProcessor, LikeUpdateDue, Limits, ScoreDue
from schemas.envelope import new_record
from schemas.topics import HEAT_TABLES, TOPIC_BY_SCHEMA

log = logging.getLogger(__name__)
CONSUMER = "heat"
PRODUCER_NAME = "heat-score"
ENGAGEMENT = ("VideoView", "VideoLike", "WatchTick")
WRITES_PER_TURN = 500  # table writes (or score records) between turns of the event loop
LAG_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0, 300.0)
# The cached state is many small containers: with CPython's default (700 allocations) the young
# collections ran every few events and the full ones walked Faust's and the cache's whole heap.
GC_THRESHOLDS = (50_000, 20, 20)
# Per partition store (Faust's defaults are 3 memtables of 64 MiB and a 2 GiB block cache for each
# of the six: 1 GiB of RSS at a million viewers in the retention). Entries are small and the worker
# keeps the recent ones in memory anyway.
ROCKSDB_OPTIONS = {"write_buffer_size": 8 * 1024 * 1024, "max_write_buffer_number": 2,
                   "block_cache_size": 32 * 1024 * 1024}
# The retention moves by whole hours: forget what it left behind about as often, a chunk at a time.
SWEEP_INTERVAL_S = 3600.0
SWEEP_CHUNK = 1000


def heat_record(due: ScoreDue) -> dict[str, Any]:
    stats = due.stats
    return new_record("HeatScoreUpdated", PRODUCER_NAME, {
        "video_id": due.video_id, "window": due.window,
        "window_end": datetime.fromtimestamp(due.window_end_ms / 1000, UTC), "score": due.score,
        "views": stats.views, "unique_viewers": stats.unique_viewers, "net_likes": stats.net_likes,
        "completion_rate": stats.completion_rate, "rewatch_rate": stats.rewatch_rate,
        "avg_watched_fraction": stats.avg_watched_fraction,
    })


def like_update_record(update: LikeUpdateDue) -> dict[str, Any]:
    return new_record("LikeUpdate", PRODUCER_NAME, {"video_id": update.video_id, "like_count": update.like_count,
                                                    "delta": update.delta})


def create_heat_app(settings: Settings) -> faust.App:
    partitions = TOPIC_BY_SCHEMA["VideoView"].partitions
    app = faust_app(
        # One data directory per worker (they share the group, not their RocksDB): by its web port.
        "heat", settings, settings.heat_web_port, instance=str(settings.heat_web_port), store="rocksdb://",
        topic_partitions=partitions,
        # Checkpoints send many small changelog records at once, scores and like updates come in
        # bursts: batch them (fewer produce requests, each one costly to build).
        producer_linger=0.05, producer_max_batch_size=1024 * 1024, producer_compression_type="lz4",
        # Events stay unacked until a checkpoint and a score cover them: a stopping worker would
        # wait for them in vain. Unacked events are not committed, and the next start replays them.
        stream_wait_empty=False,
        # Several workers share one machine: a standby copy of each other's tables would only
        # double the changelog reading (the changelog is the backup).
        table_standby_replicas=0,
        # Fetch and buffer in batches big enough for the fetch loop to run rarely, small enough
        # that a rebalance does not wait on a long buffer.
        broker_max_poll_records=2000, stream_buffer_maxsize=8192,
        # Acknowledgements come in bursts, after a checkpoint and a score: commit them within a
        # second (Faust's default 2.8 s), so that a restart replays less.
        broker_commit_interval=1.0,
    )
    if app.conf.id != "lustrax-heat":  # the changelog names in schemas/topics.py depend on it
        raise RuntimeError(f"unexpected Faust app id {app.conf.id}")
    engagement = app.topic(*(TOPIC_BY_SCHEMA[s].name for s in ENGAGEMENT), key_type=bytes, value_type=bytes,
                           key_serializer="raw", value_serializer="raw")
    [table_name] = HEAT_TABLES
    # Keys and values are JSON (what Faust's recovery decodes), encoded here and written in bulk.
    state = app.Table(table_name, partitions=partitions,
                      schema=faust.Schema(key_type=str, key_serializer="json", value_serializer="json"),
                      options=ROCKSDB_OPTIONS)

    def read(key: str) -> Any:
        value = read_table(state, orjson.dumps(key))
        return None if value is None else orjson.loads(value)

    processor = HeatProcessor(
        read, half_life_s=settings.heat_half_life_s,
        like_rule=LikeBroadcastRule(settings.like_update_min_interval_s, settings.like_update_min_change),
        limits=Limits(checkpoint_interval_s=settings.heat_checkpoint_interval_s))
    streams: list[faust.StreamT] = []  # the agent's manual-ack stream
    checkpointing = asyncio.Lock()

    # Produce time (the Kafka record timestamp) to the event's effect being in the worker's state:
    # the processing lag. Scores reflect it from the next emit, every LUSTRAX_HEAT_EMIT_INTERVAL_S.
    counts = HeatMetrics(LAG_BUCKETS_S)
    metrics = CollectorRegistry()
    metrics.register(counts)
    expose_metrics(app, metrics)
    # Like updates on their way: the stream does not wait for each, acks do (ack_done).
    like_deliveries: list[Any] = []

    @app.on_partitions_revoked.connect
    async def forget_memory(app: faust.App, revoked: Any, **kwargs: Any) -> None:
        # A checkpoint being written is finished first, all of it: the worker rejoins the group
        # after this, so the partitions' next owners recover it whole from the changelogs. Given
        # up half-way, a partition's write could reach them in part, or after their recovery.
        async with checkpointing:
            processor.revoke()

    @app.task
    async def report_speedups() -> None:
        log.info("heat worker: %s", ", ".join(f"{name} {state}" for name, state in faust_speedups().items()))

    async def ack_done() -> None:
        # An event is acked only once its like update is out too: wait for every delivery started
        # so far, then take the acks with no await in between (events applied meanwhile may have
        # started more).
        while like_deliveries:
            started = like_deliveries[:]
            del like_deliveries[:]
            await asyncio.gather(*started)
        if streams:
            for token in processor.acks():
                await streams[0].ack(token)

    async def start_sends(schema: str, records: list[dict[str, Any]]) -> list[Any]:
        # Built here from the processor's numbers: the schema's validation would only repeat it.
        return await start_sending(app, schema, records, validate=False)

    async def start_like_updates(updates: list[LikeUpdateDue]) -> None:
        if updates:
            like_deliveries.extend(await start_sends("LikeUpdate", [like_update_record(update) for update in updates]))

    async def apply(schema: str, record: dict[str, Any], event: EventT) -> None:
        message = event.message
        changed = processor.apply(schema, record, record["occurred_at"], event, message.partition)
        if message.timestamp:
            counts.lag(max(0.0, time.time() - message.timestamp))
        counts.event(changed)
        if changed and schema == "VideoLike":
            await start_like_updates(processor.like_updates_due(time.monotonic(), record["video_id"]))

    def parked(event: EventT) -> None:
        processor.taken(event, event.message.partition)
        counts.parked()

    @app.agent(engagement)
    async def heat(stream: faust.StreamT) -> None:
        manual = stream.noack()
        streams[:] = [manual]
        # occurred_at as epoch milliseconds, as the processor takes it.
        await handle_events(app, manual, ENGAGEMENT, CONSUMER, apply, on_parked=parked, logical_types=False)

    @app.timer(interval=min(1.0, settings.heat_checkpoint_interval_s / 2))
    async def checkpoint() -> None:
        if checkpointing.locked() or not processor.checkpoint_due(time.monotonic()):
            await ack_done()  # e.g. only duplicates since the last one
            return
        async with checkpointing:
            done = processor.checkpoint(time.monotonic())
            for partition, writes in done.writes.items():
                if not processor.is_current(done):
                    return  # a rebalance: these partitions may be another worker's now
                rows = []
                for n, (key, value) in enumerate(writes):
                    if n and n % WRITES_PER_TURN == 0:
                        await asyncio.sleep(0)  # serializing a long checkpoint would stall the stream
                    rows.append((orjson.dumps(key), None if value is None else orjson.dumps(value)))
                await write_table(state, partition, rows, still_owned=lambda: processor.is_current(done))
            if processor.is_current(done):
                processor.checkpoint_written(done)
        await ack_done()

    @app.timer(interval=SWEEP_INTERVAL_S)
    async def sweep() -> None:
        """Entries past the retention that no event touches again: the processor decides what to
        forget, the next checkpoint writes it (deletions as tombstones on the changelog)."""
        now_ms = int(time.time() * 1000)
        for partition in table_partitions(state):
            after = None
            while partition in table_partitions(state):  # else revoked meanwhile
                raw = table_keys(state, partition, after, SWEEP_CHUNK)
                if not raw:
                    break
                after = raw[-1]
                keys = [orjson.loads(key) for key in raw if key[:1] == b'"']  # not Faust's offset key
                async with checkpointing:  # never judge the store while a checkpoint is being written
                    processor.sweep(partition, keys, now_ms)
                await asyncio.sleep(0)

    @app.timer(interval=settings.heat_emit_interval_s)
    async def emit_scores() -> None:
        batch = processor.scores_due(int(time.time() * 1000))
        records = []
        for n, due in enumerate(batch.scores):
            if n and n % WRITES_PER_TURN == 0:
                await asyncio.sleep(0)
            records.append(heat_record(due))
        deliveries = await start_sends("HeatScoreUpdated", records)
        if deliveries:
            await asyncio.gather(*deliveries)  # one round trip for all
        processor.scores_sent(batch)
        await start_like_updates(processor.like_updates_due(time.monotonic()))
        await ack_done()

    return app


def run_worker(settings: Settings) -> None:
    mode.loop.use("uvloop")  # what `faust worker --loop uvloop` does
    app = create_heat_app(settings)
    # What is loaded by now (modules, the app) lives as long as the process: out of the collector's
    # way for good, and young collections far apart.
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    faust.Worker(app, loglevel="info").execute_from_commandline()
