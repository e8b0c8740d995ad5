"""The heat worker: Faust agents over views, likes and watch ticks.

State lives in Faust tables (RocksDB on disk, changelog topics in Kafka, so a restarted worker
recovers it): `heat-state` (the rolling per-video state of processors/heat_score/state.py),
`first-seen` (when a video's engagement began: the age the score decays with), `liked` (each
user's latest like/unlike of a video) and `like-count`. The per-video state is worked on in memory
and written at most once per LUSTRAX_HEAT_CHECKPOINT_INTERVAL_S per video; events are acknowledged
(and so committed) only once their video's state is written.

Every LUSTRAX_HEAT_EMIT_INTERVAL_S a timer scores the videos that changed, for each window, and
emits HeatScoreUpdated (the sink stores it in ClickHouse `heat_scores`). Like changes are
broadcast as LikeUpdate when significant (processors/heat_score/like_rule.py); a change held back
by the per-video interval goes out from the timer once the interval has passed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import faust
from prometheus_client import CollectorRegistry, Counter, Histogram

from common.settings import Settings
from processors.app import dead_letter, expose_metrics, faust_app, raw_topic, send_event, send_events
from processors.faust_internals import table_writes_for
from processors.heat_score.like_rule import LikeBroadcastRule, decide, like_delta
from processors.heat_score.score import WINDOWS, heat_score
from processors.heat_score.state import apply_like, apply_tick, apply_view, new_video_state, windows_stats
from schemas.codec import decode
from schemas.envelope import new_record
from schemas.errors import SchemaError
from schemas.topics import HEAT_TABLES, TOPIC_BY_SCHEMA

log = logging.getLogger(__name__)
CONSUMER = "heat"
PRODUCER_NAME = "heat-score"
ENGAGEMENT = ("VideoView", "VideoLike", "WatchTick")
MAX_BROADCAST_MEMORY = 100_000
MAX_CACHED_STATES = 10_000
YIELD_EVERY = 20  # videos scored or written between turns of the event loop
LAG_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0, 300.0)


async def taking_turns(video_ids: list[str]) -> AsyncIterator[str]:
    """The ids, with a turn of the event loop every YIELD_EVERY: scoring and writing whole states
    in one burst would stall the stream for as long."""
    for n, video_id in enumerate(video_ids):
        if n and n % YIELD_EVERY == 0:
            await asyncio.sleep(0)
        yield video_id


def _ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)


def heat_record(video_id: str, window: str, window_end_ms: int, score: float, stats: Any) -> dict[str, Any]:
    return new_record("HeatScoreUpdated", PRODUCER_NAME, {
        "video_id": video_id, "window": window, "window_end": datetime.fromtimestamp(window_end_ms / 1000, UTC),
        "score": score, "views": stats.views, "unique_viewers": stats.unique_viewers, "net_likes": stats.net_likes,
        "completion_rate": stats.completion_rate, "rewatch_rate": stats.rewatch_rate,
        "avg_watched_fraction": stats.avg_watched_fraction,
    })


def like_update_record(video_id: str, count: int, delta: int) -> dict[str, Any]:
    return new_record("LikeUpdate", PRODUCER_NAME, {"video_id": video_id, "like_count": count, "delta": delta})


def create_heat_app(settings: Settings) -> faust.App:
    partitions = TOPIC_BY_SCHEMA["VideoView"].partitions
    app = faust_app(
        "heat", settings, settings.heat_web_port, store="rocksdb://", topic_partitions=partitions,
        # Every state change goes to a changelog; batch those sends (states are JSON of a few KB,
        # one per 16 KB default batch would make every event wait for its own round trip).
        producer_linger=0.005, producer_max_batch_size=1024 * 1024, producer_compression_type="lz4",
        # Events stay unacked until their video's next checkpoint: a stopping worker would wait for
        # them in vain. Unacked events are not committed, and the next start replays them.
        stream_wait_empty=False,
    )
    if app.conf.id != "lustrax-heat":  # the changelog names in schemas/topics.py depend on it
        raise RuntimeError(f"unexpected Faust app id {app.conf.id}")
    engagement = app.topic(*(TOPIC_BY_SCHEMA[s].name for s in ENGAGEMENT), key_type=bytes, value_type=bytes,
                           key_serializer="raw", value_serializer="raw")
    heat_scores = raw_topic(app, TOPIC_BY_SCHEMA["HeatScoreUpdated"].name)
    like_updates = raw_topic(app, TOPIC_BY_SCHEMA["LikeUpdate"].name)

    def table(name: str) -> faust.Table:
        return app.Table(name, partitions=partitions,
                         schema=faust.Schema(key_type=str, key_serializer="json", value_serializer="json"))

    states, first_seen, liked, like_counts = (table(name) for name in HEAT_TABLES)
    rule = LikeBroadcastRule(settings.like_update_min_interval_s, settings.like_update_min_change)
    checkpoint_after_s = settings.heat_checkpoint_interval_s
    dirty: set[str] = set()
    # Last broadcast per video (count, at): a best-effort feed, so it is kept in memory only; after
    # a restart the first change is broadcast again.
    broadcast: OrderedDict[str, tuple[int, float]] = OrderedDict()
    pending_likes: set[str] = set()

    metrics = CollectorRegistry()
    events_total = Counter("lustrax_heat_events", "Engagement events taken by the heat worker, by outcome",
                           ["outcome"], registry=metrics)
    applied_total, ignored_total, dead_total = (events_total.labels(outcome) for outcome in
                                                ("applied", "duplicate_or_late", "dead_letter"))
    # Produce time (the Kafka record timestamp) to the event's effect being in the worker's state:
    # the processing lag. Scores reflect it from the next emit, every LUSTRAX_HEAT_EMIT_INTERVAL_S.
    event_lag = Histogram("lustrax_heat_event_lag_seconds", "Kafka record timestamp to applied in the heat state",
                          buckets=LAG_BUCKETS_S, registry=metrics)
    expose_metrics(app, metrics)

    async def maybe_broadcast(video_id: str, count: int) -> None:
        last_count, last_at = broadcast.get(video_id, (None, None))
        now = time.monotonic()
        if decide(rule, last_count, last_at, count, now):
            await send_event(like_updates, "LikeUpdate", like_update_record(video_id, count,
                                                                            like_delta(last_count, count)))
            broadcast[video_id] = (count, now)
            broadcast.move_to_end(video_id)
            while len(broadcast) > MAX_BROADCAST_MEMORY:
                broadcast.popitem(last=False)
            pending_likes.discard(video_id)
        elif count != last_count:
            pending_likes.add(video_id)

    async def count_like(record: dict[str, Any], at_ms: int) -> None:
        """The like count: each user's latest action wins, whatever order actions arrive in."""
        video_id, now_liked = record["video_id"], record["action"] == "LIKE"
        key = f"{video_id}\x00{record['user_id']}"
        was_liked, last_at = liked.get(key) or (False, -1)
        if at_ms <= last_at:
            return  # older than what we know of this user (reordered or redelivered)
        liked[key] = (now_liked, at_ms)
        if was_liked == now_liked:
            return  # no change: liking twice, or unliking what was not liked
        count = max(0, (like_counts.get(video_id) or 0) + (1 if now_liked else -1))
        like_counts[video_id] = count
        await maybe_broadcast(video_id, count)

    # The hot per-video states live in memory and reach the table (RocksDB + changelog) at most once
    # per checkpoint interval per video: writing the whole state on every event made the changelog
    # the bottleneck. Events are acked by hand only after their video's state was written, so
    # committed offsets never pass a change that is only in memory: a crash replays those events
    # (the state's event-id memory makes the replay harmless). A rebalance drops memory and pending
    # events alike.
    cache: OrderedDict[str, Any] = OrderedDict()  # least recently used first, at most MAX_CACHED_STATES
    first_at: dict[str, int] = {}  # `first_seen` of the cached videos, read once from the table
    pending: dict[str, list[Any]] = {}  # video -> events applied in memory, not yet acked
    pending_since: dict[str, float] = {}
    streams: list[faust.StreamT] = []  # the agent's manual-ack stream

    @app.on_partitions_revoked.connect
    async def forget_memory(app: faust.App, revoked: Any, **kwargs: Any) -> None:
        cache.clear()
        first_at.clear()
        pending.clear()
        pending_since.clear()

    async def flush(video_id: str, state: Any) -> None:
        events = pending.pop(video_id, [])
        pending_since.pop(video_id, None)
        if not events:
            return
        # Table writes go to the partition of the current event: make it one of this video's.
        with table_writes_for(events[-1]):
            states[video_id] = state
        for event in events:
            await streams[0].ack(event)

    @app.agent(engagement)
    async def heat(stream: faust.StreamT) -> None:
        manual = stream.noack()
        streams[:] = [manual]
        async for message_event in manual.events():
            message = message_event.message
            try:
                schema, record = decode(message.value)
                if schema not in ENGAGEMENT:
                    raise SchemaError(f"{schema} on an engagement topic")
            except SchemaError as exc:
                await dead_letter(app, message, CONSUMER, f"undecodable engagement event: {exc}")
                await manual.ack(message_event)
                dead_total.inc()
                continue
            try:
                video_id = await apply_event(schema, record)
            except Exception as exc:  # noqa: BLE001 - a bug must not stop the stream; park the message
                log.exception("unexpected error on %s", record.get("video_id"))
                await dead_letter(app, message, CONSUMER, f"unexpected {type(exc).__name__}: {exc}")
                await manual.ack(message_event)
                dead_total.inc()
                continue
            if message.timestamp:
                event_lag.observe(max(0.0, time.time() - message.timestamp))
            if video_id is None:
                await manual.ack(message_event)  # a duplicate or too late: nothing to keep
                ignored_total.inc()
                continue
            applied_total.inc()
            pending.setdefault(video_id, []).append(message_event)
            since = pending_since.setdefault(video_id, time.monotonic())
            if time.monotonic() - since >= checkpoint_after_s:
                await flush(video_id, cache[video_id])

    @app.timer(interval=checkpoint_after_s / 2)
    async def checkpoint_quiet_videos() -> None:
        now = time.monotonic()
        due = [video_id for video_id, since in pending_since.items() if now - since >= checkpoint_after_s]
        async for video_id in taking_turns(due):
            if video_id in cache:
                await flush(video_id, cache[video_id])

    async def apply_event(schema: str, record: dict[str, Any]) -> str | None:
        """Apply to the in-memory state; the video id if the state changed, else None."""
        video_id, at_ms, event_id = record["video_id"], _ms(record["occurred_at"]), str(record["event_id"])
        state = cache.get(video_id)
        if state is None:
            state = states.get(video_id) or new_video_state()
            cache[video_id] = state
            first = first_seen.get(video_id)
            if first is not None:
                first_at[video_id] = first
            if len(cache) > MAX_CACHED_STATES:
                evicted, evicted_state = cache.popitem(last=False)
                first_at.pop(evicted, None)
                await flush(evicted, evicted_state)  # write it before memory lets go of it
        else:
            cache.move_to_end(video_id)
        if schema == "VideoView":
            applied = apply_view(state, event_id=event_id, user_id=record["user_id"],
                                 session_id=record["session_id"], at_ms=at_ms)
        elif schema == "WatchTick":
            applied = apply_tick(state, event_id=event_id, user_id=record["user_id"],
                                 session_id=record["session_id"], position_ms=record["position_ms"],
                                 duration_ms=record["duration_ms"], at_ms=at_ms)
        else:
            applied = apply_like(state, event_id=event_id, user_id=record["user_id"],
                                 like=record["action"] == "LIKE", at_ms=at_ms)
            await count_like(record, at_ms)
        if not applied:
            return None
        if video_id not in first_at or at_ms < first_at[video_id]:
            first_at[video_id] = first_seen[video_id] = at_ms
        dirty.add(video_id)
        return video_id

    @app.timer(interval=settings.heat_emit_interval_s)
    async def emit_scores() -> None:
        now_ms = int(time.time() * 1000)
        changed = list(dirty)
        dirty.clear()
        records = []
        async for video_id in taking_turns(changed):
            state = cache.get(video_id) or states.get(video_id)
            if state is None:
                continue
            first = first_at.get(video_id) or first_seen.get(video_id) or now_ms
            age_s = max(0.0, (now_ms - first) / 1000)
            for window, stats in zip(WINDOWS, windows_stats(state, list(WINDOWS.values()), now_ms), strict=True):
                score = heat_score(stats, age_s=age_s, half_life_s=settings.heat_half_life_s)
                records.append(heat_record(video_id, window, now_ms, score, stats))
        await send_events(heat_scores, "HeatScoreUpdated", records)
        for video_id in list(pending_likes):
            await maybe_broadcast(video_id, like_counts.get(video_id) or 0)

    return app


def run_worker(settings: Settings) -> None:
    app = create_heat_app(settings)
    faust.Worker(app, loglevel="info").execute_from_commandline()
