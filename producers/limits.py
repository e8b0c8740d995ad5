"""Per-user rate limiting and the recent-acknowledgement memory (pure, clock passed in)."""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable


class TokenBucketLimiter:
    """Per-key token buckets: `capacity` actions at once, refilled at `rate_per_s`.

    Memory is bounded: beyond `max_keys` the least recently seen key is forgotten (it starts again
    with a full bucket, which only ever errs towards allowing).
    """

    def __init__(self, capacity: float, rate_per_s: float, max_keys: int = 100_000) -> None:
        self.capacity = capacity
        self.rate_per_s = rate_per_s
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)

    def _tokens(self, key: str, now: float) -> float:
        tokens, at = self._buckets.get(key, (self.capacity, now))
        return min(self.capacity, tokens + (now - at) * self.rate_per_s)

    def try_acquire(self, demands: dict[str, int], now: float) -> float:
        """Take `demands[key]` tokens from every key, or none at all.

        Returns 0 when granted, else the seconds until the most constrained key could be granted.
        """
        wait = 0.0
        for key, count in demands.items():
            missing = count - self._tokens(key, now)
            if count > self.capacity:
                return math.inf
            if missing > 0:
                wait = max(wait, missing / self.rate_per_s)
        if wait > 0:
            return wait
        for key, count in demands.items():
            self._buckets[key] = (self._tokens(key, now) - count, now)
            self._buckets.move_to_end(key)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return 0.0


class RecentIds:
    """Event ids acknowledged in the last `ttl_s` seconds, at most `max_ids` of them.

    A client retrying a request whose answer it lost gets its 202 without a second write. This is
    an optimisation: the guarantee that a repeated event_id is counted once is downstream
    deduplication by event_id.
    """

    def __init__(self, ttl_s: float = 600.0, max_ids: int = 200_000) -> None:
        self.ttl_s = ttl_s
        self.max_ids = max_ids
        self._seen: OrderedDict[str, float] = OrderedDict()

    def _expire(self, now: float) -> None:
        while self._seen:
            oldest, at = next(iter(self._seen.items()))
            if now - at <= self.ttl_s and len(self._seen) <= self.max_ids:
                break
            self._seen.popitem(last=False)

    def add_all(self, event_ids: Iterable[str], now: float) -> None:
        for event_id in event_ids:
            self._seen[event_id] = now
            self._seen.move_to_end(event_id)
        self._expire(now)

    def contains_fresh(self, event_id: str, now: float) -> bool:
        at = self._seen.get(event_id)
        return at is not None and now - at <= self.ttl_s
