"""The backend heat score of one video in one window. Pure; docs/heat-score.md explains each term.

The front end ranks with `Score = Views*1000 + MatchScore*100 + RandomFactor`. MatchScore (how
well a video fits one user) and RandomFactor (per-request exploration jitter) belong to one user's
request, so they stay in the front end; this score replaces the `Views` term:

    score = max(0, reach + likes) * 0.5 ** (age_s / half_life_s)
    reach = w_reach * log1p(unique_viewers) * (1 + w_completion * completion_rate
                                                 + w_rewatch * rewatch_rate)
    likes = w_likes * sign(net_likes) * log1p(|net_likes|)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from types import MappingProxyType
from typing import Final

MAX_WINDOW_MS: Final = 86_400_000  # the longest window (24 h)


@dataclass(frozen=True)
class WindowStats:
    """Statistics of one video over one window (docs/heat-score.md has the definitions)."""

    views: int
    unique_viewers: int
    sessions: int
    net_likes: int
    completion_rate: float
    avg_watched_fraction: float
    rewatch_rate: float


# The windows a score is computed for, by the name HeatScoreUpdated.window carries.
WINDOWS: Final[Mapping[str, int]] = MappingProxyType({"1h": 3_600_000, "24h": MAX_WINDOW_MS})


@dataclass(frozen=True)
class ScoreWeights:
    """Non-negative weights: with them every term can only raise the score as its input grows."""

    reach: float = 1.0
    completion: float = 1.0  # everyone finishing doubles the worth of the audience
    rewatch: float = 1.0  # so does everyone coming back for another session
    # Likes come from a small share of viewers (a few per cent), so log1p(net_likes) is well below
    # log1p(viewers); twice the weight lets a well-liked video outrank a merely watched one.
    likes: float = 2.0

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"weight {field.name} must be finite and >= 0, got {value}")


def heat_score(stats: WindowStats, *, age_s: float, half_life_s: float,
               weights: ScoreWeights = ScoreWeights()) -> float:
    """Heat of a video from its window statistics; `age_s` is the time since publication."""
    if not half_life_s > 0:
        raise ValueError(f"half_life_s must be > 0, got {half_life_s}")
    # Distinct viewers, log-damped: a view farm or a refresh loop buys little.
    reach = weights.reach * math.log1p(stats.unique_viewers) * (
        1 + weights.completion * stats.completion_rate + weights.rewatch * stats.rewatch_rate)
    likes = weights.likes * math.copysign(math.log1p(abs(stats.net_likes)), stats.net_likes)
    # Never negative, so that the decay can only lower it (a decayed negative would rise).
    engagement = max(0.0, reach + likes)
    # A clock-skewed negative age counts as brand new rather than boosting above 1.
    return engagement * 0.5 ** (max(age_s, 0.0) / half_life_s)
