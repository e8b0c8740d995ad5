"""`lustrax sql`: read-only queries for analysts, wherever the engine is.

- a ClickHouse server (`LUSTRAX_CLICKHOUSE_DSN=http://...`): queried directly;
- embedded chDB while the pipeline runs: the sink process holds the data directory (one process
  per directory), so the query goes to its loopback endpoint;
- embedded chDB with nothing running: opened here, queried, closed.
Wherever it runs, the query goes through the sandbox (infra/clickhouse/sandbox.py): SELECT, EXPLAIN,
DESCRIBE and SHOW over the event store's database, which is the session's default. `{db}` in the
text stands for that database; `{name:Type}` are query parameters.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from common.errors import LustraxError
from common.settings import Settings
from common.tokens import issue_token
from infra.clickhouse.sandbox import QueryRefused, run_sandboxed


QUERIES_DIR = Path(__file__).resolve().parent / "queries"


def query_file(name: str) -> str:
    """The text of a documented analyst query (`trending_now` -> queries/trending_now.sql)."""
    return (QUERIES_DIR / f"{name}.sql").read_text()


def format_table(columns: list[str], rows: list[list[Any]], max_width: int = 60) -> str:
    """A plain text table (pure)."""
    cells = [[("NULL" if v is None else str(v))[:max_width] for v in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    line = "  ".join("-" * w for w in widths)
    out = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)), line]
    out += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    out.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(out)


def run_sql(settings: Settings, sql: str, parameters: dict[str, str], open_embedded: bool = True
            ) -> tuple[list[str], list[list[Any]]]:
    """Columns and rows. `open_embedded=False` for long-running services other than the sink: they
    must never open the chDB directory themselves (it would keep the sink from starting), so with
    no sink answering they get a LustraxError instead."""
    if settings.clickhouse_embedded:
        answer = _ask_sink(settings, sql, parameters)
        if answer is not None:
            return answer
        if not open_embedded:
            raise LustraxError(f"the ClickHouse sink's query endpoint (127.0.0.1:{settings.sink_query_port}) "
                               "does not answer")
    try:
        answer = run_sandboxed(settings, sql, parameters)
    except QueryRefused as exc:
        raise LustraxError(f"query refused: {exc}") from None
    except LustraxError as exc:
        raise LustraxError(f"query failed: {exc}") from None
    return answer["columns"], answer["rows"]


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
        verb = "refused" if error.get("code") == "query_refused" else "failed"
        raise LustraxError(f"query {verb}: {error.get('message', exc.reason)}") from None
    except OSError:
        return None  # no sink running: the directory is free to open here
    return body["columns"], body["rows"]
