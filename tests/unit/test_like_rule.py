"""When `like_update` is broadcast: 1-2-5 steps, relative change, rate limit, first count (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from processors.heat_score.like_rule import LikeBroadcastRule, decide, like_delta, step_floor

RULE = LikeBroadcastRule()  # 5 s, 10 %
LATER = 100.0  # far enough after a broadcast at 0.0 for the interval not to matter


def changed(last: int, new: int, now_s: float = LATER) -> bool:
    return decide(RULE, last, 0.0, new, now_s)


def test_defaults_match_the_settings() -> None:
    assert (RULE.min_interval_s, RULE.min_relative_change) == (5.0, 0.1)


@pytest.mark.parametrize(("count", "step"), [
    (-3, 0), (0, 0), (1, 1), (2, 2), (4, 2), (5, 5), (9, 5), (10, 10), (19, 10), (20, 20), (49, 20), (50, 50),
    (99, 50), (100, 100), (199, 100), (999_999, 500_000), (10**12, 10**12), (10**12 - 1, 5 * 10**11),
])
def test_step_floor(count: int, step: int) -> None:
    assert step_floor(count) == step


def test_the_first_non_zero_count_is_broadcast() -> None:
    assert decide(RULE, None, None, 1, 0.0)
    assert decide(RULE, None, None, 37, 0.0)
    assert not decide(RULE, None, None, 0, 0.0)


@pytest.mark.parametrize(("last", "new"), [(1990, 2000), (1999, 2000), (4999, 5000), (9999, 10_000),
                                           (99_999, 100_000), (19, 20), (49, 50)])
def test_crossing_a_step_upwards_is_broadcast_even_when_small(last: int, new: int) -> None:
    assert changed(last, new)
    assert changed(new, last)  # and downwards


def test_dropping_to_zero_is_broadcast() -> None:
    assert changed(1, 0)
    assert changed(3, 0)


def test_relative_change_without_a_step() -> None:
    assert not changed(2100, 2300)  # 9.5 %, between the steps 2000 and 5000
    assert changed(2100, 2310)  # 10 %
    assert changed(3000, 2700)  # -10 %
    assert not changed(3000, 2701)
    assert changed(6, 7)  # a small count moves by more than 10 % with each like


def test_an_unchanged_count_is_never_broadcast() -> None:
    assert not changed(2000, 2000, now_s=10**6)
    assert not changed(1, 1)


def test_at_most_one_broadcast_per_interval() -> None:
    assert not changed(1999, 2000, now_s=4.999)
    assert changed(1999, 2000, now_s=5.0)
    assert not changed(1999, 2000, now_s=-10.0)  # a clock that went back waits too
    assert decide(LikeBroadcastRule(min_interval_s=0.0), 1999, 0.0, 2000, 0.0)


def test_delta_is_the_change_since_the_last_broadcast() -> None:
    assert like_delta(None, 7) == 7
    assert like_delta(10, 7) == -3
    assert like_delta(2000, 2000) == 0


def test_bad_rules_are_refused() -> None:
    with pytest.raises(ValueError):
        LikeBroadcastRule(min_interval_s=-1.0)
    with pytest.raises(ValueError):
        LikeBroadcastRule(min_relative_change=float("nan"))


_counts = st.integers(0, 10**7)


@given(last=_counts, new=_counts, elapsed=st.floats(0.0, 4.999))
def test_property_never_within_the_interval(last: int, new: int, elapsed: float) -> None:
    assert not decide(RULE, last, 1000.0, new, 1000.0 + elapsed)


@given(last=_counts, new=_counts)
def test_property_a_crossed_step_is_always_broadcast(last: int, new: int) -> None:
    crossed = any(min(last, new) < step <= max(last, new) for step in _steps_up_to(max(last, new)))
    if crossed:
        assert changed(last, new)
    if changed(last, new):
        assert crossed or abs(new - last) >= 0.1 * last


def _steps_up_to(limit: int) -> list[int]:
    steps, power = [], 1
    while power <= limit:
        steps += [m * power for m in (1, 2, 5) if m * power <= limit]
        power *= 10
    return steps
