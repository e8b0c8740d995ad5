"""The heat score formula: the worked example of docs/heat-score.md, its terms, monotonicity (pure)."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from processors.heat_score.score import MAX_WINDOW_MS, WINDOWS, ScoreWeights, WindowStats, heat_score
from tests.unit.test_heat_processor import WORKED_1H, WORKED_24H

HALF_LIFE_S = 21_600.0  # LUSTRAX_HEAT_HALF_LIFE_S default: 6 h
ZERO = WindowStats(views=0, unique_viewers=0, sessions=0, net_likes=0, completion_rate=0.0,
                   avg_watched_fraction=0.0, rewatch_rate=0.0)


def score(stats: WindowStats, age_s: float = 0.0, weights: ScoreWeights = ScoreWeights()) -> float:
    return heat_score(stats, age_s=age_s, half_life_s=HALF_LIFE_S, weights=weights)


def test_the_worked_example_of_the_doc() -> None:
    # Published 3 h before T: half a half-life, decay 2 ** -0.5.
    assert score(WORKED_1H, age_s=3 * 3600) == pytest.approx(2.777398073, abs=1e-9)
    assert score(WORKED_24H, age_s=3 * 3600) == pytest.approx(3.838289649, abs=1e-9)
    # The terms, as the doc spells them out for the 1 h window.
    reach = math.log(4) * (1 + 0.5 + 1 / 3)
    likes = 2 * math.log(2)
    assert reach == pytest.approx(2.541540)
    assert score(WORKED_1H) == pytest.approx(reach + likes)


def test_no_engagement_scores_zero() -> None:
    assert score(ZERO) == 0.0
    assert score(replace(ZERO, views=5000, sessions=5000)) == 0.0  # views alone are not counted


def test_the_score_halves_every_half_life() -> None:
    stats = replace(ZERO, unique_viewers=100)
    assert score(stats, HALF_LIFE_S) == pytest.approx(score(stats) / 2)
    assert score(stats, 4 * HALF_LIFE_S) == pytest.approx(score(stats) / 16)
    assert score(stats, -3600) == score(stats)  # a clock-skewed negative age is no boost


def test_reach_is_log_damped() -> None:
    hundred, ten_thousand = score(replace(ZERO, unique_viewers=100)), score(replace(ZERO, unique_viewers=10_000))
    assert ten_thousand == pytest.approx(hundred * math.log1p(10_000) / math.log1p(100))
    assert ten_thousand < 2.01 * hundred  # 100x the audience, about 2x the heat


def test_completion_and_rewatch_boost_the_reach() -> None:
    base = replace(ZERO, unique_viewers=100)
    assert score(replace(base, completion_rate=1.0)) == pytest.approx(2 * score(base))
    assert score(replace(base, completion_rate=1.0, rewatch_rate=1.0)) == pytest.approx(3 * score(base))


def test_net_likes_can_pull_the_score_down_but_not_below_zero() -> None:
    base = replace(ZERO, unique_viewers=100)
    assert score(replace(base, net_likes=-3)) == pytest.approx(score(base) - 2 * math.log1p(3))
    assert score(replace(base, net_likes=-10_000_000)) == 0.0
    assert score(replace(ZERO, net_likes=50)) == pytest.approx(2 * math.log1p(50))


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError):
        ScoreWeights(likes=-1.0)
    with pytest.raises(ValueError):
        ScoreWeights(reach=math.nan)
    with pytest.raises(ValueError):
        heat_score(ZERO, age_s=0, half_life_s=0)


def test_windows() -> None:
    assert dict(WINDOWS) == {"1h": 3_600_000, "24h": 86_400_000}
    assert max(WINDOWS.values()) == MAX_WINDOW_MS


_counts = st.integers(0, 10**9)
_rates = st.floats(0.0, 1.0)
_stats = st.builds(WindowStats, views=_counts, unique_viewers=_counts, sessions=_counts,
                   net_likes=st.integers(-10**9, 10**9), completion_rate=_rates, avg_watched_fraction=_rates,
                   rewatch_rate=_rates)
_weights = st.builds(ScoreWeights, reach=st.floats(0, 10), completion=st.floats(0, 10), rewatch=st.floats(0, 10),
                     likes=st.floats(0, 10))
_ages = st.floats(-1e6, 1e9)


@given(stats=_stats, weights=_weights, age_s=_ages, more=st.integers(0, 10**9), rate_up=_rates)
def test_more_engagement_never_lowers_the_score(stats: WindowStats, weights: ScoreWeights, age_s: float,
                                                more: int, rate_up: float) -> None:
    before = score(stats, age_s, weights)
    assert before >= 0.0
    for better in (
        replace(stats, views=stats.views + more),
        replace(stats, unique_viewers=stats.unique_viewers + more),
        replace(stats, sessions=stats.sessions + more),
        replace(stats, net_likes=stats.net_likes + more),
        replace(stats, completion_rate=max(stats.completion_rate, rate_up)),
        replace(stats, rewatch_rate=max(stats.rewatch_rate, rate_up)),
        replace(stats, avg_watched_fraction=max(stats.avg_watched_fraction, rate_up)),
    ):
        assert score(better, age_s, weights) >= before


@given(stats=_stats, weights=_weights, age_s=_ages, later=st.floats(0, 1e9))
def test_getting_older_never_raises_the_score(stats: WindowStats, weights: ScoreWeights, age_s: float,
                                              later: float) -> None:
    assert score(stats, age_s + later, weights) <= score(stats, age_s, weights)
