"""Per-video rolling state behind the heat score: pure, JSON-serializable, bounded in size.

The state is a plain dict (lists, ints, floats, strings, None) so that it can be the value of a
Faust table with the json serializer. It is fed event by event (`apply_view`, `apply_tick`,
`apply_like`) and read with `window_stats`. docs/heat-score.md has the definitions.

Layout (lists rather than dicts inside, to keep the JSON small):

    {"v": 1,                          layout version
     "wm": int | None,                watermark: the latest `at_ms` applied
     "pruned": int | None,            the cutoff of the last age pruning
     "seen": [event_id, ...],         the last MAX_SEEN_IDS event ids, oldest first
     "viewers": {user_id: {session_id: [first_ms, last_ms, max_position_ms, duration_ms,
                                        [view_ms, ...]]}},
     "likes": {user_id: [prior, floor_ms, [[at_ms, 1 like | 0 unlike], ...]]},
     "folded": {str(bucket_start_ms): [sessions, completed, watched_fraction_sum, views,
                                       net_likes]},
     "level": int,                    user sampling level: users with hash % 2**level == 0
     "levels": [[until_ms, level], ...]}   earlier levels, while a window can still reach them
                                      (a raise per doubling of the traffic, MAX_LEVEL_LOG lowerings)

Bound, whatever the event rate: MAX_SESSIONS session records (MAX_VIEWS_PER_SESSION views each,
MAX_SESSIONS_PER_USER per user), MAX_LIKERS users of MAX_ACTIONS_PER_USER actions, MAX_SEEN_IDS
ids, one folded bucket per BUCKET_MS of the retention. Below the caps every statistic is exact.
Above them, records are folded into 5-minute buckets, which keep counts and rates exact at bucket
granularity; the sessions of a hash-sampled share of users are never folded, and unique viewers
and the re-watch rate come from that uniform sample (see `window_stats`).
"""

from __future__ import annotations

import bisect
import hashlib
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypedDict

MAX_WINDOW_MS: Final = 86_400_000  # the longest window (24 h)
# The ingest API rejects occurred_at more than 5 min ahead, so the watermark may lead the caller's
# wall clock by that much: keeping 24 h + 5 min behind it still serves a 24 h window at that clock.
LATENESS_MS: Final = 300_000
RETENTION_MS: Final = MAX_WINDOW_MS + LATENESS_MS
BUCKET_MS: Final = 300_000  # granularity of folded (over-cap) data
# Age pruning runs once the cutoff has moved this far (not on every event: it walks the whole
# state), so the state holds at most one more bucket than the retention.
PRUNE_STEP_MS: Final = BUCKET_MS
MAX_SESSIONS: Final = 1000
MAX_SESSIONS_PER_USER: Final = 16  # a bot cannot fill the sample; 16 still tells a re-watcher
MAX_VIEWS_PER_SESSION: Final = 8
MAX_LIKERS: Final = 500
MAX_ACTIONS_PER_USER: Final = 8
MAX_SEEN_IDS: Final = 256
MAX_LEVEL_LOG: Final = 8  # lowering the sampling level adds an entry: at most this many kept
EVICT_TO: Final = 0.9  # fold down to 90 % of a cap, so that sorting for eviction is rare
COMPLETED_PERMILLE: Final = 900  # a session reaching 90 % of the duration is completed

_FIRST, _LAST, _POS, _DUR, _VIEWS = range(5)
_PRIOR, _FLOOR, _ACTIONS = range(3)
_F_SESSIONS, _F_COMPLETED, _F_FRACTION, _F_VIEWS, _F_LIKES = range(5)


class VideoState(TypedDict):
    v: int
    wm: int | None
    pruned: int | None
    seen: list[str]
    viewers: dict[str, dict[str, list[Any]]]
    likes: dict[str, list[Any]]
    folded: dict[str, list[Any]]
    level: int
    levels: list[list[int]]


@dataclass(frozen=True)
class WindowStats:
    """Statistics of one video over the window [now_ms - window_ms, now_ms)."""

    views: int
    unique_viewers: int
    sessions: int
    net_likes: int
    completion_rate: float
    avg_watched_fraction: float
    rewatch_rate: float


def new_video_state() -> VideoState:
    return {"v": 1, "wm": None, "pruned": None, "seen": [], "viewers": {}, "likes": {}, "folded": {},
            "level": 0, "levels": []}


def apply_view(state: VideoState, *, event_id: str, user_id: str, session_id: str, at_ms: int) -> bool:
    """Record a view; False if the event was a duplicate or too late (older than the retention)."""
    if not _admit(state, event_id, at_ms):
        return False
    views = _touch_session(state, user_id, session_id, at_ms)[_VIEWS]
    # A set of timestamps: a redelivered view that slipped past `seen` still counts once.
    if at_ms not in views:
        bisect.insort(views, at_ms)
        if len(views) > MAX_VIEWS_PER_SESSION:
            _bucket(state, views.pop(0))[_F_VIEWS] += 1
    return True


def apply_tick(state: VideoState, *, event_id: str, user_id: str, session_id: str, position_ms: int,
               duration_ms: int, at_ms: int) -> bool:
    """Record a watch tick; False if the event was a duplicate or too late."""
    if not _admit(state, event_id, at_ms):
        return False
    session = _touch_session(state, user_id, session_id, at_ms)
    # Maxima: ticks may come in any order and twice, the result is the same.
    session[_POS] = max(session[_POS], position_ms)
    session[_DUR] = max(session[_DUR], duration_ms)
    return True


def apply_like(state: VideoState, *, event_id: str, user_id: str, like: bool, at_ms: int) -> bool:
    """Record a like (True) or unlike (False); False if a duplicate, too late, or older than the
    part of this user's history that was already folded away."""
    if not _admit(state, event_id, at_ms):
        return False
    record = state["likes"].setdefault(user_id, [None, None, []])
    if record[_FLOOR] is not None and at_ms <= record[_FLOOR]:
        return False
    action = [at_ms, 1 if like else 0]
    actions = record[_ACTIONS]
    # Every action is kept (not only changes): a late action can turn a later one into a change.
    if action not in actions:
        bisect.insort(actions, action, key=_action_order)
        if len(actions) > MAX_ACTIONS_PER_USER:
            _drop_oldest_actions(state, record, 1, fold=True)
    _enforce_liker_cap(state)
    return True


def window_stats(state: VideoState, window_ms: int, now_ms: int) -> WindowStats:
    """Statistics over [now_ms - window_ms, now_ms); see `windows_stats`."""
    return windows_stats(state, (window_ms,), now_ms)[0]


def windows_stats(state: VideoState, windows_ms: Sequence[int], now_ms: int) -> list[WindowStats]:
    """Statistics over [now_ms - window_ms, now_ms) for each window (window_end exclusive, as in
    HeatScoreUpdated), in one pass over the state.

    A session belongs to the window when its span, first to last event, overlaps it. Folded data
    counts when its bucket starts inside the window. When some sessions of the window were folded,
    unique viewers and the re-watch rate come from the users sampled at the highest level in force
    during the window (their sessions are all there): unique viewers = sampled viewers * 2**level,
    kept between the viewers still known and the number of sessions.
    """
    for window_ms in windows_ms:
        if not 0 < window_ms <= MAX_WINDOW_MS:
            raise ValueError(f"window_ms must be in (0, {MAX_WINDOW_MS}], got {window_ms}")
    starts = [now_ms - window_ms for window_ms in windows_ms]
    n = len(starts)
    views, completed, watched = [0] * n, [0] * n, [0.0] * n
    sessions_per_user: list[Counter[str]] = [Counter() for _ in range(n)]
    for user_id, sessions in state["viewers"].items():
        for session in sessions.values():
            first, last, session_views = session[_FIRST], session[_LAST], session[_VIEWS]
            if first >= now_ms:
                continue
            done, fraction = _completed(session), _watched_fraction(session)
            for i, start in enumerate(starts):
                views[i] += sum(1 for at in session_views if start <= at < now_ms)
                if last >= start:
                    sessions_per_user[i][user_id] += 1
                    completed[i] += done
                    watched[i] += fraction
    changes = [change for record in state["likes"].values() for change in _changes(record)]
    results = []
    for i, start in enumerate(starts):
        net_likes = sum(sign for at, sign in changes if start <= at < now_ms)
        folded_sessions = 0
        for key, bucket in state["folded"].items():
            if start <= int(key) < now_ms:
                folded_sessions += bucket[_F_SESSIONS]
                completed[i] += bucket[_F_COMPLETED]
                watched[i] += bucket[_F_FRACTION]
                views[i] += bucket[_F_VIEWS]
                net_likes += bucket[_F_LIKES]
        per_user = sessions_per_user[i]
        sessions = sum(per_user.values()) + folded_sessions
        known_viewers = len(per_user)
        unique_viewers, rewatch_rate = known_viewers, _rewatch_rate(per_user)
        if folded_sessions:
            level = max([state["level"], *(level for until, level in state["levels"] if until > start)])
            sample = {user: count for user, count in per_user.items() if _sampled(user, level)}
            if sample:  # else (a high level, a short window) the known viewers are the best guess
                unique_viewers = min(sessions, max(known_viewers, len(sample) * 2 ** level))
                rewatch_rate = _rewatch_rate(sample)
        results.append(WindowStats(
            views=views[i],
            unique_viewers=unique_viewers,
            sessions=sessions,
            net_likes=net_likes,
            completion_rate=completed[i] / sessions if sessions else 0.0,
            avg_watched_fraction=watched[i] / sessions if sessions else 0.0,
            rewatch_rate=rewatch_rate,
        ))
    return results


def _rewatch_rate(sessions_per_user: Mapping[str, int]) -> float:
    viewers = len(sessions_per_user)
    return sum(1 for n in sessions_per_user.values() if n >= 2) / viewers if viewers else 0.0


def _sampled(user_id: str, level: int) -> bool:
    # A stable hash (not hash(): salted per process), and nested levels: a user sampled at a
    # level is sampled at every lower one.
    digest = hashlib.blake2b(user_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % (1 << level) == 0


def _admit(state: VideoState, event_id: str, at_ms: int) -> bool:
    watermark = state["wm"]
    if event_id in state["seen"] or (watermark is not None and at_ms < watermark - RETENTION_MS):
        return False
    seen = state["seen"]
    seen.append(event_id)
    del seen[:-MAX_SEEN_IDS]
    state["wm"] = at_ms if watermark is None else max(watermark, at_ms)
    cutoff = state["wm"] - RETENTION_MS
    if state["pruned"] is None or cutoff - state["pruned"] >= PRUNE_STEP_MS:
        _prune(state, cutoff)
    return True


def _prune(state: VideoState, cutoff: int) -> None:
    """Drop what no window can reach any more (nothing admitted later is older than `cutoff`)."""
    state["pruned"] = cutoff
    viewers = state["viewers"]
    for user_id, sessions in list(viewers.items()):
        for session_id in [sid for sid, session in sessions.items() if session[_LAST] < cutoff]:
            del sessions[session_id]
        if not sessions:
            del viewers[user_id]
    likes = state["likes"]
    for user_id, record in list(likes.items()):
        actions = record[_ACTIONS]
        if actions[0][0] >= cutoff:  # sorted: nothing to drop
            continue
        _drop_oldest_actions(state, record, sum(1 for at, _ in actions if at < cutoff), fold=False)
        if not actions:
            # Idle for 24 h: forgotten, so that the map only holds recent users.
            del likes[user_id]
    folded = state["folded"]
    for key in [key for key in folded if int(key) + BUCKET_MS <= cutoff]:
        del folded[key]
    state["levels"] = [entry for entry in state["levels"] if entry[0] >= cutoff]
    _lower_level(state)


def _lower_level(state: VideoState) -> None:
    """Once traffic has dropped, sample more users again: the lowest level at which the sessions of
    the last 24 h would fill a quarter of the cap (raising happens at half: no flapping). Windows
    reaching back before the change keep using the higher level (`levels`), whose sample is
    complete for them."""
    recent = (sum(map(len, state["viewers"].values()))
              + sum(bucket[_F_SESSIONS] for bucket in state["folded"].values()))
    level = state["level"]
    target = level
    while target > 0 and recent <= (MAX_SESSIONS // 4) << (target - 1):
        target -= 1
    if target < level and len(state["levels"]) < MAX_LEVEL_LOG:
        state["levels"].append([state["wm"], level])
        state["level"] = target


def _touch_session(state: VideoState, user_id: str, session_id: str, at_ms: int) -> list[Any]:
    session = state["viewers"].get(user_id, {}).get(session_id)
    if session is not None:
        session[_FIRST] = min(session[_FIRST], at_ms)
        session[_LAST] = max(session[_LAST], at_ms)
        return session
    _make_room(state, user_id)  # before creating: the new session itself is never folded here
    session = state["viewers"].setdefault(user_id, {})[session_id] = [at_ms, at_ms, 0, 0, []]
    return session


def _make_room(state: VideoState, user_id: str) -> None:
    """Room for one more session of `user_id` under both caps. At the total cap, fold the least
    recently active sessions of users outside the sample. The sample is kept to half the cap
    (raising the level halves it), so the other half holds the most recent unsampled sessions
    and the ones folded are long finished, not still playing."""
    viewers = state["viewers"]
    own = viewers.get(user_id, {})
    if len(own) >= MAX_SESSIONS_PER_USER:
        _fold_session(state, user_id, min(own, key=lambda sid: (own[sid][_LAST], sid)))
    count = sum(map(len, viewers.values()))
    if count < MAX_SESSIONS:
        return
    while _sampled_sessions(state) > MAX_SESSIONS // 2:
        state["levels"].append([state["wm"], state["level"]])
        state["level"] += 1
    unsampled = sorted((session[_LAST], uid, sid) for uid, sessions in viewers.items()
                       if not _sampled(uid, state["level"]) for sid, session in sessions.items())
    for _, uid, sid in unsampled[:count - int(MAX_SESSIONS * EVICT_TO)]:
        _fold_session(state, uid, sid)


def _sampled_sessions(state: VideoState) -> int:
    level = state["level"]
    return sum(len(sessions) for user_id, sessions in state["viewers"].items() if _sampled(user_id, level))


def _fold_session(state: VideoState, user_id: str, session_id: str) -> None:
    sessions = state["viewers"][user_id]
    session = sessions.pop(session_id)
    if not sessions:
        del state["viewers"][user_id]
    bucket = _bucket(state, session[_LAST])
    bucket[_F_SESSIONS] += 1
    bucket[_F_COMPLETED] += _completed(session)
    bucket[_F_FRACTION] += _watched_fraction(session)
    for at in session[_VIEWS]:
        _bucket(state, at)[_F_VIEWS] += 1


def _completed(session: list[Any]) -> int:
    # Integer comparison: exactly 90 % must count, whatever float rounding would say.
    return int(session[_DUR] > 0 and session[_POS] * 1000 >= session[_DUR] * COMPLETED_PERMILLE)


def _watched_fraction(session: list[Any]) -> float:
    # A session without a tick has no known duration: it watched nothing measurable.
    return min(1.0, session[_POS] / session[_DUR]) if session[_DUR] > 0 else 0.0


def _action_order(action: list[int]) -> tuple[int, int]:
    # At the same millisecond the unlike counts as the later action: a tie never adds a like.
    return action[0], -action[1]


def _changes(record: list[Any]) -> Iterator[tuple[int, int]]:
    """(at_ms, +1 | -1) for each action that changed the user's like state.

    The first action after an unknown prior is a change by definition: an unlike then takes back
    a like older than the state remembers. Changes alternate, so any window holds -1, 0 or +1.
    """
    state = record[_PRIOR]
    for at, liked in record[_ACTIONS]:
        if liked != state:
            yield at, 1 if liked else -1
            state = liked


def _drop_oldest_actions(state: VideoState, record: list[Any], count: int, *, fold: bool) -> None:
    """Remove a user's `count` oldest actions, keeping what follows them correct: `prior` becomes
    the state they left, and later actions at or before `floor` are refused. With `fold` their
    changes move to the folded buckets (still inside the retention, so still counted)."""
    if count == 0:
        return
    actions = record[_ACTIONS]
    dropped = actions[:count]
    if fold:
        for at, sign in _changes([record[_PRIOR], record[_FLOOR], dropped]):
            _bucket(state, at)[_F_LIKES] += sign
    del actions[:count]
    record[_FLOOR], record[_PRIOR] = dropped[-1]


def _enforce_liker_cap(state: VideoState) -> None:
    likes = state["likes"]
    if len(likes) <= MAX_LIKERS:
        return
    # The latest action is never dropped, so actions[-1] is the user's last activity.
    by_age = sorted(likes, key=lambda uid: (likes[uid][_ACTIONS][-1][0], uid))
    for user_id in by_age[:len(likes) - int(MAX_LIKERS * EVICT_TO)]:
        record = likes.pop(user_id)
        _drop_oldest_actions(state, record, len(record[_ACTIONS]), fold=True)


def _bucket(state: VideoState, at_ms: int) -> list[Any]:
    key = str(at_ms - at_ms % BUCKET_MS)  # JSON object keys are strings: use strings throughout
    bucket = state["folded"].get(key)
    if bucket is None:
        bucket = state["folded"][key] = [0, 0, 0.0, 0, 0]
    return bucket
