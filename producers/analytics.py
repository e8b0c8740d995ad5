"""The API's reads of ClickHouse: documented analyst queries (infra/clickhouse/queries), answered
through the sink's endpoint while it holds the embedded engine (the API never opens it itself)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from common.errors import ApiError, LustraxError
from common.settings import Settings
from infra.clickhouse.analyst import query_file, run_sql

CACHE_ENTRIES = 32


class AnalyticsReader:
    """Each answer reused for `ttl_s` and asked one at a time, so that any number of requests costs
    ClickHouse one query per distinct question per interval; 503 naming `what` when it fails."""

    def __init__(self, settings: Settings, ttl_s: float) -> None:
        self.settings = settings
        self.ttl_s = ttl_s
        self._answers: dict[tuple[str, tuple[tuple[str, str], ...]], tuple[float, list[dict[str, Any]]]] = {}
        self._lock = asyncio.Lock()

    async def rows(self, query: str, parameters: dict[str, str], what: str) -> list[dict[str, Any]]:
        key = (query, tuple(sorted(parameters.items())))
        async with self._lock:
            cached = self._answers.get(key)
            if cached is not None and time.monotonic() - cached[0] < self.ttl_s:
                return cached[1]
            try:
                columns, rows = await asyncio.to_thread(run_sql, self.settings, query_file(query), parameters, False)
            except LustraxError as exc:
                raise ApiError(503, "analytics_unavailable", f"{what} is not available: {exc}", None,
                               retry_after_s=5) from None
            answer = [dict(zip(columns, row)) for row in rows]
            if len(self._answers) >= CACHE_ENTRIES:
                self._answers.clear()
            self._answers[key] = (time.monotonic(), answer)
            return answer
