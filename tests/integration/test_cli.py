"""The `lustrax` command as a user runs it: up, status, down, provision; clear one-line errors."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from infra.clickhouse.migrate import load_migrations
from common.process import free_port
from common.settings import Settings

pytestmark = pytest.mark.integration


def _lustrax(env: dict[str, str], *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lustrax.cli", *args], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=timeout)


def _fresh_env(home: Path) -> dict[str, str]:
    return {
        "LUSTRAX_HOME": str(home),
        "LUSTRAX_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}",
        "LUSTRAX_KAFKA_CONTROLLER_PORT": str(free_port()),
        "LUSTRAX_S3_ENDPOINT": f"http://127.0.0.1:{free_port()}",
        "LUSTRAX_INGEST_PORT": str(free_port()),
        "LUSTRAX_TRANSCODE_WEB_PORT": str(free_port()),
        "LUSTRAX_SINK_QUERY_PORT": str(free_port()),
        "LUSTRAX_HEAT_WEB_PORT": str(free_port()),
        "LUSTRAX_WS_PORT": str(free_port()),
    }


def _processes_using(home: Path) -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if str(home) in line and "ps -eo" not in line]


def test_up_detached_then_status_then_down_leaves_nothing_running(tmp_path: Path) -> None:
    env = _fresh_env(tmp_path)
    up = _lustrax(env, "up", "--detach")
    assert up.returncode == 0, up.stderr
    assert env["LUSTRAX_KAFKA_BOOTSTRAP"] in up.stdout and env["LUSTRAX_S3_ENDPOINT"] in up.stdout
    assert f"127.0.0.1:{env['LUSTRAX_INGEST_PORT']}" in up.stdout
    try:
        status = _lustrax(env, "status")
        assert status.returncode == 0, status.stdout
        assert status.stdout.count("ready") == 8  # kafka, s3, clickhouse, ingest, transcode, sink, heat, gateway
    finally:
        down = _lustrax(env, "down")
    assert down.returncode == 0 and "stopped" in down.stdout
    assert _processes_using(tmp_path) == []
    after = _lustrax(env, "status")
    assert after.returncode == 1 and "DOWN" in after.stdout


def test_a_taken_port_is_a_one_line_error_naming_the_component_and_its_log(tmp_path: Path) -> None:
    env = _fresh_env(tmp_path)
    host, port = env["LUSTRAX_KAFKA_BOOTSTRAP"].split(":")
    with socket.socket() as squatter:
        squatter.bind((host, int(port)))
        squatter.listen()
        result = _lustrax(env, "up")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("lustrax: error: kafka: port") and "kafka.log" in lines[0]
    assert "Traceback" not in result.stderr
    assert _processes_using(tmp_path) == []


def test_provision_is_idempotent_against_running_services(stack: Settings, tmp_path: Path) -> None:
    # Its own chDB directory: the test process already holds the stack's one (one process per path).
    env = {
        "LUSTRAX_HOME": str(stack.home),
        "LUSTRAX_KAFKA_BOOTSTRAP": stack.kafka_bootstrap,
        "LUSTRAX_S3_ENDPOINT": stack.s3_endpoint,
        "LUSTRAX_CLICKHOUSE_DSN": f"chdb://{tmp_path / 'ch'}",
    }
    first = _lustrax(env, "provision")
    assert first.returncode == 0, first.stderr
    assert "0 topics created" in first.stdout and f"{len(load_migrations())} migrations applied" in first.stdout
    second = _lustrax(env, "provision")
    assert second.returncode == 0 and "0 migrations applied" in second.stdout
