"""The heat processor without I/O: windows, exactness at any audience, duplicates and order,
checkpoints, acks, scores due, like updates, eviction, revoke and retention (pure)."""

from __future__ import annotations

import json
import random
from collections import defaultdict
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processors.heat_score.like_rule import LikeBroadcastRule
from processors.heat_score.processor import (
    MAX_LIKE_ACTIONS,
    MAX_SESSIONS_PER_VIEWER,
    MINUTE_MS,
    RETENTION_MS,
    Checkpoint,
    HeatProcessor,
    Limits,
    pair_key,
    video_key,
)
from processors.heat_score.score import MAX_WINDOW_MS, WindowStats, heat_score

MIN = MINUTE_MS
HOUR = 60 * MIN
T = 1_767_225_600_000  # 2026-01-01T00:00Z, a minute boundary
HALF_LIFE_S = 21_600.0
VIDEO = "v"

# ("view", user, session, at) | ("tick", user, session, at, position, duration) | ("like", user, like, at)
Event = tuple[Any, ...]

# The worked example of docs/heat-score.md: times relative to T, a 10-minute video.
WORKED_EXAMPLE: list[Event] = [
    ("view", "alice", "a1", T - 50 * MIN),
    ("tick", "alice", "a1", T - 40 * MIN, 600_000, 600_000),  # delivered before the earlier tick
    ("tick", "alice", "a1", T - 45 * MIN, 300_000, 600_000),
    ("view", "alice", "a2", T - 20 * MIN),
    ("tick", "alice", "a2", T - 15 * MIN, 300_000, 600_000),
    ("view", "bob", "b1", T - 30 * MIN),
    ("view", "bob", "b1", T - 30 * MIN),  # redelivered
    ("tick", "bob", "b1", T - 21 * MIN, 540_000, 600_000),
    ("view", "carol", "c1", T - 120 * MIN),
    ("tick", "carol", "c1", T - 110 * MIN, 120_000, 600_000),
    ("view", "dave", "d1", T - 10 * MIN),
    ("like", "alice", True, T - 45 * MIN),
    ("like", "bob", True, T - 25 * MIN),
    ("like", "bob", False, T - 24 * MIN),
    ("like", "bob", True, T - 23 * MIN),
    ("like", "carol", True, T - 180 * MIN),
    ("like", "carol", False, T - 5 * MIN),
    ("like", "dave", True, T - 70 * MIN),
]
WORKED_1H = WindowStats(views=4, unique_viewers=3, sessions=4, net_likes=1, completion_rate=0.5,
                        avg_watched_fraction=0.6, rewatch_rate=1 / 3)
WORKED_24H = WindowStats(views=5, unique_viewers=4, sessions=5, net_likes=3, completion_rate=0.4,
                         avg_watched_fraction=0.52, rewatch_rate=0.25)


class Harness:
    """A processor over a dict store that holds what a Faust table would: JSON, read back anew."""

    def __init__(self, store: dict[str, str] | None = None, limits: Limits = Limits(), **kwargs: Any) -> None:
        self.store: dict[str, str] = {} if store is None else store
        self.processor = HeatProcessor(self.read, half_life_s=HALF_LIFE_S, limits=limits, **kwargs)
        self.taken = 0
        self.written_keys: list[str] = []

    def read(self, key: str) -> Any:
        value = self.store.get(key)
        return None if value is None else json.loads(value)

    def apply(self, event: Event, video: str = VIDEO, partition: int = 0) -> bool:
        self.taken += 1
        kind, user = event[:2]
        if kind == "view":
            schema, record, at = "VideoView", {"session_id": event[2]}, event[3]
        elif kind == "tick":
            schema, at = "WatchTick", event[3]
            record = {"session_id": event[2], "position_ms": event[4], "duration_ms": event[5]}
        else:
            schema, record, at = "VideoLike", {"action": "LIKE" if event[2] else "UNLIKE"}, event[3]
        return self.processor.apply(schema, {**record, "video_id": video, "user_id": user}, at,
                                    ("token", partition, self.taken), partition)

    def feed(self, events: list[Event], **kwargs: Any) -> list[bool]:
        return [self.apply(event, **kwargs) for event in events]

    def checkpoint(self, now_s: float = 0.0) -> Checkpoint:
        checkpoint = self.processor.checkpoint(now_s)
        for writes in checkpoint.writes.values():
            for key, value in writes:
                self.written_keys.append(key)
                if value is None:
                    self.store.pop(key, None)
                else:
                    self.store[key] = json.dumps(value)
        self.processor.checkpoint_written(checkpoint)
        return checkpoint

    def stats(self, window_ms: int, end_ms: int, video: str = VIDEO) -> WindowStats:
        return self.processor.window_stats(video, 0, window_ms, end_ms)


def assert_stats(actual: WindowStats, expected: WindowStats) -> None:
    assert (actual.views, actual.unique_viewers, actual.sessions, actual.net_likes) == (
        expected.views, expected.unique_viewers, expected.sessions, expected.net_likes)
    assert actual.completion_rate == pytest.approx(expected.completion_rate, abs=1e-12)
    assert actual.avg_watched_fraction == pytest.approx(expected.avg_watched_fraction, abs=1e-8)
    assert actual.rewatch_rate == pytest.approx(expected.rewatch_rate, abs=1e-12)


def reference_stats(events: list[Event], window_ms: int, end: int) -> WindowStats:
    """The definitions of docs/heat-score.md applied to every event ever seen (no pruning)."""
    start = end - window_ms
    spans: dict[str, list[Any]] = {}
    views: set[tuple[str, int]] = set()  # one view per session and millisecond
    likes_by_user: dict[str, set[tuple[int, int]]] = defaultdict(set)
    for event in events:
        if event[0] == "like":
            likes_by_user[event[1]].add((event[3], -int(event[2])))  # an unlike sorts after a like
            continue
        at = event[3]
        span = spans.setdefault(event[2], [event[1], at, 0, 0])
        span[1] = max(span[1], at)
        if event[0] == "view":
            if start <= at < end:
                views.add((event[2], at))
        else:
            span[2], span[3] = max(span[2], event[4]), max(span[3], event[5])
    changes = 0
    for actions in likes_by_user.values():
        state = None
        for at, negated in sorted(actions):
            if -negated != state:
                changes += (1 if negated else -1) if start <= at < end else 0
                state = -negated
    inside = [span for span in spans.values() if start <= span[1] < end]  # by last activity
    per_user: dict[str, int] = defaultdict(int)
    for span in inside:
        per_user[span[0]] += 1
    n = len(inside)
    return WindowStats(
        views=len(views), unique_viewers=len(per_user), sessions=n, net_likes=changes,
        completion_rate=sum(s[3] > 0 and s[2] * 10 >= s[3] * 9 for s in inside) / n if n else 0.0,
        avg_watched_fraction=sum(min(1.0, s[2] / s[3]) if s[3] else 0.0 for s in inside) / n if n else 0.0,
        rewatch_rate=sum(c >= 2 for c in per_user.values()) / len(per_user) if per_user else 0.0)


def test_the_worked_example_of_the_doc() -> None:
    harness = Harness()
    applied = harness.feed(WORKED_EXAMPLE)
    # Unchanged: the redelivered view, and the late tick whose position the earlier one passed.
    assert [n for n, changed in enumerate(applied) if not changed] == [2, 6]
    assert_stats(harness.stats(HOUR, T), WORKED_1H)
    assert_stats(harness.stats(MAX_WINDOW_MS, T), WORKED_24H)
    # The same from what a checkpoint wrote, read by a new processor.
    harness.checkpoint()
    restored = Harness(harness.store)
    assert_stats(restored.stats(HOUR, T), WORKED_1H)
    assert_stats(restored.stats(MAX_WINDOW_MS, T), WORKED_24H)


def test_an_empty_window_is_all_zero() -> None:
    empty = WindowStats(0, 0, 0, 0, 0.0, 0.0, 0.0)
    assert Harness().stats(HOUR, T) == empty
    harness = Harness()
    harness.feed(WORKED_EXAMPLE)
    assert harness.stats(HOUR, T + 5 * HOUR) == empty


def test_window_bounds_are_half_open_minutes() -> None:
    harness = Harness()
    harness.feed([("view", "u1", "s1", T - HOUR), ("view", "u2", "s2", T - HOUR - 1),
                  ("view", "u3", "s3", T - 1), ("view", "u4", "s4", T)])
    stats = harness.stats(HOUR, T)
    assert (stats.views, stats.sessions, stats.unique_viewers) == (2, 2, 2)
    with pytest.raises(ValueError):
        harness.stats(HOUR, T + 1)  # windows end on a minute boundary
    with pytest.raises(ValueError):
        harness.stats(MAX_WINDOW_MS + MIN, T)


def test_a_session_counts_in_the_window_of_its_last_activity() -> None:
    harness = Harness()
    harness.feed([("view", "u", "s", T - 90 * MIN), ("tick", "u", "s", T - 30 * MIN, 1000, 10_000)])
    assert harness.stats(HOUR, T).sessions == 1
    assert harness.stats(HOUR, T - HOUR).sessions == 0  # it moved out of the earlier hour
    assert harness.stats(HOUR, T).views == 0  # the view itself is 90 minutes old


def test_an_event_older_than_the_retention_is_refused() -> None:
    harness = Harness()
    harness.feed([("view", "u", "s", T)])
    assert harness.apply(("view", "u2", "s2", T - RETENTION_MS - 1)) is False
    assert harness.apply(("view", "u2", "s2", T - RETENTION_MS)) is True


def test_net_likes_is_the_change_of_the_like_count_over_the_window() -> None:
    harness = Harness()
    harness.feed([("like", "a", True, T - 2 * HOUR), ("like", "a", False, T - 30 * MIN),
                  ("like", "b", True, T - 20 * MIN), ("like", "b", True, T - 10 * MIN)])
    assert harness.stats(HOUR, T).net_likes == 0  # a -1, b +1 (the repeat is no change)


def test_a_late_like_action_can_make_a_later_one_a_change() -> None:
    harness = Harness()
    harness.feed([("like", "a", True, T - 30 * MIN), ("like", "a", True, T - 10 * MIN)])
    assert harness.stats(HOUR, T).net_likes == 1
    harness.apply(("like", "a", False, T - 20 * MIN))  # arrives late: like, unlike, like
    assert harness.stats(HOUR, T).net_likes == 1
    assert harness.stats(15 * MIN, T).net_likes == 1 and harness.stats(25 * MIN, T - 15 * MIN).net_likes == 0


def test_a_like_spammer_moves_net_likes_by_one_at_most_and_stays_bounded() -> None:
    harness = Harness()
    harness.feed([("like", "spam", k % 2 == 0, T - HOUR + k * 100) for k in range(5 * MAX_LIKE_ACTIONS + 1)])
    assert harness.stats(HOUR, T).net_likes == 1
    harness.checkpoint()
    assert len(harness.read(pair_key(VIDEO, "spam"))["l"][2]) == MAX_LIKE_ACTIONS


def test_a_bot_cannot_grow_one_entry_without_bound() -> None:
    harness = Harness()
    applied = harness.feed([("view", "bot", f"s{k}", T - HOUR + k) for k in range(MAX_SESSIONS_PER_VIEWER + 5)])
    assert applied.count(True) == MAX_SESSIONS_PER_VIEWER
    harness.checkpoint()
    assert len(harness.store[pair_key(VIDEO, "bot")]) < 100_000


def viral_events(viewers: int, seed: int) -> tuple[list[Event], dict[str, int]]:
    """One video: every viewer a session, a fifth of them a second one; a quarter of the sessions
    watched to the end; each session a view and ticks every 5 s of a 20 s clip, in the last hour."""
    rng = random.Random(seed)
    events: list[Event] = []
    sessions = completed = 0
    for v in range(viewers):
        for r in range(2 if v % 5 == 0 else 1):
            start = T - HOUR + rng.randrange(0, 55 * MIN)
            done = rng.random() < 0.25
            reach = 20_000 if done else rng.randrange(5_000, 15_000, 5_000)
            events.append(("view", f"u{v}", f"u{v}-{r}", start))
            events.extend(("tick", f"u{v}", f"u{v}-{r}", start + p, p, 20_000) for p in range(5_000, reach + 1, 5_000))
            sessions, completed = sessions + 1, completed + done
    return events, {"sessions": sessions, "completed": completed}


def test_a_viral_video_of_10000_viewers_is_exact() -> None:
    # Five times the pairs the worker may cache: most entries are evicted and come back from the store.
    events, counts = viral_events(10_000, seed=3)
    events.sort(key=lambda event: event[3])  # as they happen: sessions interleaved
    harness = Harness(limits=Limits(max_cached_pairs=2_000, max_dirty_entries=2_000))
    for n, event in enumerate(events):
        harness.apply(event)
        if n % 4_000 == 0:
            harness.checkpoint()  # with eviction in between: entries come back from the store
    stats = harness.stats(HOUR, T)
    assert stats.unique_viewers == 10_000
    assert stats.sessions == counts["sessions"] == 12_000
    assert stats.rewatch_rate == pytest.approx(2_000 / 10_000, abs=1e-12)
    assert stats.completion_rate == pytest.approx(counts["completed"] / 12_000, abs=1e-12)
    assert stats.views == 12_000


def test_a_checkpoint_writes_only_small_entries_of_what_changed() -> None:
    harness = Harness()
    harness.feed(WORKED_EXAMPLE)
    harness.checkpoint()
    harness.written_keys.clear()
    harness.apply(("tick", "dave", "d1", T - 9 * MIN, 10_000, 600_000))
    harness.checkpoint()
    # dave's entry and the bucket hour it moved in; the video's entry only when its watermark moves.
    assert sorted(key.split("\x00")[0] for key in harness.written_keys) == ["h", "p"]
    assert all(len(value) < 2_000 for value in harness.store.values())
    assert harness.processor.checkpoint_due(1e9) is False  # nothing changed since


def test_acks_wait_for_both_the_checkpoint_and_the_score_and_keep_order() -> None:
    harness = Harness()
    harness.apply(("view", "u1", "s1", T - MIN), partition=0)
    harness.processor.taken(("token", 1, "dead letter"), 1)
    harness.apply(("view", "u2", "s2", T - MIN), video="w", partition=1)
    assert harness.processor.acks() == []
    harness.checkpoint()
    assert harness.processor.acks() == []  # written, not yet scored
    batch = harness.processor.scores_due(T)
    harness.apply(("view", "u3", "s3", T - MIN), partition=0)  # after the batch was made
    harness.processor.scores_sent(batch)
    assert harness.processor.acks() == [("token", 0, 1), ("token", 1, "dead letter"), ("token", 1, 2)]
    harness.checkpoint()
    assert harness.processor.acks() == []  # u3's video has not been scored since
    harness.processor.scores_sent(harness.processor.scores_due(T))
    assert harness.processor.acks() == [("token", 0, 3)]


def test_a_duplicate_only_batch_needs_no_writes_but_still_a_score() -> None:
    harness = Harness()
    harness.apply(("view", "u1", "s1", T - MIN))
    harness.checkpoint()
    harness.processor.scores_sent(harness.processor.scores_due(T))
    assert len(harness.processor.acks()) == 1
    # A restart between checkpoint and score replays the view: unchanged, but due for a score.
    assert harness.apply(("view", "u1", "s1", T - MIN)) is False
    assert harness.processor.checkpoint_due(100.0) is False
    batch = harness.processor.scores_due(T)
    assert [score.video_id for score in batch.scores] == [VIDEO, VIDEO]
    harness.processor.scores_sent(batch)
    assert len(harness.processor.acks()) == 1


def test_scores_due_cover_both_windows_to_the_next_minute() -> None:
    harness = Harness()
    harness.feed(WORKED_EXAMPLE)
    now = T - 30_000  # half a minute before T: the buckets up to T
    batch = harness.processor.scores_due(now)
    by_window = {score.window: score for score in batch.scores}
    assert set(by_window) == {"1h", "24h"}
    first = min(event[-1] if event[0] != "tick" else event[3] for event in WORKED_EXAMPLE)
    for window, expected in (("1h", WORKED_1H), ("24h", WORKED_24H)):
        due = by_window[window]
        assert due.window_end_ms == now  # the scoring time: newer rows, newer window_end
        assert_stats(due.stats, expected)
        assert due.score == pytest.approx(heat_score(due.stats, age_s=(now - first) / 1000, half_life_s=HALF_LIFE_S))
    assert harness.processor.scores_due(now).scores == []  # nothing new since


def test_running_window_sums_match_a_fresh_count_as_time_moves() -> None:
    rng = random.Random(5)
    users = [f"u{rng.randrange(40)}" for _ in range(400)]
    events = [("view", user, f"{user}-{rng.randrange(3)}", T + rng.randrange(0, 30 * HOUR)) for user in users]
    events.sort(key=lambda event: event[3])
    harness = Harness()
    for hour in range(1, 31):
        end = T + hour * HOUR
        harness.feed([event for event in events if end - HOUR <= event[3] < end])
        for window_ms in (HOUR, MAX_WINDOW_MS):
            assert_stats(harness.stats(window_ms, end), reference_stats(
                [event for event in events if event[3] < end], window_ms, end))


def test_like_updates_follow_the_rule() -> None:
    harness = Harness(like_rule=LikeBroadcastRule(min_interval_s=5, min_relative_change=0.1))
    harness.apply(("like", "a", True, T))
    [update] = harness.processor.like_updates_due(100.0, VIDEO)
    assert (update.like_count, update.delta) == (1, 1)
    harness.apply(("like", "b", True, T + 1))
    assert harness.processor.like_updates_due(101.0, VIDEO) == []  # within the interval
    [update] = harness.processor.like_updates_due(106.0)  # the timer's pass, once it has passed
    assert (update.like_count, update.delta) == (2, 1)
    harness.apply(("like", "b", False, T))  # older than b's like: the count stays
    harness.apply(("like", "a", False, T + 2))
    [update] = harness.processor.like_updates_due(200.0)
    assert (update.like_count, update.delta) == (1, -1)


def test_revoke_forgets_memory_and_the_replay_restores_it() -> None:
    store: dict[str, str] = {}
    harness = Harness(store)
    harness.feed(WORKED_EXAMPLE[:8])
    harness.checkpoint()
    harness.feed(WORKED_EXAMPLE[8:])  # not yet written
    in_flight = harness.processor.checkpoint(0.0)
    harness.processor.revoke()
    assert not harness.processor.is_current(in_flight)  # the agent stops writing it
    harness.processor.checkpoint_written(in_flight)
    harness.processor.scores_sent(harness.processor.scores_due(T))
    assert harness.processor.acks() == [] and harness.processor.scores_due(T).scores == []
    assert harness.processor.checkpoint_due(1e9) is False
    # The partition comes back (here or elsewhere): the uncommitted events are replayed, from the
    # first one, onto the written state.
    other = Harness(store)
    other.feed(WORKED_EXAMPLE)
    assert_stats(other.stats(HOUR, T), WORKED_1H)
    assert_stats(other.stats(MAX_WINDOW_MS, T), WORKED_24H)


def test_eviction_keeps_memory_bounded_and_changes_nothing() -> None:
    harness = Harness(limits=Limits(max_cached_pairs=2, max_cached_videos=1))
    for n, event in enumerate(WORKED_EXAMPLE):
        harness.apply(event, video=f"v{n % 3}")
        harness.apply(event)
        harness.checkpoint()
    assert len(harness.processor._pairs) <= 2 and len(harness.processor._videos) <= 1
    assert_stats(harness.stats(HOUR, T), WORKED_1H)


def test_three_days_keep_the_store_to_the_retention() -> None:
    rng = random.Random(9)
    harness = Harness()
    events: list[Event] = []
    for n in range(3000):
        at = T + n * 3 * 24 * HOUR // 3000
        user = f"u{rng.randrange(300)}"
        events.append(("view", user, f"{user}-{n}", at))
        events.append(("tick", user, f"{user}-{n}", at + 5000, rng.randrange(0, 60_000), 60_000))
    harness.feed(events)
    end = (events[-1][3] // MIN + 1) * MIN
    for window_ms in (HOUR, MAX_WINDOW_MS):
        assert_stats(harness.stats(window_ms, end), reference_stats(events, window_ms, end))
    harness.checkpoint()
    hours = [key for key in harness.store if key.startswith("h\x00")]
    assert len(hours) <= 26  # the retention, rounded to hours
    sessions = sum(len(harness.read(key)["s"]) for key in harness.store if key.startswith("p\x00"))
    assert sessions < 3000  # sessions of users seen again are pruned as they come back


_users = st.sampled_from(["u0", "u1", "u2"])
_times = st.integers(T - 2 * HOUR, T)
_sessions = st.sampled_from(["s0", "s1", "s2", "s3"])


@st.composite
def _event_lists(draw: st.DrawFn) -> list[Event]:
    def session_event(kind: str) -> Event:
        session = draw(_sessions)
        user = f"u{int(session[1]) % 3}"  # a session always belongs to the same user
        if kind == "view":
            return ("view", user, session, draw(_times))
        return ("tick", user, session, draw(_times), draw(st.integers(0, 700_000)), 600_000)

    events = [session_event("view") for _ in range(draw(st.integers(0, 8)))]
    events += [session_event("tick") for _ in range(draw(st.integers(0, 10)))]
    events += [("like", draw(_users), draw(st.booleans()), draw(_times)) for _ in range(draw(st.integers(0, 8)))]
    return events


@settings(max_examples=150, deadline=None)
@given(events=_event_lists(), data=st.data())
def test_order_duplicates_and_checkpoints_do_not_change_the_stats(events: list[Event], data: st.DataObject) -> None:
    redelivered = data.draw(st.lists(st.sampled_from(events), max_size=6)) if events else []
    delivery = data.draw(st.permutations(events + redelivered))
    restart_at = data.draw(st.integers(0, len(delivery)))
    harness = Harness()
    harness.feed(delivery[:restart_at])
    harness.checkpoint()
    restarted = Harness(harness.store)  # a new worker: the rest goes to it
    restarted.feed(delivery[restart_at:])
    end = T + MIN
    for window_ms in (HOUR, 30 * MIN, MAX_WINDOW_MS):
        assert_stats(restarted.stats(window_ms, end), reference_stats(events, window_ms, end))


def sweep(harness: Harness, now_ms: int) -> int:
    """What the agent's sweep does: every stored key, in the store's order (videos before viewers)."""
    return harness.processor.sweep(0, sorted(harness.store), now_ms)


def test_the_sweep_deletes_entries_past_the_retention_that_no_event_touches() -> None:
    harness = Harness(limits=Limits(max_cached_pairs=0, max_cached_videos=0))  # all of it in the store
    harness.feed([("view", f"u{n}", f"s{n}", T - 30 * MIN) for n in range(10)])
    harness.feed([("like", "u1", True, T - 20 * MIN), ("like", "u2", True, T - 20 * MIN),
                  ("like", "u2", False, T - 10 * MIN)])
    harness.feed([("view", "w1", "x1", T - 30 * MIN)], video="w")
    harness.checkpoint()
    stored = dict(harness.store)
    assert sweep(harness, T + 20 * HOUR) == 0 and not harness.processor.checkpoint_due(1e9)  # inside the retention
    assert harness.store == stored
    harness.feed([("view", "w2", "x2", T + 26 * HOUR)], video="w")  # w goes on; v sees nothing more
    harness.checkpoint()
    now = T + 26 * HOUR + MIN
    assert sweep(harness, now) > 0
    harness.checkpoint()
    # v: its watermark raised to the clock, its hours gone; of its viewers only the liker's latest
    # action is left. w: the viewer of 26 hours ago is gone, the new one stays.
    assert sorted(key for key in harness.store if key.startswith(("p", "h"))) == [
        f"h\x00w\x00{(T + 26 * HOUR) // HOUR}", pair_key(VIDEO, "u1"), pair_key("w", "w2")]
    assert harness.read(pair_key(VIDEO, "u1")) == {"s": {}, "t": [], "k": [T - 20 * MIN, 1]}
    assert sweep(harness, now) == 0  # nothing more to forget
    # Nothing of it was still counted: the like count stays, a returning viewer is a new one.
    restored = Harness(harness.store)
    assert restored.stats(MAX_WINDOW_MS, now // MIN * MIN + MIN, video="w").unique_viewers == 1
    assert restored.apply(("view", "u3", "s9", T - 10 * MIN)) is False  # older than the raised retention
    restored.feed([("view", "u3", "s9", now), ("like", "u1", False, now)])
    stats = restored.stats(MAX_WINDOW_MS, now // MIN * MIN + MIN)
    assert (stats.unique_viewers, stats.sessions, stats.net_likes) == (1, 1, -1)
    assert harness.read(video_key(VIDEO))["likes"] == 1
    restored.checkpoint()
    assert restored.read(video_key(VIDEO))["likes"] == 0  # u1's unlike took back the like the sweep kept


def test_the_sweep_leaves_entries_in_memory_to_their_events() -> None:
    harness = Harness()
    harness.feed([("view", "u", "s", T)])
    harness.checkpoint()
    harness.feed([("view", "u", "s2", T + 26 * HOUR)])  # in memory, not yet written
    # The stored entry is wholly below the new retention, but the one in memory is newer: the sweep
    # leaves it to the checkpoint (and its old session to the entry's next use).
    assert sweep(harness, T + 26 * HOUR + MIN) == 0
    harness.checkpoint()
    assert sorted(harness.read(pair_key(VIDEO, "u"))["s"]) == ["s", "s2"]


def test_entries_of_a_checkpoint_being_written_are_not_evicted() -> None:
    harness = Harness(limits=Limits(max_cached_pairs=1))
    harness.feed([("view", f"u{n}", f"s{n}", T - MIN) for n in range(3)])
    in_flight = harness.processor.checkpoint(0.0)  # not yet in the store
    harness.processor.scores_due(T)  # evicts what it may
    harness.apply(("view", "u0", "s0b", T - MIN))  # must come from memory: the store has nothing yet
    assert harness.stats(HOUR, T).sessions == 4
    for writes in in_flight.writes.values():
        for key, value in writes:
            harness.store[key] = json.dumps(value)
    harness.processor.checkpoint_written(in_flight)
    harness.checkpoint()
    assert len(harness.processor._pairs) <= 1
    assert Harness(harness.store).stats(HOUR, T).sessions == 4
