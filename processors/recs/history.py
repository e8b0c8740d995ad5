"""A user's watch history (pure): per video the furthest completion and when it was last watched.

Both are maxima, so merging is a join: the same ticks applied twice, in any order, or a history
from ClickHouse merged with one built from the topic, give the same history (redelivery and
retraining are harmless). Only the `size` most recently watched videos are kept.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

# Finished: a tick at >= 90 % of the duration, the rule of the rollups and the heat score.
FINISHED_FRACTION = 0.9

# video_id -> (completion 0..1, last watched, epoch ms)
History = dict[str, tuple[float, int]]


def completion(position_ms: int, duration_ms: int) -> float | None:
    """How far into the video a tick is (0..1); None without a duration."""
    if duration_ms <= 0:
        return None
    return min(1.0, max(0.0, position_ms / duration_ms))


def merged(history: Mapping[str, tuple[float, int]], updates: Iterable[tuple[str, float, int]], size: int) -> History:
    """`history` with (video_id, completion, at_ms) updates folded in, the `size` latest kept."""
    out: History = dict(history)
    for video_id, done, at_ms in updates:
        before = out.get(video_id)
        out[video_id] = (done, at_ms) if before is None else (max(before[0], done), max(before[1], at_ms))
    if len(out) > size:
        kept = sorted(out.items(), key=lambda item: (item[1][1], item[0]), reverse=True)[:size]
        out = dict(kept)
    return out


def recent(history: Mapping[str, tuple[float, int]], count: int) -> list[tuple[str, float]]:
    """The `count` latest watched (video_id, completion), latest first."""
    latest = sorted(history.items(), key=lambda item: (item[1][1], item[0]), reverse=True)[:count]
    return [(video_id, done) for video_id, (done, _) in latest]


def finished(history: Mapping[str, tuple[float, int]]) -> list[str]:
    """The videos watched to the end (FINISHED_FRACTION), sorted."""
    return sorted(video_id for video_id, (done, _) in history.items() if done >= FINISHED_FRACTION)
