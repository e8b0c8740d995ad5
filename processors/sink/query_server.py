"""Read-only queries against the engine the sink holds (`lustrax sql` uses it).

chDB lets one process open a data directory; while the sink runs, that process is the sink, so
queries come to it over loopback HTTP: `POST /v1/query {"sql", "parameters"}` with an admin or
analyst bearer token. Every query runs with `readonly=2` (no writes, no DDL) and returns at most MAX_ROWS rows.
"""

from __future__ import annotations

import json
import logging
import threading
from datetime import date, datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from uuid import UUID

from clickhouse_connect.driver.client import Client

from common.tokens import verify_token
from common.errors import ApiError

log = logging.getLogger(__name__)
MAX_ROWS = 10_000
MAX_BODY_BYTES = 256 * 1024
QUERY_ROLES = frozenset({"admin", "analyst"})
# readonly=2: no writes and no DDL, but the limits below may still be set by the query itself.
READONLY_SETTINGS = {"readonly": 2, "max_result_rows": MAX_ROWS, "result_overflow_mode": "break",
                     "max_execution_time": 60}


def json_value(value: Any) -> Any:
    if isinstance(value, datetime | date | UUID | Decimal):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


def run_query(client: Client, lock: threading.Lock, sql: str, parameters: dict[str, Any] | None) -> dict[str, Any]:
    with lock:
        result = client.query(sql, parameters=parameters or None, settings=READONLY_SETTINGS)
    return {"columns": list(result.column_names),
            "rows": [[json_value(v) for v in row] for row in result.result_rows]}


def make_handler(client: Client, lock: threading.Lock, jwt_secret: str) -> type[BaseHTTPRequestHandler]:
    class QueryHandler(BaseHTTPRequestHandler):
        def _reply(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
            if self.path == "/healthz":
                self._reply(200, {"status": "ok"})
            else:
                self._reply(404, ApiError(404, "not_found", "no such path").body())

        def do_POST(self) -> None:  # noqa: N802
            try:
                if self.path != "/v1/query":
                    raise ApiError(404, "not_found", "no such path")
                principal = verify_token(jwt_secret, self.headers.get("Authorization"))
                if not principal.roles & QUERY_ROLES:
                    raise ApiError(403, "forbidden", "queries need an admin or analyst token", "authorization")
                length = int(self.headers.get("Content-Length") or 0)
                if length > MAX_BODY_BYTES:
                    raise ApiError(413, "body_too_large", f"at most {MAX_BODY_BYTES} bytes")
                try:
                    request = json.loads(self.rfile.read(length))
                    sql, parameters = request["sql"], request.get("parameters") or {}
                    if not isinstance(sql, str) or not isinstance(parameters, dict):
                        raise TypeError
                except (ValueError, KeyError, TypeError):
                    raise ApiError(400, "invalid_request", 'the body must be {"sql": "...", "parameters": {}}',
                                   "sql") from None
                try:
                    answer = run_query(client, lock, sql, parameters)
                except Exception as exc:  # noqa: BLE001 - ClickHouse's message is the useful answer
                    raise ApiError(400, "query_failed", str(exc).strip().splitlines()[0][:2000], "sql") from None
                self._reply(200, answer)
            except ApiError as error:
                self._reply(error.status, error.body())

        def log_message(self, format: str, *args: Any) -> None:
            log.debug(format, *args)

    return QueryHandler


def start_query_server(host: str, port: int, client: Client, lock: threading.Lock, jwt_secret: str
                       ) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer((host, port), make_handler(client, lock, jwt_secret))
    threading.Thread(target=server.serve_forever, name="query-server", daemon=True).start()
    return server
