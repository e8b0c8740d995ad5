"""When a video's like count changed enough to broadcast `like_update`. Pure.

Broadcast when, since the last broadcast, the count crossed a 1-2-5 x 10^k step (1, 2, 5, 10, 20,
50, 100, ...) in either direction or moved by at least `min_relative_change` of the last broadcast
count; never twice within `min_interval_s`; the first non-zero count is always broadcast.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class LikeBroadcastRule:
    min_interval_s: float = 5.0
    min_relative_change: float = 0.1

    def __post_init__(self) -> None:
        if not (math.isfinite(self.min_interval_s) and self.min_interval_s >= 0):
            raise ValueError(f"min_interval_s must be finite and >= 0, got {self.min_interval_s}")
        if not (math.isfinite(self.min_relative_change) and self.min_relative_change >= 0):
            raise ValueError(f"min_relative_change must be finite and >= 0, got {self.min_relative_change}")


def step_floor(count: int) -> int:
    """The largest 1-2-5 x 10^k step <= count, 0 below 1 (so dropping to 0 crosses the step 1)."""
    if count < 1:
        return 0
    power = 10 ** (len(str(count)) - 1)  # integers only: no float log10 rounding at 10^k
    return next(mantissa * power for mantissa in (5, 2, 1) if mantissa * power <= count)


def decide(rule: LikeBroadcastRule, last_broadcast_count: int | None, last_broadcast_at_s: float | None,
           new_count: int, now_s: float) -> bool:
    """Whether to broadcast `new_count` now. Nothing broadcast yet: `last_broadcast_count` and
    `last_broadcast_at_s` are None. `now_s` and `last_broadcast_at_s` come from the same clock."""
    if last_broadcast_count is None:
        return new_count != 0
    if new_count == last_broadcast_count:
        return False
    # A negative elapsed time (a clock that went back) also waits: at most one per interval.
    if last_broadcast_at_s is not None and now_s - last_broadcast_at_s < rule.min_interval_s:
        return False
    if step_floor(new_count) != step_floor(last_broadcast_count):
        return True
    return abs(new_count - last_broadcast_count) >= rule.min_relative_change * abs(last_broadcast_count)


def like_delta(last_broadcast_count: int | None, new_count: int) -> int:
    """LikeUpdate.delta: the change since the last broadcast (the whole count for the first)."""
    return new_count - (last_broadcast_count or 0)
