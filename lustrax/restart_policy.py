"""When the supervisor restarts a component that exited, and when it gives up (pure logic).

Like systemd's `Restart=on-failure` with `StartLimitBurst`/`StartLimitIntervalSec`: every exit is
a failure; the next start waits `initial_delay_s`, doubling with each failure still inside the
window, up to `max_delay_s`. More than `max_failures` failures within `window_s` and the component
is given up (until someone restarts it by hand, which starts a fresh count).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class RestartPolicy:
    max_failures: int = 5
    window_s: float = 120.0
    initial_delay_s: float = 0.5
    max_delay_s: float = 15.0

    def delay_s(self, failures_in_window: int) -> float:
        """Backoff before the next start, after the n-th failure in the window (n >= 1)."""
        return float(min(self.max_delay_s, self.initial_delay_s * 2 ** max(0, failures_in_window - 1)))


@dataclass(frozen=True)
class Decision:
    give_up: bool
    delay_s: float  # when not giving up: how long to wait before starting again
    failures_in_window: int


@dataclass
class RestartTracker:
    """One component's history: failure times (monotonic seconds) and restarts so far."""

    policy: RestartPolicy
    failures: list[float] = field(default_factory=list)
    restarts: int = 0
    given_up: bool = False

    def on_exit(self, now: float) -> Decision:
        self.failures = [t for t in self.failures if now - t < self.policy.window_s] + [now]
        count = len(self.failures)
        self.given_up = count > self.policy.max_failures
        return Decision(self.given_up, 0.0 if self.given_up else self.policy.delay_s(count), count)

    def on_manual_restart(self) -> None:
        """An operator's `lustrax restart`: the count starts afresh, as `systemctl reset-failed`."""
        self.failures.clear()
        self.given_up = False
