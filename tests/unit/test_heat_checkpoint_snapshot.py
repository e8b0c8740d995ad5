"""A heat checkpoint is what the state was when it was made (pure): the agent writes it after
awaits, while events go on, and a rebalance or a crash before the next checkpoint replays those
events onto what it wrote (issue 13: records lost at a rebalance)."""

from __future__ import annotations

import json
from typing import Any

from processors.heat_score.processor import MINUTE_MS, Checkpoint, HeatProcessor
from processors.heat_score.score import WindowStats

T = 1_767_225_600_000  # a minute boundary
HOUR = 60 * MINUTE_MS

# (schema, user, fields, at): sessions of two viewers and a like, in the order they are taken.
BEFORE: list[tuple[str, str, dict[str, Any], int]] = [
    ("WatchTick", "a", {"position_ms": 30_000, "duration_ms": 60_000}, T - 5 * MINUTE_MS),  # before its view
    ("VideoView", "b", {}, T - 4 * MINUTE_MS),
    ("VideoLike", "b", {"action": "LIKE"}, T - 4 * MINUTE_MS),
]
# Taken while the checkpoint is being written: each changes an entry the checkpoint holds.
DURING: list[tuple[str, str, dict[str, Any], int]] = [
    ("VideoView", "a", {}, T - 5 * MINUTE_MS),
    ("WatchTick", "b", {"position_ms": 60_000, "duration_ms": 60_000}, T - 3 * MINUTE_MS),  # completed
    ("VideoLike", "b", {"action": "UNLIKE"}, T - 2 * MINUTE_MS),
]
EXPECTED = WindowStats(views=2, unique_viewers=2, sessions=2, net_likes=0, completion_rate=0.5,
                       avg_watched_fraction=0.75, rewatch_rate=0.0)


def _apply(processor: HeatProcessor, events: list[tuple[str, str, dict[str, Any], int]]) -> None:
    for n, (schema, user, fields, at) in enumerate(events):
        record = {"video_id": "v", "user_id": user, "session_id": f"{user}-1", **fields}
        processor.apply(schema, record, at, n, 0)


def test_events_taken_while_a_checkpoint_is_written_are_counted_when_replayed_onto_it() -> None:
    store: dict[str, str] = {}

    def read(key: str) -> Any:
        return json.loads(store[key]) if key in store else None

    def write(checkpoint: Checkpoint) -> None:
        for writes in checkpoint.writes.values():
            for key, value in writes:
                store[key] = json.dumps(value)

    worker = HeatProcessor(read, half_life_s=3600.0)
    _apply(worker, BEFORE)
    checkpoint = worker.checkpoint(0.0)
    made = json.dumps(checkpoint.writes)
    _apply(worker, DURING)  # between the agent's awaits, before it encodes the entries
    assert json.dumps(checkpoint.writes) == made  # the events changed copies of its entries
    write(checkpoint)
    worker.checkpoint_written(checkpoint)
    # A rebalance (or a crash) before the next checkpoint: nothing was acknowledged, so the new
    # owner replays every event onto what the checkpoint wrote.
    owner = HeatProcessor(read, half_life_s=3600.0)
    _apply(owner, BEFORE + DURING)
    assert owner.window_stats("v", 0, HOUR, T) == EXPECTED
    assert worker.window_stats("v", 0, HOUR, T) == EXPECTED  # what the old owner had
    # The old owner's next checkpoint writes the copies, with the events taken meanwhile.
    write(worker.checkpoint(1.0))
    assert HeatProcessor(read, half_life_s=3600.0).window_stats("v", 0, HOUR, T) == EXPECTED
