"""Issue 9 items 1-2 and issue 10 item 6: analyst queries in a sandbox, a sink no query can break.

Every probe runs through the sink's real loopback endpoint and on the direct chDB path (`lustrax
sql` with no sink answering), against the run's real engine; the sink is the real consumer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from common.errors import LustraxError
from common.process import free_port
from common.settings import Settings
from infra.clickhouse.analyst import run_sql
from infra.clickhouse.migrate import migrate
from infra.clickhouse.sandbox import MAX_ROWS
from lustrax.services import settings_env
from lustrax.stack import _probe_clickhouse, probe_components
from processors.sink.query_server import start_query_server
from processors.sink.service import sink_health
from processors.sink.sink import ClickHouseSink
from schemas.codec import encode
from schemas.topics import TOPIC_BY_SCHEMA

pytestmark = pytest.mark.integration
OUT = Path(f"/tmp/lustrax-sandbox-probe-{uuid.uuid4().hex}")


def probes(settings: Settings) -> list[str]:
    """Every statement issue 9 found running, and its neighbours."""
    return [
        "SELECT * FROM file('/proc/self/environ', 'LineAsString')",
        "SELECT file('/proc/self/environ')",
        f"SELECT 1 INTO OUTFILE '{OUT}.outfile'",
        f"INSERT INTO FUNCTION file('{OUT}.insert', 'CSV') SELECT 1",
        "SELECT * FROM url('http://127.0.0.1:9/', 'LineAsString')",
        f"SELECT * FROM s3('{settings.s3_endpoint}/{settings.s3_uploads_bucket}/x', 'LineAsString')",
        "SELECT * FROM remote('127.0.0.1:9000', system.one)",
        "SYSTEM STOP MERGES",
        "KILL QUERY WHERE 1",
        "SELECT number FROM numbers(100000) SETTINGS max_result_rows = 0",
        "SELECT count() FROM {db}.views SETTINGS max_execution_time = 0",
        "SET readonly = 0",
        "DROP TABLE lustrax.heat_scores",
        "SELECT * FROM system.processes",
        "SHOW PROCESSLIST",
        "DESCRIBE system.processes",
        "SHOW TABLES FROM system",
    ]


@pytest.fixture(scope="module")
def endpoint(stack: Settings, sink: ClickHouseSink) -> Iterator[Settings]:
    """The sink's query endpoint, as `lustrax worker sink` serves it, beside the running sink."""
    settings = stack.model_copy(update={"sink_query_port": free_port()})
    server = start_query_server("127.0.0.1", settings.sink_query_port, settings, lambda: sink_health(sink))
    yield settings
    server.shutdown()


@pytest.fixture(params=["sink", "direct"])
def path(request: pytest.FixtureRequest, endpoint: Settings) -> Settings:
    """Through the sink's endpoint, or the direct chDB path (nothing listens on the query port)."""
    return endpoint if request.param == "sink" else endpoint.model_copy(update={"sink_query_port": free_port()})


def test_every_probe_is_refused(path: Settings) -> None:
    for probe in probes(path):
        with pytest.raises(LustraxError, match="^query refused: ") as refused:
            run_sql(path, probe, {})
        assert "\n" not in str(refused.value)
    assert not list(OUT.parent.glob(f"{OUT.name}*"))  # nothing was written


def test_the_row_cap_holds(path: Settings) -> None:
    _, rows = run_sql(path, "SELECT number FROM numbers(100000)", {})
    assert len(rows) == MAX_ROWS


def test_the_default_database_is_the_event_store(path: Settings) -> None:
    # The sink creates no heat score here; the query must still resolve `heat_scores` without {db}.
    columns, [[count]] = run_sql(path, "SELECT count() FROM heat_scores", {})
    assert columns == ["count()"] and count >= 0
    assert run_sql(path, "SELECT count() FROM {db}.heat_scores", {})[1] == [[count]]
    assert ["heat_scores"] in run_sql(path, "SHOW TABLES", {})[1]
    assert run_sql(path, "SELECT {n:UInt8} + 1", {"n": "41"})[1] == [[42]]
    names = [row[0] for row in run_sql(path, "DESCRIBE views", {})[1]]
    assert "video_id" in names


def test_the_documented_query_files_pass_the_sandbox(path: Settings) -> None:
    query = (Path(__file__).parents[2] / "infra/clickhouse/queries/trending_now.sql").read_text()
    _, rows = run_sql(path, query, {"minutes": "60", "limit": "10"})  # refused or failed would raise
    assert len(rows) <= 10


def _produce_view(settings: Settings, video: str) -> None:
    record = {"event_id": uuid.uuid4(), "occurred_at": datetime.now(UTC), "producer": "test",
              "schema_version": 1, "video_id": video, "user_id": "sandbox-user", "session_id": f"s-{video}"}
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    producer.produce(TOPIC_BY_SCHEMA["VideoView"].name, encode("VideoView", record), video.encode())
    assert producer.flush(30) == 0


def _views_of(client: Any, database: str, video: str) -> int:
    return int(client.query(f"SELECT count() FROM `{database}`.views FINAL WHERE video_id = {{v:String}}",
                            parameters={"v": video}).result_rows[0][0])


def _healthz(settings: Settings) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{settings.sink_query_port}/healthz", timeout=3) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _wait(condition: Any, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_the_sink_keeps_storing_after_every_refused_statement(endpoint: Settings, sink: ClickHouseSink) -> None:
    for probe in probes(endpoint):
        with pytest.raises(LustraxError, match="^query refused: "):
            run_sql(endpoint, probe, {})
    video = f"sandbox-{uuid.uuid4().hex}"
    _produce_view(endpoint, video)
    _wait(lambda: _views_of(sink.client, sink.database, video) == 1)
    assert sink.insert_error is None
    assert sink.client.query("SELECT getSetting('readonly')").result_rows == [(0,)]
    assert _healthz(endpoint) == (200, {"status": "ok"})


def test_lustrax_sql_refuses_in_one_line_and_answers_through_the_sink(endpoint: Settings) -> None:
    env = {**os.environ, **settings_env(endpoint)}
    refused = subprocess.run([sys.executable, "-m", "lustrax.cli", "sql",
                              "SELECT * FROM file('/proc/self/environ','LineAsString')"],
                             env=env, capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0 and "JWT" not in refused.stdout + refused.stderr
    assert refused.stderr.strip().count("\n") == 0 and "query refused" in refused.stderr
    answered = subprocess.run([sys.executable, "-m", "lustrax.cli", "sql", "SELECT count() AS n FROM heat_scores"],
                              env=env, capture_output=True, text=True, timeout=120)
    assert answered.returncode == 0, answered.stderr
    assert answered.stdout.splitlines()[0].strip() == "n"


def test_a_sink_that_cannot_write_is_not_ready(stack: Settings, clickhouse: Any) -> None:
    missing = f"lustrax_missing_{uuid.uuid4().hex[:8]}"
    settings = stack.model_copy(update={"sink_query_port": free_port()})
    broken = ClickHouseSink(clickhouse, missing, stack.kafka_bootstrap, batch_interval_s=0.2,
                            group_id=f"test-broken-{uuid.uuid4().hex}")
    server = start_query_server("127.0.0.1", settings.sink_query_port, settings, lambda: sink_health(broken))
    thread = threading.Thread(target=broken.run, daemon=True)
    thread.start()
    try:
        video = f"sandbox-{uuid.uuid4().hex}"
        _produce_view(stack, video)
        _wait(lambda: _healthz(settings)[0] == 503)
        status, body = _healthz(settings)
        assert body["status"] == "failing" and missing in body["reason"]
        assert probe_components(settings)["sink"][0] is False
        ok, detail = _probe_clickhouse(settings)
        assert not ok and "cannot write" in detail and missing in detail
        # The database appears: the retried batch goes in and the sink is ready again.
        migrate(clickhouse, missing)
        _wait(lambda: _healthz(settings)[0] == 200)
        assert _views_of(clickhouse, missing, video) == 1 and broken.insert_error is None
        assert probe_components(settings)["sink"][0] is True
    finally:
        broken.stop()
        thread.join(timeout=60)
        server.shutdown()
        clickhouse.command(f"DROP DATABASE IF EXISTS `{missing}`")
