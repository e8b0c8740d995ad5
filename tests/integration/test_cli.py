"""The `lustrax` command as a user runs it: up, status, down, provision; clear one-line errors."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from infra.clickhouse.migrate import load_migrations
from common.settings import Settings
from tests.helpers import fresh_env, lustrax_command, processes_using

pytestmark = pytest.mark.integration


def test_up_detached_then_status_then_down_leaves_nothing_running(tmp_path: Path) -> None:
    env = fresh_env(tmp_path)
    up = lustrax_command(env, "up", "--detach")
    assert up.returncode == 0, up.stderr
    assert env["LUSTRAX_KAFKA_BOOTSTRAP"] in up.stdout and env["LUSTRAX_S3_ENDPOINT"] in up.stdout
    assert f"127.0.0.1:{env['LUSTRAX_INGEST_PORT']}" in up.stdout
    try:
        # `lustrax sql` through the real sink process: refused statements leave it ready
        refused = lustrax_command(env, "sql", "DROP TABLE lustrax.heat_scores")
        assert refused.returncode == 1 and "query refused" in refused.stderr
        answered = lustrax_command(env, "sql", "SELECT count() AS n FROM heat_scores")
        assert answered.returncode == 0, answered.stderr
        status = lustrax_command(env, "status")
        assert status.returncode == 0, status.stdout
        assert status.stdout.count("ready") == 12  # kafka, s3, clickhouse, edge, ingest, transcode, sink, heat,
        #                                            moderation, gateway, recs, takedown
    finally:
        began = time.monotonic()
        down = lustrax_command(env, "down")
        down_s = time.monotonic() - began
    assert down.returncode == 0 and "stopped" in down.stdout
    assert down_s < 20, f"`lustrax down` took {down_s:.1f} s"  # services, then the broker, in seconds
    assert processes_using(tmp_path) == []
    after = lustrax_command(env, "status")
    assert after.returncode == 1 and "DOWN" in after.stdout


def test_a_taken_port_is_a_one_line_error_naming_the_component_and_its_log(tmp_path: Path) -> None:
    env = fresh_env(tmp_path)
    host, port = env["LUSTRAX_KAFKA_BOOTSTRAP"].split(":")
    with socket.socket() as squatter:
        squatter.bind((host, int(port)))
        squatter.listen()
        result = lustrax_command(env, "up")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("lustrax: error: kafka: port") and "kafka.log" in lines[0]
    assert "Traceback" not in result.stderr
    assert processes_using(tmp_path) == []


def test_provision_is_idempotent_against_running_services(stack: Settings, tmp_path: Path) -> None:
    # Its own chDB directory: the test process already holds the stack's one (one process per path).
    env = {
        "LUSTRAX_HOME": str(stack.home),
        "LUSTRAX_KAFKA_BOOTSTRAP": stack.kafka_bootstrap,
        "LUSTRAX_S3_ENDPOINT": stack.s3_endpoint,
        "LUSTRAX_CLICKHOUSE_DSN": f"chdb://{tmp_path / 'ch'}",
    }
    first = lustrax_command(env, "provision")
    assert first.returncode == 0, first.stderr
    assert "0 topics created" in first.stdout and f"{len(load_migrations())} migrations applied" in first.stdout
    second = lustrax_command(env, "provision")
    assert second.returncode == 0 and "0 migrations applied" in second.stdout


def test_token_ttl_over_the_maximum_is_a_one_line_error(tmp_path: Path) -> None:
    env = {"LUSTRAX_HOME": str(tmp_path), "LUSTRAX_JWT_MAX_TTL_S": "600"}
    refused = lustrax_command(env, "token", "--user", "u", "--ttl", "601", timeout=60)
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr.count("\n") == 1 and "LUSTRAX_JWT_MAX_TTL_S (600 s)" in refused.stderr
    for ttl in (["--ttl", "600"], []):  # no --ttl: the default is capped at the maximum
        issued = lustrax_command(env, "token", "--user", "u", *ttl, timeout=60)
        assert issued.returncode == 0 and issued.stdout.count(".") == 2, issued.stderr  # header.claims.signature
