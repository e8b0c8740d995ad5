"""GET /v1/reels: a user's reels, ranked by heat, match and exploration (docs/recommendations.md).

Per request: the user's row from Milvus (embedding, finished videos, candidates: the nearest
videos the recs worker found by a Milvus search when it wrote the row), and the pool every user
shares (the hottest videos from ClickHouse, the newest published ones from the catalog, and their
embeddings), reused for LUSTRAX_RECS_CACHE_S. The pool's match with the user is a dot product of
unit vectors here. Only published videos (this replica's catalog), never a finished one.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from catalog.access import is_admin
from catalog.fold import PUBLISHED
from catalog.projection import CatalogProjection
from common.errors import ApiError
from common.settings import Settings
from common.tokens import Principal
from infra.milvus.store import UserRow, VectorStore, VectorStoreError
from producers.analytics import AnalyticsReader
from producers.deps import AgeVerifiedDep, ServiceDep, principal_of
from producers.openapi import operation
from producers.reels import Weights, rank

log = logging.getLogger(__name__)
router = APIRouter()
MAX_REELS_LIMIT = 50
USER_FIELDS = ("embedding", "finished", "candidates")
# The bounds of the ingest API's identifiers (producers/events.py): any other user_id has no reels.
USER_ID_PATTERN = r"^[A-Za-z0-9._:@-]+$"
MILVUS_TIMEOUT_S = 2.0
MILVUS_THREADS = 32
MILVUS_RETRY_S = 1.0  # after a failure, answer 503 at once for this long before trying again


def _unavailable(exc: Exception) -> ApiError:
    return ApiError(503, "recommendations_unavailable", f"recommendations are not available: {exc}", None,
                    retry_after_s=5)


@dataclass(frozen=True)
class Pool:
    """The shared candidates' embeddings: one row of `vectors` per id."""

    ids: list[str]
    vectors: np.ndarray


class ReelsReader:
    """The Milvus client (connected on first use) and the shared candidate pool."""

    def __init__(self, settings: Settings, analytics: AnalyticsReader, catalog: CatalogProjection) -> None:
        self.settings = settings
        self.analytics = analytics
        self.catalog = catalog
        self.weights = Weights(settings.recs_weight_heat, settings.recs_weight_match, settings.recs_weight_explore)
        self._store: VectorStore | None = None
        self._down_until, self._down_reason = 0.0, Exception()
        # Milvus calls block on the network: threads of their own, so that at 100 requests/s they
        # neither queue behind asyncio's small default pool nor take it from the other routes.
        self._executor = ThreadPoolExecutor(max_workers=MILVUS_THREADS, thread_name_prefix="milvus")
        self._connect = threading.Lock()
        self._pool: tuple[float, dict[str, float], Pool] | None = None
        self._pool_lock = asyncio.Lock()
        self._refresh: asyncio.Task[None] | None = None  # kept: the loop holds tasks weakly

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        if self._store is not None:
            self._store.close()

    def _connected(self) -> VectorStore:
        with self._connect:
            if self._store is None:
                self._store = VectorStore(self.settings, timeout_s=MILVUS_TIMEOUT_S)
            return self._store

    async def _milvus(self, call: Any, *args: Any) -> Any:
        def run() -> Any:
            return call(self._connected(), *args)

        if time.monotonic() < self._down_until:
            raise _unavailable(self._down_reason)  # fail fast: no thread waits on a Milvus that just failed
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, run)
        except VectorStoreError as exc:
            self._disconnect()  # a new connection on the next request (pymilvus does not reconnect by itself)
            self._down_until, self._down_reason = time.monotonic() + MILVUS_RETRY_S, exc
            raise _unavailable(exc) from None

    def _disconnect(self) -> None:
        with self._connect:
            store, self._store = self._store, None
        if store is not None:
            try:
                store.close()
            except Exception:  # noqa: BLE001 - it is broken already
                pass

    async def user(self, user_id: str) -> UserRow | None:
        rows = await self._milvus(lambda store, ids: store.users(ids, USER_FIELDS), [user_id])
        return rows.get(user_id)  # type: ignore[no-any-return]

    async def pool(self) -> tuple[dict[str, float], Pool]:
        """Heat per pool video (0 for the fresh ones that are not hot) and the pool's embeddings. An
        expired pool is still answered while a fresh one is fetched beside the requests; only the
        first request waits for one."""
        if self._pool is None:
            async with self._pool_lock:
                if self._pool is None:
                    self._pool = await self._fetch_pool()
        elif time.monotonic() - self._pool[0] >= self.settings.recs_cache_s and not self._pool_lock.locked():
            self._refresh = asyncio.create_task(self._refresh_pool())
        return self._pool[1], self._pool[2]

    async def _refresh_pool(self) -> None:
        async with self._pool_lock:
            try:
                self._pool = await self._fetch_pool()
            except ApiError as exc:  # keep answering with the pool we have; the next request tries again
                log.warning("reels pool not refreshed: %s", exc.message)
                assert self._pool is not None
                self._pool = (time.monotonic() - self.settings.recs_cache_s + 1.0, *self._pool[1:])

    async def _fetch_pool(self) -> tuple[float, dict[str, float], Pool]:
        settings = self.settings
        heat: dict[str, float] = {}
        if settings.recs_hot_candidates:
            rows = await self.analytics.rows("latest_heat_scores", {
                "window": settings.recs_heat_window, "max_age_minutes": str(24 * 60),
                "limit": str(settings.recs_hot_candidates)}, "the heat of the reels")
            heat = {str(row["video_id"]): float(row["score"]) for row in rows}
        fresh, _ = self.catalog.page(PUBLISHED, settings.recs_fresh_candidates, None)
        for record in fresh:
            heat.setdefault(record.video_id, 0.0)
        found = await self._milvus(VectorStore.video_embeddings, list(heat))
        return time.monotonic(), heat, Pool(list(found), np.asarray(list(found.values()), dtype=np.float32)
                                            .reshape(len(found), self.settings.recs_dim))


class Reel(BaseModel):
    video_id: str
    title: str | None
    video_url: str | None
    thumbnail: str | None
    score: float
    heat: float
    match: float
    explore: float


class Reels(BaseModel):
    items: list[Reel]


ReelsPrincipal = Annotated[Principal, principal_of("reels")]


@router.get("/v1/reels", summary="A user's reels: published videos ranked by heat, match and exploration",
            **operation(200, Reels, errors=(403, 503), description=(
                "Best first: `score = w_heat * heat + w_match * match + w_explore * explore` "
                "(docs/recommendations.md); "
                "published videos only, none the user finished. 403 when `user_id` names another user and the "
                "token is not an admin's; 503 when Milvus or ClickHouse does not answer.")))
async def reels(request: Request, service: ServiceDep, principal: ReelsPrincipal, _age: AgeVerifiedDep,
                limit: Annotated[int, Query(ge=1, le=MAX_REELS_LIMIT)] = 20,
                user_id: Annotated[str | None, Query(min_length=1, max_length=128, pattern=USER_ID_PATTERN,
                                                     description="Admins only: another user's reels.")] = None
                ) -> JSONResponse:
    target = principal.user_id if user_id is None else user_id
    if target != principal.user_id and not is_admin(principal):
        raise ApiError(403, "forbidden", "only admins may ask for another user's reels", "user_id")
    reader: ReelsReader = request.app.state.reels
    row, (heat, pool) = await asyncio.gather(reader.user(target), reader.pool())
    matches: dict[str, float] = {}
    if row is not None and any(row.embedding):
        me = np.asarray(row.embedding, dtype=np.float32)
        matches = dict(row.candidates)
        for video_id, match in zip(pool.ids, (pool.vectors @ me).tolist()):
            matches.setdefault(video_id, match)

    def published(video_id: str) -> bool:
        record = service.catalog.get(video_id)
        return record is not None and record.state == PUBLISHED

    ranked = rank(matches, heat, reader.weights, limit, random.random, published,
                  frozenset(row.finished) if row is not None else frozenset())
    items = []
    for item in ranked:
        record = service.catalog.get(item.video_id)
        assert record is not None  # published() checked it
        items.append({"video_id": item.video_id, "title": record.title, "video_url": record.video_url,
                      "thumbnail": record.thumbnail, "score": round(item.score, 6), "heat": round(item.heat, 6),
                      "match": round(item.match, 6), "explore": round(item.explore, 6)})
    return JSONResponse({"items": items}, headers={"Cache-Control": "no-store"})
