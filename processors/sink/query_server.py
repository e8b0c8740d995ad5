"""The sink's loopback endpoint: analyst queries against the engine it holds, and its health.

chDB lets one process open a data directory; while the sink runs, that process is the sink, so
`lustrax sql` sends queries here: `POST /v1/query {"sql", "parameters"}` with an admin or analyst
bearer token. Each query runs in the sandbox of infra/clickhouse/sandbox.py, on a client of its own,
never on the client the sink writes through. `GET /healthz` answers 503 with the reason while the
sink's inserts are failing, so `lustrax status` shows it as not ready.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from common.errors import ApiError, LustraxError
from common.settings import Settings
from common.tokens import verify_token
from infra.clickhouse.sandbox import QueryRefused, run_sandboxed
from processors.loopback import JsonHandler

MAX_BODY_BYTES = 256 * 1024
QUERY_ROLES = frozenset({"admin", "analyst"})
# None while healthy, else why not (the sink's last insert error).
HealthCheck = Callable[[], str | None]


def make_handler(settings: Settings, health: HealthCheck) -> type[BaseHTTPRequestHandler]:
    class QueryHandler(JsonHandler):
        def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
            if self.path != "/healthz":
                self.reply(404, ApiError(404, "not_found", "no such path").body())
            elif (problem := health()) is None:
                self.reply(200, {"status": "ok"})
            else:
                self.reply(503, {"status": "failing", "reason": problem})

        def do_POST(self) -> None:  # noqa: N802
            try:
                if self.path != "/v1/query":
                    raise ApiError(404, "not_found", "no such path")
                principal = verify_token(settings.jwt_signing_secret, self.headers.get("Authorization"),
                                         max_ttl_s=settings.jwt_max_ttl_s)
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
                    answer = run_sandboxed(settings, sql, parameters)
                except QueryRefused as exc:
                    raise ApiError(400, "query_refused", str(exc), "sql") from None
                except LustraxError as exc:
                    raise ApiError(400, "query_failed", str(exc), "sql") from None
                self.reply(200, answer)
            except ApiError as error:
                self.reply(error.status, error.body())

    return QueryHandler


def start_query_server(host: str, port: int, settings: Settings, health: HealthCheck) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer((host, port), make_handler(settings, health))
    threading.Thread(target=server.serve_forever, name="query-server", daemon=True).start()
    return server
