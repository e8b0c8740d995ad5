"""The supervisor's restart policy: backoff schedule, give-up within a window, manual reset."""

from __future__ import annotations

from lustrax.restart_policy import RestartPolicy, RestartTracker


def test_backoff_doubles_from_the_initial_delay_up_to_the_cap() -> None:
    policy = RestartPolicy(initial_delay_s=0.5, max_delay_s=3.0)
    assert [policy.delay_s(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]


def test_gives_up_only_after_more_than_max_failures_within_the_window() -> None:
    tracker = RestartTracker(RestartPolicy(max_failures=3, window_s=60.0))
    decisions = [tracker.on_exit(now) for now in (0.0, 1.0, 2.0)]
    assert [d.give_up for d in decisions] == [False, False, False]
    assert [d.delay_s for d in decisions] == [0.5, 1.0, 2.0]
    fourth = tracker.on_exit(3.0)
    assert fourth.give_up and fourth.failures_in_window == 4 and tracker.given_up


def test_failures_older_than_the_window_are_forgotten_and_the_backoff_starts_over() -> None:
    tracker = RestartTracker(RestartPolicy(max_failures=2, window_s=10.0))
    tracker.on_exit(0.0)
    tracker.on_exit(5.0)
    later = tracker.on_exit(16.0)  # 0 s and 5 s are both more than 10 s ago
    assert not later.give_up and later.failures_in_window == 1 and later.delay_s == 0.5


def test_a_manual_restart_resets_a_given_up_component() -> None:
    tracker = RestartTracker(RestartPolicy(max_failures=0))
    assert tracker.on_exit(0.0).give_up
    tracker.on_manual_restart()
    assert not tracker.given_up and tracker.failures == []
    assert tracker.on_exit(1.0).give_up  # max_failures=0: never restarted automatically
