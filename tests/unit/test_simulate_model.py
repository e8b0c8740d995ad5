"""Properties of the pure traffic model (producers/simulate.py) on fixed seeds; no I/O."""

from __future__ import annotations

import uuid
from collections import defaultdict
from typing import Any

import pytest

from producers.simulate import COMPLETED_FRACTION, DEFAULT_START_MS, TrafficModel

TICK_MS = 5000
HOURS_2_MS = 2 * 3600 * 1000
# The contract's fields per type (API.md), occurred_at and event_id included since the model sets both.
FIELDS = {
    "view": {"type", "event_id", "occurred_at", "video_id", "user_id", "session_id"},
    "like": {"type", "event_id", "occurred_at", "video_id", "user_id"},
    "unlike": {"type", "event_id", "occurred_at", "video_id", "user_id"},
    "watch_tick": {"type", "event_id", "occurred_at", "video_id", "user_id", "session_id", "position_ms",
                   "duration_ms"},
}

Event = dict[str, Any]


def _stream(seed: int, users: int = 30, videos: int = 40, span_ms: int = HOURS_2_MS) -> list[Event]:
    model = TrafficModel(seed, users, videos, tick_interval_s=TICK_MS / 1000, concurrent_sessions=20)
    return model.events_until(DEFAULT_START_MS + span_ms)


@pytest.fixture(scope="module", params=[1, 7, 2024])
def stream(request: pytest.FixtureRequest) -> list[Event]:
    return _stream(request.param)


def _sessions(events: list[Event]) -> dict[str, list[Event]]:
    sessions: dict[str, list[Event]] = defaultdict(list)
    for event in events:
        if "session_id" in event:
            sessions[event["session_id"]].append(event)
    return sessions


def _finished_sessions(events: list[Event]) -> list[list[Event]]:
    """Sessions whose last tick lies well before the end of the stream, so they are over."""
    horizon = events[-1]["occurred_at"] - 2 * TICK_MS
    return [session for session in _sessions(events).values() if session[-1]["occurred_at"] < horizon]


def test_events_have_exactly_the_contract_fields_and_valid_values(stream: list[Event]) -> None:
    assert {event["type"] for event in stream} == set(FIELDS)
    for event in stream:
        assert set(event) == FIELDS[event["type"]], event
        assert uuid.UUID(event["event_id"]).version == 4
        assert isinstance(event["occurred_at"], int) and event["occurred_at"] >= DEFAULT_START_MS
        if event["type"] == "watch_tick":
            assert isinstance(event["position_ms"], int) and isinstance(event["duration_ms"], int)
    assert len({event["event_id"] for event in stream}) == len(stream)


def test_the_stream_is_in_time_order(stream: list[Event]) -> None:
    times = [event["occurred_at"] for event in stream]
    assert times == sorted(times)


def test_every_session_starts_with_a_view_then_only_ticks_on_one_user_and_video(stream: list[Event]) -> None:
    for events in _sessions(stream).values():
        view, ticks = events[0], events[1:]
        assert view["type"] == "view"
        # Only a session begun in the stream's last interval has not ticked yet.
        assert ticks or view["occurred_at"] > DEFAULT_START_MS + HOURS_2_MS - TICK_MS
        assert all(tick["type"] == "watch_tick" for tick in ticks)
        assert {(event["user_id"], event["video_id"]) for event in events} == {(view["user_id"], view["video_id"])}


def test_ticks_are_one_interval_apart_and_positions_never_go_back_or_past_the_end(stream: list[Event]) -> None:
    for events in _sessions(stream).values():
        view, ticks = events[0], events[1:]
        times = [view["occurred_at"]] + [tick["occurred_at"] for tick in ticks]
        assert all(later - earlier == TICK_MS for earlier, later in zip(times, times[1:]))
        positions = [tick["position_ms"] for tick in ticks]
        assert positions == sorted(positions)
        assert all(tick["position_ms"] <= tick["duration_ms"] for tick in ticks)
        assert len({tick["duration_ms"] for tick in ticks}) <= 1
        # Playback runs at normal speed: never more than one interval per tick.
        assert all(later - earlier <= TICK_MS for earlier, later in zip([0] + positions, positions))


def test_a_video_has_one_fixed_duration_between_30_s_and_10_min(stream: list[Event]) -> None:
    durations: dict[str, set[int]] = defaultdict(set)
    for event in stream:
        if event["type"] == "watch_tick":
            durations[event["video_id"]].add(event["duration_ms"])
    assert all(len(values) == 1 and 30_000 <= min(values) <= 600_000 for values in durations.values())


def test_some_but_not_all_sessions_are_completed(stream: list[Event]) -> None:
    finished = _finished_sessions(stream)
    completed = [s for s in finished if s[-1]["position_ms"] >= COMPLETED_FRACTION * s[-1]["duration_ms"]]
    assert len(finished) > 100
    assert 0.2 * len(finished) < len(completed) < 0.9 * len(finished)


def test_some_users_watch_a_video_again_in_a_new_session(stream: list[Event]) -> None:
    sessions_per_pair: dict[tuple[str, str], int] = defaultdict(int)
    for events in _sessions(stream).values():
        sessions_per_pair[(events[0]["user_id"], events[0]["video_id"])] += 1
    assert sum(1 for count in sessions_per_pair.values() if count >= 2) >= 10


def test_likes_and_unlikes_alternate_per_user_and_video_starting_with_a_like(stream: list[Event]) -> None:
    liked: set[tuple[str, str]] = set()
    unlikes = 0
    for event in stream:
        key = (event["user_id"], event["video_id"])
        if event["type"] == "like":
            assert key not in liked, f"liked twice without an unlike: {event}"
            liked.add(key)
        elif event["type"] == "unlike":
            assert key in liked, f"unlike without an earlier like: {event}"
            liked.remove(key)
            unlikes += 1
    assert liked and unlikes > 0


def test_likes_are_for_videos_the_user_has_started_watching(stream: list[Event]) -> None:
    viewed: set[tuple[str, str]] = set()
    for event in stream:
        key = (event["user_id"], event["video_id"])
        if event["type"] == "view":
            viewed.add(key)
        elif event["type"] == "like":
            assert key in viewed, event


def test_the_popularity_is_skewed_towards_a_few_videos() -> None:
    views: dict[str, int] = defaultdict(int)
    for event in _stream(3, users=200, videos=100):
        if event["type"] == "view":
            views[event["video_id"]] += 1
    counts = sorted(views.values(), reverse=True)
    # Zipf with s > 1: the top 10 % of the catalogue take about half of all views.
    assert sum(counts[:10]) > 0.4 * sum(counts)


def test_the_same_seed_gives_the_same_stream_and_another_seed_does_not() -> None:
    assert _stream(11, span_ms=600_000) == _stream(11, span_ms=600_000)
    assert _stream(11, span_ms=600_000) != _stream(12, span_ms=600_000)


def test_pulling_in_steps_gives_the_same_stream_as_pulling_at_once() -> None:
    model = TrafficModel(5, 30, 40, concurrent_sessions=20)
    stepped = [event for step in range(1, 121) for event in model.events_until(DEFAULT_START_MS + step * 5_000)]
    assert stepped == _stream(5, span_ms=600_000)
    assert stepped and all(event["occurred_at"] <= DEFAULT_START_MS + 600_000 for event in stepped)


@pytest.mark.parametrize("rate", [5.0, 50.0])
def test_for_rate_sizes_the_model_to_produce_about_the_rate(rate: float) -> None:
    model = TrafficModel.for_rate(rate, seed=9, users=500, videos=200)
    warmup = model.events_until(DEFAULT_START_MS + 600_000)
    steady = model.events_until(DEFAULT_START_MS + 1_800_000)
    assert warmup
    assert len(steady) / 1200 == pytest.approx(rate, rel=0.15)


def test_invalid_sizes_are_refused() -> None:
    with pytest.raises(ValueError):
        TrafficModel(1, users=0, videos=10)
    with pytest.raises(ValueError):
        TrafficModel(1, users=10, videos=10, tick_interval_s=0)
