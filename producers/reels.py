"""The reels ranking (pure): the seed's front-end formula made a backend one (docs/recommendations.md).

    score = w_heat * heat + w_match * match + w_explore * explore

The seed ranks by `Views * 1000 + MatchScore * 100 + RandomFactor`. Here each term is on a known
scale, so the weights say how much each may move a video:
- heat: the video's heat score (docs/heat-score.md: the backend's replacement for raw views)
  divided by the hottest candidate's, so 0..1;
- match: the cosine similarity of the user's and the video's embeddings, -1..1 (0 without one);
- explore: a uniform draw in [0, 1) per video and request: the seed's RandomFactor, bounded by
  its weight, so that videos just below the top get their turn and new ones get seen.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Weights:
    heat: float
    match: float
    explore: float


@dataclass(frozen=True)
class Scored:
    video_id: str
    score: float
    heat: float
    match: float
    explore: float


def rank(matches: Mapping[str, float], heat: Mapping[str, float], weights: Weights, limit: int,
         draw: Callable[[], float], eligible: Callable[[str], bool] = lambda _: True,
         excluded: Collection[str] = ()) -> list[Scored]:
    """The best `limit` of the candidates (the videos in `matches` or `heat`) that are `eligible`
    and not `excluded`, best first (ties by video_id)."""
    hottest = max((value for value in heat.values() if value > 0), default=0.0)
    scored = []
    for video_id in dict.fromkeys([*matches, *heat]):
        if video_id in excluded or not eligible(video_id):
            continue
        hot = heat.get(video_id, 0.0) / hottest if hottest > 0 else 0.0
        match = matches.get(video_id, 0.0)
        explore = draw()
        score = weights.heat * hot + weights.match * match + weights.explore * explore
        scored.append(Scored(video_id, score, hot, match, explore))
    scored.sort(key=lambda item: (-item.score, item.video_id))
    return scored[:limit]
