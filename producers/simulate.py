"""Realistic viewing traffic: a pure, seeded traffic model and the runner that sends it to the ingest API.

The model is a discrete-event simulation on a simulated clock, with no I/O and no wall time: a
fixed number of playback slots (devices) each run one session after another. A session picks a
user (preferably one not watching already), a video (Zipf-popular, or a re-watch from the user's
history), emits a `view`, then a `watch_tick` every tick interval while the position advances to
where the viewer stops: the end for a completed session, somewhere before 90 % for an abandoned
one. Likes fall during or just after sessions; unlikes take back an earlier like. Every random
choice, event_ids included, comes from one RNG seeded by `seed`, so a seed fixes the stream.

The runner drives the model with the wall clock, so `occurred_at` is the real time of each event,
and sizes the number of slots so the steady-state output is about the requested rate.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import random
import sys
import time
import uuid
from bisect import bisect
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from producers.client import MAX_BATCH_EVENTS, AsyncIngestClient, IngestClientError

DEFAULT_START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z: a fixed default keeps a seed's stream fixed
MIN_DURATION_MS = 30_000
MAX_DURATION_MS = 600_000
COMPLETED_FRACTION = 0.9  # watched this much or more: the session counts as completed
ZIPF_EXPONENT = 1.1  # a few videos take most of the views
REWATCH_P = 0.15  # a session with history re-watches one of the user's earlier videos
PAUSE_P = 0.03  # a tick during which the player is paused or buffering: the position stays
UNLIKE_P = 0.05  # a session during which the user takes back one of their likes
USER_TRIES = 8  # attempts at finding an idle user before accepting a second device of a busy one


def like_probability(watched_fraction: float) -> float:
    """Viewers who watch more like more."""
    return 0.02 + 0.25 * watched_fraction


def completion_probability(duration_ms: int) -> float:
    """Short videos are finished more often: 75 % at 30 s down to 30 % at 10 min."""
    span = (duration_ms - MIN_DURATION_MS) / (MAX_DURATION_MS - MIN_DURATION_MS)
    return 0.75 - 0.45 * span


@dataclass
class _Session:
    session_id: str
    user: int
    video: int
    duration_ms: int
    target_ms: int  # the position at which the viewer stops
    position_ms: int = 0


class TrafficModel:
    """A reproducible stream of client events (API.md shapes), pulled with `events_until(now_ms)`.

    `concurrent_sessions` playback slots start in the first tick interval after `start_ms` and then
    each run sessions back to back with a short pause in between; `for_rate` picks the number of
    slots for a target event rate.
    """

    def __init__(self, seed: int, users: int, videos: int, tick_interval_s: float = 5.0, *,
                 concurrent_sessions: int = 20, start_ms: int = DEFAULT_START_MS,
                 video_ids: Sequence[str] = ()) -> None:
        if users < 1 or videos < 1 or concurrent_sessions < 1:
            raise ValueError("users, videos and concurrent_sessions must be at least 1")
        self.tick_ms = round(tick_interval_s * 1000)
        if self.tick_ms < 1:
            raise ValueError("tick_interval_s must be at least 1 ms")
        self.seed = seed
        self.users = users
        self.videos = videos
        self.concurrent_sessions = concurrent_sessions
        self.user_ids = [f"sim-user-{index:06d}" for index in range(users)]
        # Given ids (real videos, e.g. the demo's) take the most popular ranks; the rest are made up.
        named = list(video_ids)[:videos]
        self.video_ids = named + [f"sim-video-{index:05d}" for index in range(len(named), videos)]
        self._rng = random.Random(seed)
        # Log-uniform: short clips are as common as long videos per decade of length.
        self.durations_ms = [round(math.exp(self._rng.uniform(math.log(MIN_DURATION_MS), math.log(MAX_DURATION_MS))))
                             for _ in range(videos)]
        # Popularity rank is the index: video 0 is the hit.
        self._popularity = list(itertools.accumulate(1 / rank ** ZIPF_EXPONENT for rank in range(1, videos + 1)))
        self._watching = [0] * users  # sessions in progress per user
        self._history: defaultdict[int, dict[int, None]] = defaultdict(dict)  # user -> videos (ordered set)
        self._liked: defaultdict[int, set[int]] = defaultdict(set)
        self._queue: list[tuple[int, int, str, Any]] = []  # (at_ms, seq, action, payload): seq breaks ties
        self._seq = itertools.count()
        for _ in range(concurrent_sessions):
            # Staggered over one interval so the slots' ticks spread out instead of arriving together.
            self._schedule(start_ms + self._rng.randrange(self.tick_ms), "start", None)

    @classmethod
    def for_rate(cls, rate: float, seed: int, users: int, videos: int, tick_interval_s: float = 5.0, *,
                 start_ms: int = DEFAULT_START_MS, video_ids: Sequence[str] = ()) -> TrafficModel:
        """A model whose steady-state output is about `rate` events per second."""
        probe = cls(seed, users, videos, tick_interval_s, concurrent_sessions=1, start_ms=start_ms)
        return cls(seed, users, videos, tick_interval_s, concurrent_sessions=probe.sessions_for_rate(rate),
                   start_ms=start_ms, video_ids=video_ids)

    def sessions_for_rate(self, rate: float, samples: int = 4000) -> int:
        """Slots needed for `rate` events/s: rate per slot = E[events per session] / E[slot cycle].

        Estimated from sampled sessions of this catalogue with a separate RNG, so estimating does
        not change the stream.
        """
        if rate <= 0:
            raise ValueError("rate must be positive")
        rng = random.Random(f"{self.seed}:rate")
        events = cycle_ms = 0.0
        for _ in range(samples):
            video = self._popular_video(rng)
            duration = self.durations_ms[video]
            target = self._watch_target(rng, duration)
            ticks = math.ceil(target / self.tick_ms) / (1 - PAUSE_P)
            events += 1 + ticks + like_probability(target / duration) + UNLIKE_P
            cycle_ms += ticks * self.tick_ms + self.tick_ms  # the mean pause between sessions is one tick
        return max(1, round(rate * cycle_ms / 1000 / events))

    def events_until(self, now_ms: int) -> list[dict[str, Any]]:
        """Every event with occurred_at <= now_ms not returned before, in occurred_at order."""
        emitted: list[dict[str, Any]] = []
        while self._queue and self._queue[0][0] <= now_ms:
            at_ms, _, action, payload = heapq.heappop(self._queue)
            if action == "start":
                emitted.append(self._start_session(at_ms))
            elif action == "tick":
                emitted.append(self._tick(at_ms, payload))
            elif action == "like":
                emitted.extend(self._like(at_ms, *payload))
            else:
                emitted.extend(self._unlike(at_ms, payload))
        return emitted

    def _schedule(self, at_ms: int, action: str, payload: Any) -> None:
        heapq.heappush(self._queue, (at_ms, next(self._seq), action, payload))

    def _uuid(self) -> str:
        return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

    def _event(self, kind: str, at_ms: int, user: int, video: int, **extra: Any) -> dict[str, Any]:
        return {"type": kind, "event_id": self._uuid(), "occurred_at": at_ms, "video_id": self.video_ids[video],
                "user_id": self.user_ids[user], **extra}

    def _popular_video(self, rng: random.Random) -> int:
        return min(bisect(self._popularity, rng.random() * self._popularity[-1]), self.videos - 1)

    def _watch_target(self, rng: random.Random, duration_ms: int) -> int:
        if rng.random() < completion_probability(duration_ms):
            return duration_ms
        # Abandonment is front-loaded: most viewers who leave do so early.
        return max(1000, int(duration_ms * COMPLETED_FRACTION * rng.random() ** 1.6))

    def _pick_user(self) -> int:
        for _ in range(USER_TRIES):
            user = self._rng.randrange(self.users)
            if not self._watching[user]:
                break
        return user

    def _start_session(self, at_ms: int) -> dict[str, Any]:
        rng = self._rng
        user = self._pick_user()
        history = self._history[user]
        rewatch = bool(history) and rng.random() < REWATCH_P
        video = rng.choice(list(history)) if rewatch else self._popular_video(rng)
        duration = self.durations_ms[video]
        session = _Session(self._uuid(), user, video, duration, self._watch_target(rng, duration))
        self._watching[user] += 1
        history[video] = None
        expected_end_ms = at_ms + math.ceil(session.target_ms / self.tick_ms) * self.tick_ms
        if rng.random() < like_probability(session.target_ms / duration):
            # During the session or shortly after it.
            self._schedule(rng.randint(at_ms + self.tick_ms, expected_end_ms + 2 * self.tick_ms), "like", (user, video))
        if rng.random() < UNLIKE_P:
            self._schedule(rng.randint(at_ms, expected_end_ms), "unlike", user)
        self._schedule(at_ms + self.tick_ms, "tick", session)
        return self._event("view", at_ms, user, video, session_id=session.session_id)

    def _tick(self, at_ms: int, session: _Session) -> dict[str, Any]:
        if self._rng.random() >= PAUSE_P:
            session.position_ms = min(session.position_ms + self.tick_ms, session.target_ms)
        event = self._event("watch_tick", at_ms, session.user, session.video, session_id=session.session_id,
                            position_ms=session.position_ms, duration_ms=session.duration_ms)
        if session.position_ms < session.target_ms:
            self._schedule(at_ms + self.tick_ms, "tick", session)
        else:
            self._watching[session.user] -= 1
            self._schedule(at_ms + self._rng.randint(0, 2 * self.tick_ms), "start", None)
        return event

    def _like(self, at_ms: int, user: int, video: int) -> list[dict[str, Any]]:
        liked = self._liked[user]
        if video in liked:  # liked already (e.g. in an earlier session): a like is not a counter
            return []
        liked.add(video)
        return [self._event("like", at_ms, user, video)]

    def _unlike(self, at_ms: int, user: int) -> list[dict[str, Any]]:
        liked = self._liked[user]
        if not liked:
            return []
        video = self._rng.choice(sorted(liked))  # sorted: set order must not leak into the stream
        liked.remove(video)
        return [self._event("unlike", at_ms, user, video)]


@dataclass
class SimulationReport:
    sent: int = 0
    failed: int = 0
    errors: int = 0  # rejected batches (each counts all its events as failed)
    by_type: Counter[str] = field(default_factory=Counter)  # accepted events per type
    elapsed_s: float = 0.0
    last_error: str | None = None

    @property
    def achieved_rate(self) -> float:
        return self.sent / self.elapsed_s if self.elapsed_s > 0 else 0.0


class _ProgressLine:
    """One status line on a terminal stream, rewritten in place with a carriage return."""

    def __init__(self, stream: TextIO, target_rate: float, duration_s: float) -> None:
        self._stream = stream
        self._target_rate = target_rate
        self._duration_s = duration_s
        self._width = 0

    def show(self, report: SimulationReport) -> None:
        line = (f"simulate: sent {report.sent:,} | {report.achieved_rate:,.1f} ev/s of {self._target_rate:,g} | "
                f"failed {report.failed:,} ({report.errors} errors) | {report.elapsed_s:.1f}/{self._duration_s:g} s")
        self._stream.write("\r" + line.ljust(self._width))  # padded to wipe a longer previous line
        self._stream.flush()
        self._width = len(line)

    def close(self) -> None:
        self._stream.write("\n")
        self._stream.flush()


async def _send(client: AsyncIngestClient, batch: list[dict[str, Any]], report: SimulationReport) -> None:
    try:
        await client.send_batch(batch)
    except IngestClientError as exc:
        if exc.status in (401, 403):
            raise
        report.failed += len(batch)
        report.errors += 1
        report.last_error = str(exc)
    else:
        report.sent += len(batch)
        report.by_type.update(event["type"] for event in batch)


async def simulate(base_url: str, token: str, rate: float, duration_s: float, users: int, videos: int, seed: int,
                   batch_size: int = 200, progress: bool = True, video_ids: Sequence[str] = ()) -> SimulationReport:
    """Send model traffic at about `rate` events/s for `duration_s` s in batches of at most `batch_size`.

    Events are released when the wall clock passes their occurred_at and sent in order, one batch
    at a time; a sender that falls behind catches up with larger sends. A rejected batch is counted
    and the run goes on, except 401/403: a token that is refused once is refused for every batch.
    The token must be allowed to act for any user (role "service"). Every playback slot opens its
    first session in the first tick interval, so that interval is mostly views. `video_ids` are
    real videos to watch, most popular first (the rest of the `videos` are made up).
    """
    if rate <= 0 or duration_s <= 0:
        raise ValueError("rate and duration_s must be positive")
    if not 1 <= batch_size <= MAX_BATCH_EVENTS:
        raise ValueError(f"batch_size must be between 1 and {MAX_BATCH_EVENTS}")
    start_ms = int(time.time() * 1000)
    started = time.monotonic()
    model = TrafficModel.for_rate(rate, seed, users, videos, start_ms=start_ms, video_ids=video_ids)
    # About one batch per step at the target rate, and at least a send per second at low rates.
    step_s = min(1.0, batch_size / rate)
    report = SimulationReport()
    display = _ProgressLine(sys.stderr, rate, duration_s) if progress else None
    try:
        async with AsyncIngestClient(base_url, token) as client:
            next_step = started
            while True:
                simulated_s = min(time.monotonic() - started, duration_s)
                due = model.events_until(start_ms + int(simulated_s * 1000))
                for offset in range(0, len(due), batch_size):
                    await _send(client, due[offset:offset + batch_size], report)
                report.elapsed_s = time.monotonic() - started
                if display:
                    display.show(report)
                if simulated_s >= duration_s:
                    break
                next_step += step_s
                await asyncio.sleep(max(0.0, next_step - time.monotonic()))
    finally:
        if display:
            display.close()
    return report
