"""What the recs worker does to the vector store: train, add new videos, fold in watch ticks.

One writer: the recs worker's main thread calls every method here, so no two writes to a user's
row interleave. Every user write is a read, a merge (history.py: a join, so a tick read twice or a
training that overlaps the ticks changes nothing) and an upsert; the row's candidates (the Milvus
search for its embedding) are searched again only when the model or the user's recent or finished
videos changed, not for every tick.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from catalog.fold import PUBLISHED
from catalog.projection import CatalogProjection
from common.settings import Settings
from infra.clickhouse.analyst import run_sql
from infra.clickhouse.sandbox import MAX_ROWS
from infra.milvus.store import USERS, VIDEOS, UserRow, VectorStore, VideoRow
from processors.recs.embeddings import (VideoTraits, Watch, cold_start_vector, group_by_user, learn_video_embeddings,
                                        side_vectors, user_embedding)
from processors.recs.history import History, completion, finished, merged, recent

log = logging.getLogger(__name__)
USER_BATCH = 500
PAGE_ROWS = 8000  # (user, video) pairs asked per page: under the sandbox's MAX_ROWS

# Per user and video, the furthest point reached and the last tick, for the users in one hash part
# (the analyst sandbox returns at most MAX_ROWS rows per query, so the pairs are read in parts).
WATCHES_SQL = """
SELECT user_id, video_id, max(least(1, position_ms / duration_ms)) AS completion,
       toUnixTimestamp64Milli(max(occurred_at)) AS last_ms
FROM `{db}`.watch_ticks
WHERE occurred_at >= now64(3) - toIntervalDay({days:UInt32}) AND duration_ms > 0
  AND cityHash64(user_id) % {parts:UInt32} = {part:UInt32}
GROUP BY user_id, video_id
"""
PAIRS_SQL = """
SELECT uniqExact(user_id, video_id) AS pairs FROM `{db}`.watch_ticks
WHERE occurred_at >= now64(3) - toIntervalDay({days:UInt32}) AND duration_ms > 0
"""


def read_watches(settings: Settings) -> list[Watch]:
    """Every (user, video) pair of the last LUSTRAX_RECS_TRAINING_DAYS from ClickHouse (through the
    sink's endpoint while it holds the embedded engine: this process never opens it)."""
    days = str(settings.recs_training_days)
    _, [[pairs]] = run_sql(settings, PAIRS_SQL, {"days": days}, False)
    parts = max(1, math.ceil(int(pairs) / PAGE_ROWS))
    while True:
        watches: list[Watch] = []
        for part in range(parts):
            _, rows = run_sql(settings, WATCHES_SQL, {"days": days, "parts": str(parts), "part": str(part)}, False)
            if len(rows) >= MAX_ROWS:
                break  # a part may have been cut at MAX_ROWS: smaller parts
            watches += [Watch(str(user), str(video), float(done), int(at)) for user, video, done, at in rows]
        else:
            return watches
        parts *= 2


@dataclass(frozen=True)
class TrainReport:
    watches: int
    users: int
    learned: int
    cold: int
    removed: int
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {"watches": self.watches, "users": self.users, "learned": self.learned, "cold": self.cold,
                "removed": self.removed, "seconds": round(self.seconds, 3)}


def _published_traits(catalog: CatalogProjection) -> dict[str, VideoTraits]:
    traits = {}
    after = None
    while True:
        records, after = catalog.page(PUBLISHED, 1000, after)
        traits.update({r.video_id: VideoTraits(r.tags, r.uploader_id) for r in records})
        if after is None:
            return traits


class RecsModel:
    def __init__(self, settings: Settings, store: VectorStore, catalog: CatalogProjection) -> None:
        self.settings = settings
        self.store = store
        self.catalog = catalog
        self.vectors: dict[str, np.ndarray] = {}  # every stored video's embedding
        self.learned: set[str] = set()
        self.model = 0  # when the stored embeddings were trained (epoch ms); 0: never
        self.users_written = False  # since the last flush of the users' collection
        for row in store.all_videos():
            self.vectors[row.video_id] = np.asarray(row.embedding, dtype=np.float32)
            if row.source == "learned":
                self.learned.add(row.video_id)
            self.model = max(self.model, row.model)

    # -- videos ----------------------------------------------------------------------------
    def train(self, watches: list[Watch]) -> TrainReport:
        """New embeddings for every published video, then every user's row from them."""
        began = time.monotonic()
        model = int(time.time() * 1000)
        traits = _published_traits(self.catalog)
        # Every video watched teaches co-watching; only published ones are stored and recommended.
        learned = {v: vec for v, vec in learn_video_embeddings(watches, self.settings.recs_dim).items() if v in traits}
        sides = side_vectors(learned, traits)
        cold = {v: cold_start_vector(v, traits[v], sides, self.settings.recs_dim) for v in traits if v not in learned}
        self.store.upsert_videos([VideoRow(v, vec.tolist(), "learned", model) for v, vec in learned.items()]
                                 + [VideoRow(v, vec.tolist(), "cold", model) for v, vec in cold.items()])
        gone = sorted(set(self.vectors) - set(traits))  # no longer published (or never were)
        self.store.delete_videos(gone)
        self.store.flush(VIDEOS)
        self.vectors, self.learned, self.model = {**learned, **cold}, set(learned), model
        histories = {user: [(w.video_id, w.completion, w.last_ms) for w in items]
                     for user, items in group_by_user(watches).items()}
        users = sorted(set(histories) | set(self.store.all_user_ids()))
        for start in range(0, len(users), USER_BATCH):
            batch = users[start:start + USER_BATCH]
            self._write_users({user: histories.get(user, []) for user in batch})
        self.store.flush(USERS)
        self.users_written = False
        report = TrainReport(len(watches), len(users), len(learned), len(cold), len(gone), time.monotonic() - began)
        log.info("trained: %s", report.as_dict())
        return report

    def add_new_videos(self) -> int:
        """Cold-start embeddings for videos published since (from their tags and uploader)."""
        traits = _published_traits(self.catalog)
        new = [v for v in traits if v not in self.vectors]
        if not new:
            return 0
        sides = side_vectors({v: self.vectors[v] for v in self.learned}, traits)
        vectors = {v: cold_start_vector(v, traits[v], sides, self.settings.recs_dim) for v in new}
        self.store.upsert_videos([VideoRow(v, vec.tolist(), "cold", self.model) for v, vec in vectors.items()])
        self.vectors.update(vectors)
        return len(new)

    def flush_users(self) -> None:
        if self.users_written:
            self.store.flush(USERS)
            self.users_written = False

    # -- users -----------------------------------------------------------------------------
    def apply_ticks(self, ticks: Iterable[Mapping[str, Any]]) -> int:
        """Fold WatchTick records into their users' rows; returns how many users changed."""
        updates: dict[str, list[tuple[str, float, int]]] = {}
        for tick in ticks:
            done = completion(int(tick["position_ms"]), int(tick["duration_ms"]))
            if done is None:
                continue
            at_ms = int(tick["occurred_at"].timestamp() * 1000)
            updates.setdefault(str(tick["user_id"]), []).append((str(tick["video_id"]), done, at_ms))
        users = list(updates)
        for start in range(0, len(users), USER_BATCH):
            self._write_users({user: updates[user] for user in users[start:start + USER_BATCH]})
        return len(users)

    def _write_users(self, updates: Mapping[str, list[tuple[str, float, int]]]) -> None:
        settings = self.settings
        before = self.store.users(updates)
        now = int(time.time() * 1000)
        rows: list[UserRow] = []
        to_search: list[tuple[int, list[float]]] = []
        for user, changes in updates.items():
            old = before.get(user)
            history: History = merged(old.history if old else {}, changes, settings.recs_history_size)
            latest = recent(history, settings.recs_recent_size)
            vector = user_embedding(latest, self.vectors)
            embedding = vector.tolist() if vector is not None else [0.0] * settings.recs_dim
            done = finished(history)
            stale = (old is None or old.model != self.model or old.finished != done
                     or [v for v, _ in recent(old.history, settings.recs_recent_size)] != [v for v, _ in latest])
            if old is not None and not stale and history == old.history:
                continue  # a tick read again (or a training that adds nothing): the row stays as it is
            candidates = old.candidates if old is not None and not stale else []
            if vector is not None and stale:
                to_search.append((len(rows), embedding))
            rows.append(UserRow(user, embedding, history, done, candidates, self.model, now))
        if to_search:
            found = self.store.nearest([vector for _, vector in to_search],
                                       settings.recs_candidates + max(len(rows[i].finished) for i, _ in to_search))
            for (index, _), hits in zip(to_search, found):
                row = rows[index]
                skip = set(row.finished)
                kept = [(v, score) for v, score in hits if v not in skip][:settings.recs_candidates]
                rows[index] = UserRow(row.user_id, row.embedding, row.history, row.finished, kept, row.model, now)
        if rows:
            self.store.upsert_users(rows)
            self.users_written = True
