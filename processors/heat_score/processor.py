"""The heat worker's logic, without I/O: events in; table writes, scores, like updates and acks out.

The Faust agent (agent.py) decodes, dead-letters, hands each event to `HeatProcessor.apply`, and
carries out what the processor asks: the writes of `checkpoint()`, the records of `scores_due()`
and `like_updates_due()`, and the acknowledgements of `acks()`. Reads go through `store`, a
function from a key to its stored value (the Faust table's `get`; a dict's in tests).

State, in small keyed entries of one table (docs/heat-score.md has the definitions):

    m<0>video            {"wm": watermark, "first": first engagement, "likes": like count,
                          "hours": [hours that have buckets]}
    h<0>video<0>hour     [[minute, A, B, SESSIONS, COMPLETED, WATCHED, VIEWS, LIKES], ...]
    p<0>video<0>user     {"s": {session: [last, max position, max duration, [view times]]},
                          "t": [[last, session], ...]   the viewer's two most recently active sessions
                          "l": [prior, floor, [[at, 1 like | 0 unlike], ...]]   like actions
                          "k": [at, 1 | 0]}             the latest like action (the like count)

Minutes are `at_ms // 60_000`. A bucket holds, for its minute: A, the viewers whose latest
session was last active then; B, the same for their second-latest; the sessions last active then
(SESSIONS, COMPLETED, WATCHED in units of 1e-9); the view events (VIEWS); the like changes
(LIKES). A window [E - W, E), E a minute boundary, sums its buckets: unique viewers are A,
re-watching viewers B, and every event moves O(1) bucket counts. Running sums per window are kept
in memory and buckets that leave a window are subtracted when it is next scored.

Acknowledgement: an event is acked once both a checkpoint and a score made after it are done, so
that neither its state nor its score can be lost to a crash (a replayed event changes nothing but
marks its video due for a score again).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from processors.heat_score.like_rule import LikeBroadcastRule, decide, like_delta
from processors.heat_score.score import MAX_WINDOW_MS, WINDOWS, WindowStats, heat_score

MINUTE_MS: Final = 60_000
HOUR_MINUTES: Final = 60
# The ingest API accepts occurred_at up to 5 min ahead, so the watermark may lead the wall clock by
# that much: keeping 24 h + 5 min behind it still serves a 24 h window at that clock.
LATENESS_MS: Final = 300_000
RETENTION_MS: Final = MAX_WINDOW_MS + LATENESS_MS
NANO: Final = 1_000_000_000  # watched fractions are summed as integers: no float drift
# Bounds per (video, viewer), far above what a person does in 24 h; beyond them a bot's further
# sessions, views or like actions are refused (every entry stays well under Kafka's 1 MB).
MAX_SESSIONS_PER_VIEWER: Final = 1000
MAX_VIEWS_PER_SESSION: Final = 64
MAX_LIKE_ACTIONS: Final = 16
MAX_BROADCAST_MEMORY: Final = 100_000
A, B, SESSIONS, COMPLETED, WATCHED, VIEWS, LIKES = range(7)
WIDTH: Final = 7
_NO_FLOOR: Final = -(1 << 62)

Store = Callable[[str], Any]


def video_key(video_id: str) -> str:
    return f"m\x00{video_id}"


def hour_key(video_id: str, hour: int) -> str:
    return f"h\x00{video_id}\x00{hour}"


def pair_key(video_id: str, user_id: str) -> str:
    return f"p\x00{video_id}\x00{user_id}"


@dataclass(frozen=True)
class Limits:
    checkpoint_interval_s: float = 10.0
    max_dirty_entries: int = 50_000  # checkpoint early beyond this: bounds what waits in memory
    max_cached_videos: int = 10_000
    max_cached_pairs: int = 100_000


@dataclass
class Checkpoint:
    """Writes per partition: [(key, value or None to delete)], in the partition of the key's video."""

    seq: int
    generation: int
    writes: dict[int, list[tuple[str, Any]]] = field(default_factory=dict)


@dataclass(frozen=True)
class ScoreDue:
    video_id: str
    window: str
    window_end_ms: int
    score: float
    stats: WindowStats


@dataclass(frozen=True)
class LikeUpdateDue:
    video_id: str
    like_count: int
    delta: int


@dataclass
class ScoreBatch:
    seq: int
    scores: list[ScoreDue]


class _Video:
    __slots__ = ("id", "partition", "wm", "first", "likes", "hours", "buckets", "floor", "sums",
                 "dirty_hours", "dirty_meta")

    def __init__(self, video_id: str, partition: int) -> None:
        self.id, self.partition = video_id, partition
        self.wm: int | None = None
        self.first: int | None = None
        self.likes = 0
        self.hours: set[int] = set()
        self.buckets: dict[int, list[int]] = {}
        self.floor = _NO_FLOOR  # minutes below it are gone (pruned): nothing adds or subtracts there
        self.sums: dict[int, tuple[int, list[int]]] = {}  # window minutes -> (start, sums from start)
        self.dirty_hours: set[int] = set()
        self.dirty_meta = False

    def add(self, minute: int, index: int, delta: int) -> None:
        if minute < self.floor or not delta:
            return
        bucket = self.buckets.get(minute)
        if bucket is None:
            bucket = self.buckets[minute] = [0] * WIDTH
        bucket[index] += delta
        hour = minute // HOUR_MINUTES
        if hour not in self.hours:
            self.hours.add(hour)
            self.dirty_meta = True
        self.dirty_hours.add(hour)
        for start, sums in self.sums.values():
            if minute >= start:
                sums[index] += delta

    def range_sum(self, low: int, high: int) -> list[int]:
        """Sum of the buckets in [low, high), walking whichever is shorter: the range or the buckets."""
        total = [0] * WIDTH
        if high - low <= len(self.buckets):
            minutes: Iterable[int] = (m for m in range(low, high) if m in self.buckets)
        else:
            minutes = (m for m in self.buckets if low <= m < high)
        for minute in minutes:
            for i, value in enumerate(self.buckets[minute]):
                total[i] += value
        return total

    def window(self, end: int, minutes: int) -> list[int]:
        """Bucket sums over [end - minutes, end): the running sums, moved forward lazily."""
        start = end - minutes
        held = self.sums.get(minutes)
        if held is None or start < held[0]:
            sums = self.range_sum(start, 1 << 62)
        else:
            sums = held[1]
            for i, value in enumerate(self.range_sum(held[0], start)):
                sums[i] -= value
        self.sums[minutes] = (start, sums)
        ahead = self.range_sum(end, 1 << 62)  # dated after the end (clocks up to 5 min ahead)
        return [s - a for s, a in zip(sums, ahead, strict=True)]

    def prune(self, floor: int) -> None:
        """Forget the hours wholly below `floor` (no window can reach them any more)."""
        for hour in [h for h in self.hours if (h + 1) * HOUR_MINUTES <= floor]:
            self.hours.discard(hour)
            self.dirty_hours.add(hour)
            self.dirty_meta = True
            for minute in range(hour * HOUR_MINUTES, (hour + 1) * HOUR_MINUTES):
                bucket = self.buckets.pop(minute, None)
                if bucket is not None:
                    for start, sums in self.sums.values():
                        if minute >= start:
                            for i, value in enumerate(bucket):
                                sums[i] -= value
        self.floor = floor

    def meta(self) -> dict[str, Any]:
        return {"wm": self.wm, "first": self.first, "likes": self.likes, "hours": sorted(self.hours)}

    def hour_rows(self, hour: int) -> list[list[int]] | None:
        if hour not in self.hours:
            return None
        rows = [[m, *self.buckets[m]] for m in range(hour * HOUR_MINUTES, (hour + 1) * HOUR_MINUTES)
                if m in self.buckets and any(self.buckets[m])]
        return rows or None


class _Pair:
    __slots__ = ("video_id", "partition", "data", "floor")

    def __init__(self, video_id: str, partition: int, data: dict[str, Any]) -> None:
        self.video_id, self.partition, self.data = video_id, partition, data
        self.floor = _NO_FLOOR  # the video's floor when this entry was last pruned


def _floor_minute(watermark: int) -> int:
    """The first minute of the oldest hour kept: the retention, rounded down to an hour."""
    return (watermark - RETENTION_MS) // MINUTE_MS // HOUR_MINUTES * HOUR_MINUTES


def _contribution(session: list[Any]) -> tuple[int, int]:
    """(completed, watched fraction in 1e-9) of a session [last, position, duration, views]."""
    position, duration = session[1], session[2]
    if duration <= 0:
        return 0, 0  # no tick yet: no known duration, not completed
    return int(position * 10 >= duration * 9), min(NANO, position * NANO // duration)


def _copy_pair(pair: dict[str, Any]) -> dict[str, Any]:
    """A (video, viewer) entry's own copy: nothing it shares with `pair` changes with it."""
    copy: dict[str, Any] = {"s": {session_id: [last, position, duration, list(views)]
                                  for session_id, (last, position, duration, views) in pair["s"].items()},
                            "t": [list(entry) for entry in pair["t"]]}
    if "l" in pair:
        prior, floor, actions = pair["l"]
        copy["l"] = [prior, floor, [list(action) for action in actions]]
    if "k" in pair:
        copy["k"] = list(pair["k"])
    return copy


def _like_changes(prior: bool | None, actions: list[list[int]]) -> list[tuple[int, int]]:
    """(at, +1 | -1) for each action that changes the user's like state; the first action known of
    a user is a change (an unlike takes back a like older than the state remembers)."""
    changes, state = [], prior
    for at, like in actions:
        liked = like == 1
        if state is None or liked != state:
            changes.append((at, 1 if liked else -1))
        state = liked
    return changes


def _action_order(action: list[int]) -> tuple[int, int]:
    return action[0], -action[1]  # at the same millisecond the unlike is the later one


def _forget_old(pair: dict[str, Any], floor_ms: int) -> bool:
    """Drop what is below the video's floor (its buckets are gone, no window reaches it); whether
    anything was dropped. A liker's latest action stays: the like count needs it."""
    sessions, dropped = pair["s"], False
    for session_id in [sid for sid, session in sessions.items() if session[0] < floor_ms]:
        del sessions[session_id]
        dropped = True
    top = [entry for entry in pair["t"] if entry[0] >= floor_ms]
    if len(top) != len(pair["t"]):
        pair["t"], dropped = top, True
    likes = pair.get("l")
    if likes is not None:
        actions = likes[2]
        old = [action for action in actions if action[0] < floor_ms]
        if old:
            dropped = True
            del actions[:len(old)]
            if not actions:
                del pair["l"]  # idle for the retention: forgotten
            else:
                likes[0], likes[1] = old[-1][1] == 1, old[-1][0]
    latest = pair.get("k")
    if latest is not None and latest[1] == 0 and latest[0] < floor_ms:
        del pair["k"]  # an old unlike: the same to the count as no action at all (older ones are refused)
        dropped = True
    return dropped


def _is_empty(pair: dict[str, Any]) -> bool:
    return not (pair["s"] or pair["t"] or "l" in pair or "k" in pair)


class HeatProcessor:
    def __init__(self, store: Store, *, half_life_s: float, like_rule: LikeBroadcastRule = LikeBroadcastRule(),
                 limits: Limits = Limits()) -> None:
        self._store = store
        self._half_life_s = half_life_s
        self._rule = like_rule
        self._limits = limits
        self._videos: OrderedDict[str, _Video] = OrderedDict()
        self._pairs: OrderedDict[str, _Pair] = OrderedDict()
        self._dirty_videos: set[str] = set()
        self._dirty_pairs: set[str] = set()
        self._due: dict[str, int] = {}  # videos to score -> partition
        self._seq = 0
        self._pending: deque[tuple[int, Any]] = deque()  # (seq, token), in the order taken
        self._written = self._scored = 0
        self._last_checkpoint_s: float | None = None
        self._like_counts: dict[str, int] = {}  # videos whose count may need a broadcast
        self._broadcast: OrderedDict[str, tuple[int, float]] = OrderedDict()
        self._generation = 0  # rebalances so far
        # Pair entries the last checkpoint holds as they are, until it is written: an event copies
        # one before changing it. Written live, after the caller's awaits, an entry would carry an
        # event whose bucket counts are not in the checkpoint, and that event, replayed after a
        # rebalance or a crash, would be a duplicate of itself, never counted (issue 13).
        self._held: set[str] = set()
        # Entries of the checkpoint being written: not evicted until it is (the store is older).
        self._in_flight: set[str] = set()
        self._swept: dict[str, tuple[int, Any]] = {}  # key -> (partition, value or None): for the next checkpoint

    # Events ---------------------------------------------------------------------------------------

    def apply(self, schema: str, record: dict[str, Any], at_ms: int, token: Any, partition: int) -> bool:
        """Apply one decoded engagement event (VideoView, WatchTick or VideoLike; `at_ms` is its
        occurred_at) taken from `partition`; True if it changed the state. `token` comes back from
        `acks()` (if this raises, the caller parks the event and reports it `taken`)."""
        changed = self._apply(schema, record, at_ms, partition)
        self.taken(token, partition)
        return changed

    def _apply(self, schema: str, record: dict[str, Any], at_ms: int, partition: int) -> bool:
        video_id, user_id = record["video_id"], record["user_id"]
        self._due[video_id] = partition  # even unchanged: a replay after a crash must be scored
        video = self._video(video_id, partition)
        if video.wm is not None and at_ms < video.wm - RETENTION_MS:
            return False  # older than any window can reach
        pair = self._pair(video, user_id)
        if schema == "VideoView":
            changed = self._view(video, pair.data, record["session_id"], at_ms)
        elif schema == "WatchTick":
            changed = self._tick(video, pair.data, record["session_id"], record["position_ms"],
                                 record["duration_ms"], at_ms)
        else:
            changed = self._like(video, pair.data, record["action"] == "LIKE", at_ms)
        if not changed:
            return False
        if video.wm is None or at_ms > video.wm:
            video.wm = at_ms
            video.dirty_meta = True
            floor = _floor_minute(at_ms)
            if floor > video.floor:
                video.prune(floor)
        if video.first is None or at_ms < video.first:
            video.first = at_ms
            video.dirty_meta = True
        self._dirty_videos.add(video_id)
        self._dirty_pairs.add(pair_key(video_id, user_id))
        return True

    def taken(self, token: Any, partition: int) -> None:
        """An event taken from `partition` (applied or not, dead-lettered too): acked in order."""
        self._seq += 1
        self._pending.append((self._seq, token))

    def _view(self, video: _Video, pair: dict[str, Any], session_id: str, at_ms: int) -> bool:
        session = pair["s"].get(session_id)
        if session is None:
            session = self._new_session(video, pair, session_id, at_ms, 0, 0)
            if session is None:
                return False
        elif at_ms in session[3] or len(session[3]) >= MAX_VIEWS_PER_SESSION:
            return False  # one view per session and millisecond: a redelivery counts once
        else:
            self._update_session(video, pair, session_id, session, at_ms, session[1], session[2])
        session[3].append(at_ms)
        video.add(at_ms // MINUTE_MS, VIEWS, 1)
        return True

    def _tick(self, video: _Video, pair: dict[str, Any], session_id: str, position_ms: int, duration_ms: int,
              at_ms: int) -> bool:
        session = pair["s"].get(session_id)
        if session is None:
            return self._new_session(video, pair, session_id, at_ms, position_ms, duration_ms) is not None
        # Maxima: ticks in any order, and twice, give the same session.
        if at_ms <= session[0] and position_ms <= session[1] and duration_ms <= session[2]:
            return False
        self._update_session(video, pair, session_id, session, at_ms, position_ms, duration_ms)
        return True

    def _new_session(self, video: _Video, pair: dict[str, Any], session_id: str, at_ms: int, position_ms: int,
                     duration_ms: int) -> list[Any] | None:
        sessions = pair["s"]
        if len(sessions) >= MAX_SESSIONS_PER_VIEWER:
            _forget_old(pair, video.floor * MINUTE_MS)
            if len(sessions) >= MAX_SESSIONS_PER_VIEWER:
                return None
        session = sessions[session_id] = [at_ms, position_ms, duration_ms, []]
        completed, watched = _contribution(session)
        minute = at_ms // MINUTE_MS
        video.add(minute, SESSIONS, 1)
        video.add(minute, COMPLETED, completed)
        video.add(minute, WATCHED, watched)
        self._rank(video, pair, session_id, at_ms)
        return session

    def _update_session(self, video: _Video, pair: dict[str, Any], session_id: str, session: list[Any],
                        at_ms: int, position_ms: int, duration_ms: int) -> None:
        old_minute, (old_completed, old_watched) = session[0] // MINUTE_MS, _contribution(session)
        session[0], session[1], session[2] = max(session[0], at_ms), max(session[1], position_ms), \
            max(session[2], duration_ms)
        minute, (completed, watched) = session[0] // MINUTE_MS, _contribution(session)
        self._rank(video, pair, session_id, session[0])
        if minute == old_minute:  # the usual tick: only what it raised changes
            video.add(minute, COMPLETED, completed - old_completed)
            video.add(minute, WATCHED, watched - old_watched)
            return
        # Counted by its last activity: the session moves to that minute.
        video.add(old_minute, SESSIONS, -1)
        video.add(minute, SESSIONS, 1)
        video.add(old_minute, COMPLETED, -old_completed)
        video.add(minute, COMPLETED, completed)
        video.add(old_minute, WATCHED, -old_watched)
        video.add(minute, WATCHED, watched)

    @staticmethod
    def _rank(video: _Video, pair: dict[str, Any], session_id: str, last_ms: int) -> None:
        """Keep the viewer's two most recently active sessions, and A and B with them. Session
        activity only moves forward, so the top two of all sessions is kept exactly this way."""
        top = pair["t"]
        if top and top[0][1] == session_id:  # the usual case: the latest session goes on
            old = top[0][0] // MINUTE_MS
            top[0][0] = max(top[0][0], last_ms)
            if top[0][0] // MINUTE_MS != old:
                video.add(old, A, -1)
                video.add(top[0][0] // MINUTE_MS, A, 1)
            return
        before = [entry[0] // MINUTE_MS for entry in top]
        for entry in top:
            if entry[1] == session_id:
                entry[0] = max(entry[0], last_ms)
                break
        else:
            top.append([last_ms, session_id])
        top.sort(reverse=True)
        del top[2:]
        after = [entry[0] // MINUTE_MS for entry in top]
        for index, rank in ((A, 0), (B, 1)):
            old = before[rank] if rank < len(before) else None
            new = after[rank] if rank < len(after) else None
            if old != new:
                if old is not None:
                    video.add(old, index, -1)
                if new is not None:
                    video.add(new, index, 1)

    def _like(self, video: _Video, pair: dict[str, Any], like: bool, at_ms: int) -> bool:
        record = pair.setdefault("l", [None, None, []])
        prior, floor, actions = record
        action = [at_ms, 1 if like else 0]
        if (floor is not None and at_ms <= floor) or action in actions:
            if not actions and prior is None:
                del pair["l"]
            return False
        before = _like_changes(prior, actions)
        actions.append(action)
        actions.sort(key=_action_order)
        after = _like_changes(prior, actions)
        for at, sign in before:
            video.add(at // MINUTE_MS, LIKES, -sign)
        for at, sign in after:
            video.add(at // MINUTE_MS, LIKES, sign)
        if len(actions) > MAX_LIKE_ACTIONS:  # the oldest's change stays in its bucket
            oldest = actions.pop(0)
            record[0], record[1] = oldest[1] == 1, oldest[0]
        # The like count: each user's latest action wins, whatever order actions arrive in.
        latest = pair.get("k")
        if latest is None or _action_order(action) > _action_order(latest):
            was_liked = latest is not None and latest[1] == 1
            pair["k"] = action
            if was_liked != like:
                video.likes = max(0, video.likes + (1 if like else -1))
                video.dirty_meta = True
                self._like_counts[video.id] = video.likes
        return True

    # Loading and memory ---------------------------------------------------------------------------

    def _video(self, video_id: str, partition: int) -> _Video:
        video = self._videos.get(video_id)
        if video is not None:
            self._videos.move_to_end(video_id)
            return video
        video = _Video(video_id, partition)
        meta = self._store(video_key(video_id))
        if meta:
            video.wm, video.first, video.likes = meta["wm"], meta["first"], meta["likes"]
            video.hours = set(meta["hours"])
            if video.wm is not None:
                video.floor = _floor_minute(video.wm)
            for hour in video.hours:
                for minute, *counts in self._store(hour_key(video_id, hour)) or ():
                    video.buckets[minute] = counts
        self._videos[video_id] = video
        return video

    def _pair(self, video: _Video, user_id: str) -> _Pair:
        key = pair_key(video.id, user_id)
        pair = self._pairs.get(key)
        if pair is None:
            swept = self._swept.get(key)
            data = self._store(key) if swept is None else swept[1]
            pair = self._pairs[key] = _Pair(video.id, video.partition, data or {"s": {}, "t": []})
            if not data:
                pair.floor = video.floor  # nothing to prune
        else:
            self._pairs.move_to_end(key)
        if key in self._held:
            self._held.discard(key)
            pair.data = _copy_pair(pair.data)
        if pair.floor < video.floor:  # at most once an hour per entry
            _forget_old(pair.data, video.floor * MINUTE_MS)
            pair.floor = video.floor
        return pair

    def _evict(self) -> None:
        """Let go of the least recently used clean entries beyond the limits (they are in the store)."""
        for cache, dirty, limit in ((self._pairs, self._dirty_pairs, self._limits.max_cached_pairs),
                                    (self._videos, self._dirty_videos, self._limits.max_cached_videos)):
            if len(cache) <= limit:
                continue
            for key in list(cache)[:len(cache) - limit]:
                if key not in dirty and key not in self._in_flight:
                    del cache[key]

    def revoke(self) -> None:
        """A rebalance: forget all memory and every unacked event. Faust then seeks each partition
        it is given to its committed offset, so those events come again (here or at the new owner)
        onto the checkpointed state. Everything, not only the partitions that leave: a checkpoint
        in flight stops (`is_current`), and whatever it had not written is replayed too."""
        self._videos.clear()
        self._pairs.clear()
        self._dirty_videos.clear()
        self._dirty_pairs.clear()
        self._due.clear()
        self._pending.clear()
        self._held.clear()
        self._in_flight.clear()
        self._swept.clear()
        self._generation += 1

    def is_current(self, checkpoint: Checkpoint) -> bool:
        """False once a rebalance came after `checkpoint` was made: stop writing it."""
        return checkpoint.generation == self._generation

    # Checkpoints, scores, like updates, acks --------------------------------------------------------

    def checkpoint_due(self, now_s: float) -> bool:
        if not (self._dirty_videos or self._dirty_pairs or self._swept):
            if self._written < self._seq:
                self._written = self._seq  # nothing changed since: nothing to write
            return False
        if self._last_checkpoint_s is None:
            self._last_checkpoint_s = now_s
        return (now_s - self._last_checkpoint_s >= self._limits.checkpoint_interval_s
                or len(self._dirty_pairs) + len(self._dirty_videos) + len(self._swept) >= self._limits.max_dirty_entries)

    def checkpoint(self, now_s: float) -> Checkpoint:
        """What the store must receive for every change so far; call `checkpoint_written` once the
        writes are made. Its values stay as they are now until then (or the next checkpoint), while
        events go on: they may be encoded after awaits."""
        checkpoint = Checkpoint(self._seq, self._generation)
        self._held = set()

        def write(partition: int, key: str, value: Any) -> None:
            checkpoint.writes.setdefault(partition, []).append((key, value))

        for video_id in self._dirty_videos:
            video = self._videos[video_id]
            for hour in video.dirty_hours:
                rows = video.hour_rows(hour)
                if rows is None and hour in video.hours:
                    video.hours.discard(hour)  # no counts left in it
                    video.dirty_meta = True
                    for minute in range(hour * HOUR_MINUTES, (hour + 1) * HOUR_MINUTES):
                        video.buckets.pop(minute, None)
                write(video.partition, hour_key(video_id, hour), rows)
            video.dirty_hours.clear()
            if video.dirty_meta:
                write(video.partition, video_key(video_id), video.meta())
                video.dirty_meta = False
        for key in self._dirty_pairs:
            pair = self._pairs[key]
            write(pair.partition, key, None if _is_empty(pair.data) else pair.data)
            self._held.add(key)
        for key, (partition, value) in self._swept.items():
            if key not in self._dirty_pairs:  # else the cached entry, written above, is newer
                write(partition, key, value)
        self._in_flight = self._dirty_pairs | self._dirty_videos
        self._dirty_videos.clear()
        self._dirty_pairs = set()
        self._swept.clear()
        self._last_checkpoint_s = now_s
        return checkpoint

    def checkpoint_written(self, checkpoint: Checkpoint) -> None:
        if self.is_current(checkpoint):
            self._held.clear()
            self._written = max(self._written, checkpoint.seq)
            self._in_flight = set()
            self._evict()

    def sweep(self, partition: int, keys: Iterable[str], now_ms: int) -> int:
        """Forget what no window can use any more among stored keys of `partition` (the agent lists
        them from the store a chunk at a time, in key order: a partition's videos before its viewers,
        and never while a checkpoint is being written). A video without an event for longer than the
        retention before the wall clock `now_ms` gets its watermark raised to `now_ms`: its hours go
        and older events are refused, as if an event had come at `now_ms`. A viewer's entry with
        nothing left inside its video's retention is deleted, a liker's reduced to the latest action.
        The writes go out with the next checkpoint; how many are to be made."""
        changes = 0
        for key in keys:
            kind, video_id, *rest = key.split("\x00")
            if kind == "m":
                cached = self._videos.get(video_id)
                meta = self._store(key) if cached is None else None
                wm, hours = (cached.wm, cached.hours) if cached is not None else (
                    (meta["wm"], meta["hours"]) if meta else (None, ()))
                if wm is None or wm >= now_ms - RETENTION_MS or not hours:
                    continue  # an event came within the retention (its own moves prune it), or nothing left
                video = self._video(video_id, partition)
                video.wm = now_ms
                video.dirty_meta = True
                video.prune(_floor_minute(now_ms))
                self._dirty_videos.add(video_id)
                changes += 1
            elif kind == "p" and key not in self._pairs and key not in self._swept:
                video = self._videos.get(video_id)
                if video is not None:
                    floor = video.floor
                else:
                    meta = self._store(video_key(video_id))
                    floor = _floor_minute(meta["wm"]) if meta and meta["wm"] is not None else _NO_FLOOR
                data = self._store(key)
                if data is not None and _forget_old(data, floor * MINUTE_MS):
                    self._swept[key] = (partition, None if _is_empty(data) else data)
                    changes += 1
        return changes

    def scores_due(self, now_ms: int) -> ScoreBatch:
        """Scores of every video that took an event since the last batch, for each window; call
        `scores_sent` once they are out. A window is the minute buckets [E - W, E), E the next
        minute boundary after `now_ms`: everything up to `now_ms`. Its `window_end_ms` is `now_ms`
        (each batch's rows are newer than the last: the latest-row table keeps the newest by it),
        and the age the score decays with is taken there."""
        end = now_ms // MINUTE_MS + 1
        scores = []
        for video_id, partition in self._due.items():
            video = self._video(video_id, partition)
            age_s = max(0.0, (now_ms - (video.first if video.first is not None else now_ms)) / 1000)
            for window, window_ms in WINDOWS.items():
                stats = _stats(video.window(end, window_ms // MINUTE_MS))
                score = heat_score(stats, age_s=age_s, half_life_s=self._half_life_s)
                scores.append(ScoreDue(video_id, window, now_ms, score, stats))
        self._due.clear()
        self._evict()
        return ScoreBatch(self._seq, scores)

    def scores_sent(self, batch: ScoreBatch) -> None:
        self._scored = max(self._scored, batch.seq)

    def acks(self) -> list[Any]:
        """Tokens of the events whose state is written and whose video was scored after them, in
        the order they were taken (so per partition in offset order)."""
        done = min(self._written, self._scored)
        tokens = []
        pending = self._pending
        while pending and pending[0][0] <= done:
            tokens.append(pending.popleft()[1])
        return tokens

    def like_updates_due(self, now_s: float, video_id: str | None = None) -> list[LikeUpdateDue]:
        """Like counts worth broadcasting now (like_rule.py), of every video or of one; a change held
        back stays due until it goes out. `now_s` is a monotonic clock."""
        updates = []
        if video_id is None:
            candidates = list(self._like_counts.items())
        else:
            candidates = [(video_id, self._like_counts[video_id])] if video_id in self._like_counts else []
        for candidate, count in candidates:
            last_count, last_at = self._broadcast.get(candidate, (None, None))
            if count == last_count:
                del self._like_counts[candidate]
            elif decide(self._rule, last_count, last_at, count, now_s):
                updates.append(LikeUpdateDue(candidate, count, like_delta(last_count, count)))
                self._broadcast[candidate] = (count, now_s)
                self._broadcast.move_to_end(candidate)
                while len(self._broadcast) > MAX_BROADCAST_MEMORY:
                    self._broadcast.popitem(last=False)
                del self._like_counts[candidate]
        return updates

    def window_stats(self, video_id: str, partition: int, window_ms: int, end_ms: int) -> WindowStats:
        """Statistics over [end_ms - window_ms, end_ms), both on minute boundaries, as `scores_due`
        computes them (without taking the video off the due list)."""
        if end_ms % MINUTE_MS or window_ms % MINUTE_MS or not 0 < window_ms <= MAX_WINDOW_MS:
            raise ValueError(f"a window is whole minutes up to {MAX_WINDOW_MS} ms ending on a minute boundary")
        return _stats(self._video(video_id, partition).window(end_ms // MINUTE_MS, window_ms // MINUTE_MS))


def _stats(sums: list[int]) -> WindowStats:
    sessions, viewers = sums[SESSIONS], sums[A]
    return WindowStats(
        views=sums[VIEWS], unique_viewers=viewers, sessions=sessions, net_likes=sums[LIKES],
        completion_rate=sums[COMPLETED] / sessions if sessions else 0.0,
        avg_watched_fraction=sums[WATCHED] / NANO / sessions if sessions else 0.0,
        rewatch_rate=sums[B] / viewers if viewers else 0.0,
    )
