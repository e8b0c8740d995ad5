"""Rolling per-video state: windows, duplicates, order, pruning and the size bound (pure)."""

from __future__ import annotations

import json
import random
from collections import defaultdict
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processors.heat_score.state import (
    BUCKET_MS,
    MAX_ACTIONS_PER_USER,
    MAX_LIKERS,
    MAX_SEEN_IDS,
    MAX_SESSIONS,
    MAX_SESSIONS_PER_USER,
    MAX_VIEWS_PER_SESSION,
    MAX_WINDOW_MS,
    RETENTION_MS,
    VideoState,
    WindowStats,
    apply_like,
    apply_tick,
    apply_view,
    new_video_state,
    window_stats,
    windows_stats,
)

MIN = 60_000
HOUR = 60 * MIN
T = 1_767_225_600_000  # 2026-01-01T00:00Z, a multiple of BUCKET_MS

# An event: ("view", event_id, user, session, at) | ("tick", event_id, user, session, at, position,
# duration) | ("like", event_id, user, like, at).
Event = tuple[Any, ...]

# The worked example of docs/heat-score.md: times relative to T, a 10-minute video.
WORKED_EXAMPLE: list[Event] = [
    ("view", "e1", "alice", "a1", T - 50 * MIN),
    ("tick", "e3", "alice", "a1", T - 40 * MIN, 600_000, 600_000),  # delivered before e2
    ("tick", "e2", "alice", "a1", T - 45 * MIN, 300_000, 600_000),
    ("view", "e4", "alice", "a2", T - 20 * MIN),
    ("tick", "e5", "alice", "a2", T - 15 * MIN, 300_000, 600_000),
    ("view", "e6", "bob", "b1", T - 30 * MIN),
    ("view", "e6", "bob", "b1", T - 30 * MIN),  # redelivered
    ("tick", "e7", "bob", "b1", T - 21 * MIN, 540_000, 600_000),
    ("view", "e8", "carol", "c1", T - 120 * MIN),
    ("tick", "e9", "carol", "c1", T - 110 * MIN, 120_000, 600_000),
    ("view", "e10", "dave", "d1", T - 10 * MIN),
    ("like", "l1", "alice", True, T - 45 * MIN),
    ("like", "l2", "bob", True, T - 25 * MIN),
    ("like", "l3", "bob", False, T - 24 * MIN),
    ("like", "l4", "bob", True, T - 23 * MIN),
    ("like", "l5", "carol", True, T - 180 * MIN),
    ("like", "l6", "carol", False, T - 5 * MIN),
    ("like", "l7", "dave", True, T - 70 * MIN),
]
WORKED_1H = WindowStats(views=4, unique_viewers=3, sessions=4, net_likes=1, completion_rate=0.5,
                        avg_watched_fraction=0.6, rewatch_rate=1 / 3)
WORKED_24H = WindowStats(views=5, unique_viewers=4, sessions=5, net_likes=3, completion_rate=0.4,
                         avg_watched_fraction=0.52, rewatch_rate=0.25)


def apply(state: VideoState, event: Event) -> bool:
    kind, event_id, user = event[:3]
    if kind == "view":
        return apply_view(state, event_id=event_id, user_id=user, session_id=event[3], at_ms=event[4])
    if kind == "tick":
        return apply_tick(state, event_id=event_id, user_id=user, session_id=event[3], at_ms=event[4],
                          position_ms=event[5], duration_ms=event[6])
    return apply_like(state, event_id=event_id, user_id=user, like=event[3], at_ms=event[4])


def feed(events: list[Event], *, roundtrip: bool = False) -> tuple[VideoState, list[bool]]:
    state = new_video_state()
    applied = []
    for event in events:
        applied.append(apply(state, event))
        if roundtrip:  # as a Faust table with the json serializer would store it between events
            state = json.loads(json.dumps(state))
    return state, applied


def session_records(state: VideoState) -> int:
    return sum(len(sessions) for sessions in state["viewers"].values())


def assert_stats(actual: WindowStats, expected: WindowStats) -> None:
    assert actual.views == expected.views
    assert actual.unique_viewers == expected.unique_viewers
    assert actual.sessions == expected.sessions
    assert actual.net_likes == expected.net_likes
    assert actual.completion_rate == pytest.approx(expected.completion_rate)
    assert actual.avg_watched_fraction == pytest.approx(expected.avg_watched_fraction)
    assert actual.rewatch_rate == pytest.approx(expected.rewatch_rate)


def test_the_worked_example_of_the_doc() -> None:
    state, applied = feed(WORKED_EXAMPLE, roundtrip=True)
    assert applied.count(False) == 1 and applied[6] is False  # only the redelivered view
    assert_stats(window_stats(state, HOUR, T), WORKED_1H)
    assert_stats(window_stats(state, MAX_WINDOW_MS, T), WORKED_24H)


def test_several_windows_in_one_pass_are_each_their_own() -> None:
    state, _ = feed(WORKED_EXAMPLE, roundtrip=True)
    one_hour, one_day = windows_stats(state, (HOUR, MAX_WINDOW_MS), T)
    assert_stats(one_hour, WORKED_1H)
    assert_stats(one_day, WORKED_24H)
    assert windows_stats(state, (MAX_WINDOW_MS, HOUR), T) == [one_day, one_hour]


def test_an_empty_window_is_all_zero() -> None:
    empty = WindowStats(0, 0, 0, 0, 0.0, 0.0, 0.0)
    assert window_stats(new_video_state(), HOUR, T) == empty
    state, _ = feed(WORKED_EXAMPLE)
    assert window_stats(state, HOUR, T + 5 * HOUR) == empty


def test_window_bounds_are_half_open() -> None:
    start = T - HOUR
    state, _ = feed([("view", "in-first", "u1", "s1", start), ("view", "out-before", "u2", "s2", start - 1),
                     ("view", "in-last", "u3", "s3", T - 1), ("view", "out-at-end", "u4", "s4", T)])
    stats = window_stats(state, HOUR, T)
    assert (stats.views, stats.sessions, stats.unique_viewers) == (2, 2, 2)


def test_a_session_belongs_to_every_window_its_span_overlaps() -> None:
    state, _ = feed([
        ("view", "v1", "u1", "spans", T - 2 * HOUR),  # started before the window, still playing after
        ("tick", "t1", "u1", "spans", T + MIN, 60_000, 600_000),
        ("view", "v2", "u2", "ended", T - 2 * HOUR),  # last activity just before the window
        ("tick", "t2", "u2", "ended", T - HOUR - 1, 60_000, 600_000),
        ("view", "v3", "u3", "touches", T - 2 * HOUR),  # last activity exactly at its start
        ("tick", "t3", "u3", "touches", T - HOUR, 60_000, 600_000),
    ])
    stats = window_stats(state, HOUR, T)
    assert stats.sessions == 2 and stats.views == 0  # the views themselves are outside
    assert stats.avg_watched_fraction == pytest.approx(0.1)


def test_window_length_is_checked() -> None:
    with pytest.raises(ValueError):
        window_stats(new_video_state(), MAX_WINDOW_MS + 1, T)
    with pytest.raises(ValueError):
        window_stats(new_video_state(), 0, T)


def test_a_duplicate_event_id_is_ignored_whatever_its_kind() -> None:
    state, applied = feed([("view", "e1", "u1", "s1", T - MIN), ("view", "e1", "u1", "s1", T - MIN),
                           ("tick", "e1", "u1", "s1", T - MIN, 600_000, 600_000),
                           ("like", "e1", "u1", True, T - MIN)])
    assert applied == [True, False, False, False]
    stats = window_stats(state, HOUR, T)
    assert (stats.views, stats.completion_rate, stats.net_likes) == (1, 0.0, 0)


def test_a_duplicate_older_than_the_remembered_ids_changes_nothing() -> None:
    events: list[Event] = [("view", "first", "u1", "s1", T - HOUR // 2),
                           ("tick", "tick", "u1", "s1", T - HOUR // 2, 300_000, 600_000),
                           ("like", "like", "u1", True, T - HOUR // 2)]
    events += [("view", f"other-{i}", f"v{i}", f"o{i}", T - MIN) for i in range(MAX_SEEN_IDS)]
    state, _ = feed(events)
    before = window_stats(state, HOUR, T)
    # The ids fell out of `seen`: the events are applied again, and change nothing.
    assert [apply(state, event) for event in events[:3]] == [True, True, True]
    assert window_stats(state, HOUR, T) == before
    assert len(state["seen"]) == MAX_SEEN_IDS


def test_out_of_order_ticks_give_the_same_session() -> None:
    ticks: list[Event] = [("tick", f"t{i}", "u1", "s1", T - HOUR + i * 5000, i * 5000, 600_000)
                          for i in range(1, 121)]
    in_order, _ = feed([("view", "v", "u1", "s1", T - HOUR), *ticks])
    reversed_, _ = feed([*reversed(ticks), ("view", "v", "u1", "s1", T - HOUR)])
    assert window_stats(in_order, HOUR, T) == window_stats(reversed_, HOUR, T)
    assert window_stats(in_order, HOUR, T).completion_rate == 1.0


def test_an_event_older_than_the_retention_is_refused() -> None:
    state, applied = feed([("view", "now", "u1", "s1", T), ("view", "late", "u2", "s2", T - RETENTION_MS - 1),
                           ("view", "just-in-time", "u3", "s3", T - RETENTION_MS)])
    assert applied == [True, False, True]


def net_likes(events: list[Event], window_ms: int = HOUR) -> int:
    state, _ = feed(events)
    return window_stats(state, window_ms, T).net_likes


def test_net_likes_is_the_change_of_the_like_count_over_the_window() -> None:
    assert net_likes([("like", "1", "u", True, T - MIN)]) == 1
    assert net_likes([("like", "1", "u", True, T - 30 * MIN), ("like", "2", "u", False, T - MIN)]) == 0
    # Liked before the window, taken back inside it.
    assert net_likes([("like", "1", "u", True, T - 2 * HOUR), ("like", "2", "u", False, T - MIN)]) == -1
    # An unlike whose like the state never saw (older than the retention) takes one back too.
    assert net_likes([("like", "1", "u", False, T - MIN)]) == -1
    # A repeated like is no change.
    assert net_likes([("like", "1", "u", True, T - 30 * MIN), ("like", "2", "u", True, T - MIN)]) == 1
    # A like and an unlike at the same millisecond: the unlike wins, in any order.
    same_ms: list[Event] = [("like", "2", "u", True, T - MIN), ("like", "3", "u", False, T - MIN)]
    liked_before = ("like", "1", "u", True, T - 30 * MIN)
    assert net_likes([liked_before, *same_ms], 10 * MIN) == -1
    assert net_likes([liked_before, *same_ms[::-1]], 10 * MIN) == -1


def test_a_late_like_action_can_make_a_later_one_a_change() -> None:
    # Arrival: like@10, like@20 (no change), then the late unlike@15: like, unlike, like.
    events: list[Event] = [("like", "a", "u", True, T - 50 * MIN), ("like", "c", "u", True, T - 40 * MIN),
                           ("like", "b", "u", False, T - 45 * MIN)]
    assert net_likes(events) == 1
    state, _ = feed(events)
    assert window_stats(state, 47 * MIN, T).net_likes == 0  # the unlike and the like again
    assert window_stats(state, 42 * MIN, T).net_likes == 1  # only the like again


def test_a_like_spammer_moves_net_likes_by_one_at_most() -> None:
    toggles: list[Event] = [("like", f"l{i}", "spammer", i % 2 == 0, T - HOUR + i * 1000) for i in range(3000)]
    state, _ = feed(toggles)  # ends with an unlike (i = 2999 is odd)
    assert len(state["likes"]["spammer"][2]) == MAX_ACTIONS_PER_USER
    for window_ms in (HOUR, 10 * MIN, MIN, 3 * HOUR):
        assert window_stats(state, window_ms, T).net_likes in (-1, 0, 1)
    assert window_stats(state, 3 * HOUR, T).net_likes == 0  # unliked at the start, unliked at the end
    # Its older actions were folded away: a late one from that stretch is refused, not re-counted.
    assert not apply_like(state, event_id="late", user_id="spammer", like=True, at_ms=T - HOUR + 500)


def test_beyond_the_session_cap_counts_stay_exact() -> None:
    count = 3 * MAX_SESSIONS
    events: list[Event] = []
    for i in range(count):
        at = T - HOUR + i * 1000
        events.append(("view", f"v{i}", f"u{i}", f"s{i}", at))
        events.append(("tick", f"t{i}", f"u{i}", f"s{i}", at + 500, 600_000 if i % 2 else 60_000, 600_000))
    state, _ = feed(events)
    assert session_records(state) <= MAX_SESSIONS and state["folded"] and state["level"] >= 1
    for window_ms in (HOUR, MAX_WINDOW_MS):  # T - HOUR is a bucket boundary
        stats = window_stats(state, window_ms, T)
        assert (stats.sessions, stats.views, stats.rewatch_rate) == (count, count, 0.0)
        assert stats.unique_viewers == pytest.approx(count, rel=0.1)  # from the user sample
        assert stats.completion_rate == pytest.approx(0.5)
        assert stats.avg_watched_fraction == pytest.approx(0.55)


def test_beyond_the_liker_cap_net_likes_stay_exact() -> None:
    count = 4 * MAX_LIKERS
    events: list[Event] = [("like", f"l{i}", f"u{i}", True, T - HOUR + i * 1000) for i in range(count)]
    events += [("like", f"x{i}", f"u{i}", False, T - HOUR + count * 1000 + i) for i in range(0, count, 4)]
    state, _ = feed(events)
    assert len(state["likes"]) <= MAX_LIKERS
    assert window_stats(state, HOUR, T).net_likes == count - count // 4


def test_the_sampling_level_comes_back_down_when_traffic_drops() -> None:
    busy: list[Event] = [("view", f"v{i}", f"u{i}", f"s{i}", T + i * 1000) for i in range(3 * MAX_SESSIONS)]
    state, _ = feed(busy)
    assert state["level"] >= 1
    # A day and a half later the busy hour is gone: every user is sampled again.
    quiet: list[Event] = [("view", f"q{i}", f"q{i % 3}", f"qs{i}", T + 36 * HOUR + i * MIN) for i in range(10)]
    for event in quiet:
        apply(state, event)
    assert state["level"] == 0 and session_records(state) == 10 and not state["folded"]
    stats = window_stats(state, HOUR, T + 37 * HOUR)
    assert (stats.sessions, stats.unique_viewers, stats.rewatch_rate) == (10, 3, 1.0)


def test_a_bot_cannot_fill_the_sample() -> None:
    state, _ = feed([("view", f"v{i}", "bot", f"s{i}", T - HOUR + i * 1000) for i in range(100)])
    assert session_records(state) == MAX_SESSIONS_PER_USER
    stats = window_stats(state, HOUR, T)
    assert (stats.sessions, stats.views, stats.unique_viewers, stats.rewatch_rate) == (100, 100, 1, 1.0)


def test_views_beyond_the_per_session_cap_are_still_counted() -> None:
    state, _ = feed([("view", f"v{i}", "u", "s", T - HOUR + i * 1000) for i in range(100)])
    assert len(state["viewers"]["u"]["s"][4]) == MAX_VIEWS_PER_SESSION
    assert window_stats(state, HOUR, T).views == 100


def reference_stats(events: list[Event], window_ms: int, now: int) -> WindowStats:
    """The definitions of docs/heat-score.md applied to every event ever seen (no pruning)."""
    start = now - window_ms
    unique = {event[1]: event for event in events}.values()
    spans: dict[str, list[Any]] = {}
    views: set[tuple[str, int]] = set()  # one view per session and millisecond
    changes = 0
    likes_by_user: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for event in unique:
        if event[0] == "like":
            likes_by_user[event[2]].append((event[4], -int(event[3])))
            continue
        at = event[4]
        span = spans.setdefault(event[3], [event[2], at, at, 0, 0])
        span[1], span[2] = min(span[1], at), max(span[2], at)
        if event[0] == "view":
            if start <= at < now:
                views.add((event[3], at))
        else:
            span[3], span[4] = max(span[3], event[5]), max(span[4], event[6])
    for actions in likes_by_user.values():
        state = None
        for at, negated in sorted(actions):
            if -negated != state:
                changes += (1 if negated else -1) if start <= at < now else 0
                state = -negated
    inside = [span for span in spans.values() if span[1] < now and span[2] >= start]
    per_user: dict[str, int] = defaultdict(int)
    for span in inside:
        per_user[span[0]] += 1
    n = len(inside)
    return WindowStats(
        views=len(views), unique_viewers=len(per_user), sessions=n, net_likes=changes,
        completion_rate=sum(s[4] > 0 and s[3] * 10 >= s[4] * 9 for s in inside) / n if n else 0.0,
        avg_watched_fraction=sum(min(1.0, s[3] / s[4]) if s[4] else 0.0 for s in inside) / n if n else 0.0,
        rewatch_rate=sum(c >= 2 for c in per_user.values()) / len(per_user) if per_user else 0.0)


def three_days_of_traffic(events_total: int, events_per_session: int, users: int, seed: int) -> list[Event]:
    """Sessions (a view, then a tick every 5 s) spread over 3 days; likes and unlikes that follow
    each user's own like state; delivered up to 3 s out of order, 1 % of them twice."""
    rng = random.Random(seed)
    # Sessions start in time order, so each user's likes and unlikes alternate in time too.
    mean_gap = 3 * 24 * HOUR * events_per_session // events_total
    events: list[Event] = []
    liked: dict[str, bool] = {}
    at = T
    n = 0
    while len(events) < events_total:
        n += 1
        at += rng.randrange(2 * mean_gap)
        user, session = f"user-{rng.randrange(users)}", f"session-{n}"
        duration = rng.randrange(60_000, 1_200_000)
        events.append(("view", f"v-{n}", user, session, at))
        for k in range(1, events_per_session):
            events.append(("tick", f"t-{n}-{k}", user, session, at + 5000 * k,
                           min(duration, rng.randrange(5000 * k, 10_000 * k)), duration))
        if rng.random() < 0.3:
            liked[user] = not liked.get(user, False)
            events.append(("like", f"l-{n}", user, liked[user], at + 5000 * events_per_session))
    events.sort(key=lambda event: event[4] + rng.randrange(3000))
    for i in range(0, len(events), 100):
        events.insert(min(len(events), i + rng.randrange(1, 50)), events[i])
    return events[:events_total]


@pytest.mark.parametrize(("events_per_session", "users", "exact"), [(100, 300, True), (6, 20_000, False)],
                         ids=["quiet-below-the-caps", "busy-over-the-caps"])
def test_three_days_of_events_keep_the_state_bounded(events_per_session: int, users: int, exact: bool) -> None:
    events = three_days_of_traffic(100_000, events_per_session, users, seed=events_per_session)
    state = new_video_state()
    sizes_by_day: dict[int, int] = defaultdict(int)
    for i, event in enumerate(events, 1):
        apply(state, event)
        if i % 2000:
            continue
        state = json.loads(json.dumps(state))
        day = (state["wm"] - T) // (24 * HOUR)
        sizes_by_day[day] = max(sizes_by_day[day], len(json.dumps(state)))
        assert session_records(state) <= MAX_SESSIONS and len(state["likes"]) <= MAX_LIKERS
        assert len(state["folded"]) <= RETENTION_MS // BUCKET_MS + 2
        if i % 20_000 == 0:
            now = state["wm"] - state["wm"] % BUCKET_MS  # folded data is exact at bucket bounds
            for window_ms in (HOUR, MAX_WINDOW_MS):
                actual, expected = window_stats(state, window_ms, now), reference_stats(events[:i], window_ms, now)
                if exact:
                    assert_stats(actual, expected)
                else:  # unique viewers and re-watches come from the 1-in-2**level user sample
                    assert actual.unique_viewers == pytest.approx(expected.unique_viewers, rel=0.15)
                    assert actual.rewatch_rate == pytest.approx(expected.rewatch_rate, abs=0.03)
                    assert_stats(actual, replace(expected, unique_viewers=actual.unique_viewers,
                                                 rewatch_rate=actual.rewatch_rate))
    # Day 0 fills the 24 h; days 1 and 2 replace old data instead of adding to it.
    assert max(sizes_by_day[1], sizes_by_day[2]) <= 1.5 * sizes_by_day[0]
    assert max(sizes_by_day.values()) < 1_000_000


def test_worst_case_size_with_the_longest_ids() -> None:
    # Ids of 128 characters (the ingest API's limit), every cap full: below 1 MB, Kafka's default
    # message.max.bytes, so the state fits one changelog record.
    def long(prefix: str, i: int) -> str:
        return f"{prefix}{i}".ljust(128, "x")

    state = new_video_state()
    day_start = T
    # Single-view sessions every 30 s of a day: the older ones are folded, one bucket per 5 min.
    for i in range(24 * 120):
        at = day_start + i * 30_000
        apply_view(state, event_id=long("f", i), user_id=long("f", i), session_id=long("f", i), at_ms=at)
    # Then full sessions (every view slot used, a tick) until the session map is full again.
    i = 0
    while i < MAX_SESSIONS or session_records(state) < MAX_SESSIONS:
        at = day_start + 24 * HOUR - 30 * MIN + i * 1000
        for k in range(MAX_VIEWS_PER_SESSION):
            apply_view(state, event_id=long("v", i * 100 + k), user_id=long("u", i), session_id=long("s", i),
                       at_ms=at + k)
        apply_tick(state, event_id=long("t", i), user_id=long("u", i), session_id=long("s", i),
                   position_ms=123_456_789, duration_ms=987_654_321, at_ms=at + 999)
        i += 1
    for i in range(MAX_LIKERS):
        for k in range(MAX_ACTIONS_PER_USER):
            apply_like(state, event_id=long("l", i * 100 + k), user_id=long("u", i), like=k % 2 == 0,
                       at_ms=day_start + 23 * HOUR + i * 1000 + k)
    assert session_records(state) == MAX_SESSIONS and len(state["likes"]) == MAX_LIKERS
    assert len(state["folded"]) >= 23 * 12 and len(state["seen"]) == MAX_SEEN_IDS
    assert len(json.dumps(state)) < 1_000_000


_users = st.sampled_from(["u0", "u1", "u2"])
_times = st.integers(T - 2 * HOUR, T)
_sessions = st.sampled_from(["s0", "s1", "s2", "s3"])


@st.composite
def _event_lists(draw: st.DrawFn) -> list[Event]:
    # At most 8 views and 8 like actions: below the per-session and per-user caps, so exact.
    def session_event(kind: str) -> Event:
        session = draw(_sessions)
        user = f"u{int(session[1]) % 3}"  # a session always belongs to the same user
        if kind == "view":
            return ("view", "", user, session, draw(_times))
        return ("tick", "", user, session, draw(_times), draw(st.integers(0, 700_000)), 600_000)

    events = [session_event("view") for _ in range(draw(st.integers(0, 8)))]
    events += [session_event("tick") for _ in range(draw(st.integers(0, 10)))]
    events += [("like", "", draw(_users), draw(st.booleans()), draw(_times))
               for _ in range(draw(st.integers(0, 8)))]
    return [(event[0], f"e{i}", *event[2:]) for i, event in enumerate(events)]


@settings(max_examples=300, deadline=None)
@given(events=_event_lists(), data=st.data())
def test_order_duplicates_and_json_do_not_change_the_stats(events: list[Event], data: st.DataObject) -> None:
    # Within the caps (at most 24 events per video), any delivery order with any redeliveries,
    # with or without a JSON round trip between events, gives the definitions' exact figures.
    redelivered = data.draw(st.lists(st.sampled_from(events), max_size=6)) if events else []
    delivery = data.draw(st.permutations(events + redelivered))
    in_order, _ = feed(events)
    shuffled, applied = feed(delivery, roundtrip=True)
    assert applied.count(False) == len(redelivered)
    for window_ms in (HOUR, 30 * MIN, MAX_WINDOW_MS):
        expected = reference_stats(events, window_ms, T + 1)
        assert_stats(window_stats(in_order, window_ms, T + 1), expected)
        assert_stats(window_stats(shuffled, window_ms, T + 1), expected)
