"""The catalog projection: every video's VideoRecord in memory, indexed for listings.

Fed by catalog/feed.py (a consumer thread) and read by the API's event loop, hence the lock. The
projection only ever folds events in (catalog/fold.py), so feeding it the same event twice, from
the topics and from the API's own writes (read-your-writes after a review decision), is harmless.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from catalog.cursor import Position
from catalog.fold import IN_REVIEW, VideoRecord, apply

SortKey = tuple[int, str]  # (-sort time in ms, video_id): ascending order is newest first


def _sort_key(record: VideoRecord) -> SortKey:
    return (-int(record.sort_time.timestamp() * 1000), record.video_id)


class CatalogProjection:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: dict[str, VideoRecord] = {}
        self._by_state: dict[str, list[SortKey]] = {}  # each list sorted: newest first

    def __len__(self) -> int:
        return len(self._records)

    def apply_all(self, events: Iterable[tuple[str, Mapping[str, Any]]]) -> None:
        with self._lock:
            for schema, event in events:
                video_id = str(event["video_id"])
                before = self._records.get(video_id)
                after = apply(before, schema, event)
                if after == before:
                    continue  # a redelivery: nothing new
                if before is not None:
                    index = self._by_state[before.state]
                    del index[bisect.bisect_left(index, _sort_key(before))]
                self._records[video_id] = after
                bisect.insort(self._by_state.setdefault(after.state, []), _sort_key(after))

    def get(self, video_id: str) -> VideoRecord | None:
        return self._records.get(video_id)

    def page(self, state: str, limit: int, after: Position | None) -> tuple[list[VideoRecord], Position | None]:
        """Up to `limit` videos in `state`, newest first, after `after`; and the next page's position."""
        with self._lock:
            index = self._by_state.get(state, [])
            start = 0 if after is None else bisect.bisect_right(index, (-after.sort_ms, after.video_id))
            keys = index[start:start + limit]
            more = start + limit < len(index)
            records = [self._records[video_id] for _, video_id in keys]
        last = Position(-keys[-1][0], keys[-1][1]) if more and keys else None
        return records, last

    def review_queue(self, limit: int) -> list[VideoRecord]:
        """Videos waiting for a human, oldest request first."""
        with self._lock:
            waiting = [self._records[video_id] for _, video_id in self._by_state.get(IN_REVIEW, [])]
        waiting.sort(key=lambda r: (r.queued_at or r.sort_time, r.video_id))
        return waiting[:limit]
