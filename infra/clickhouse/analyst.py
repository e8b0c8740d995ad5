"""`lustrax sql`: read-only queries for analysts, wherever the engine is.

- a ClickHouse server (`LUSTRAX_CLICKHOUSE_DSN=http://...`): queried directly;
- embedded chDB while the pipeline runs: the sink process holds the data directory (one process
  per directory), so the query goes to its loopback endpoint;
- embedded chDB with nothing running: opened here, queried, closed.
`{db}` in the text stands for the configured database; `{name:Type}` are query parameters.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from typing import Any

from infra.clickhouse.client import clickhouse_client
from common.errors import LustraxError
from common.settings import Settings
from common.tokens import issue_token


def format_table(columns: list[str], rows: list[list[Any]], max_width: int = 60) -> str:
    """A plain text table (pure)."""
    cells = [[("NULL" if v is None else str(v))[:max_width] for v in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    line = "  ".join("-" * w for w in widths)
    out = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)), line]
    out += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    out.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(out)


def run_sql(settings: Settings, sql: str, parameters: dict[str, str]) -> tuple[list[str], list[list[Any]]]:
    sql = sql.replace("{db}", settings.clickhouse_database)
    if settings.clickhouse_embedded:
        answer = _ask_sink(settings, sql, parameters)
        if answer is not None:
            return answer
    return _query_directly(settings, sql, parameters)


def _ask_sink(settings: Settings, sql: str, parameters: dict[str, str]) -> tuple[list[str], list[list[Any]]] | None:
    token = issue_token(settings.jwt_signing_secret, "lustrax-cli", ("analyst",), 300)
    request = urllib.request.Request(
        f"http://127.0.0.1:{settings.sink_query_port}/v1/query", method="POST",
        data=json.dumps({"sql": sql, "parameters": parameters}).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            body = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        error = json.loads(exc.read() or b"{}").get("error", {})
        raise LustraxError(f"query failed: {error.get('message', exc.reason)}") from None
    except OSError:
        return None  # no sink running: the directory is free to open here
    return body["columns"], body["rows"]


def _query_directly(settings: Settings, sql: str, parameters: dict[str, str]) -> tuple[list[str], list[list[Any]]]:
    from processors.sink.query_server import run_query

    try:
        client = clickhouse_client(settings)
    except Exception as exc:  # noqa: BLE001 - chDB's lock error, an unreachable server: one line
        raise LustraxError(f"cannot open {settings.clickhouse_url}: {str(exc).strip().splitlines()[0]}") from None
    try:
        answer = run_query(client, threading.Lock(), sql, parameters)
    except Exception as exc:  # noqa: BLE001
        raise LustraxError(f"query failed: {str(exc).strip().splitlines()[0][:2000]}") from None
    finally:
        client.close()
    return answer["columns"], answer["rows"]
