"""One way to get a ClickHouse client: from the DSN in settings.

chDB locks its data directory: one process at a time may open it, and one process may open only
one chDB path. Close the client when done so another process (e.g. `lustrax sql`) can take it.
"""

from __future__ import annotations

from pathlib import Path

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from common.settings import Settings


def clickhouse_client(settings: Settings, database: str | None = None) -> Client:
    """`database` becomes the session's default (unqualified table names resolve there)."""
    url = settings.clickhouse_url
    if url.startswith("chdb://"):
        Path(url.removeprefix("chdb://")).mkdir(parents=True, exist_ok=True)
    return clickhouse_connect.get_client(dsn=url, database=database)
