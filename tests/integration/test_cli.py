"""The `lustrax` command as a user runs it: up, status, down, provision; clear one-line errors."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
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
        "LUSTRAX_EDGE_PORT": str(free_port()),
        "LUSTRAX_INGEST_PORT": str(free_port()),
        "LUSTRAX_TRANSCODE_WEB_PORT": str(free_port()),
        "LUSTRAX_SINK_QUERY_PORT": str(free_port()),
        "LUSTRAX_HEAT_WEB_PORT": str(free_port()),
        "LUSTRAX_MODERATION_WEB_PORT": str(free_port()),
        "LUSTRAX_WS_PORT": str(free_port()),
        "LUSTRAX_SOCKETIO_PORT": str(free_port()),
        "LUSTRAX_RECS_WEB_PORT": str(free_port()),
        "LUSTRAX_RECS_MILVUS_PORT": str(free_port()),
        "LUSTRAX_TAKEDOWN_WEB_PORT": str(free_port()),
    }


def _processes_using(home: Path) -> list[str]:
    """Processes of the stack in `home`: named in their command line or in their LUSTRAX_HOME
    (the services, the guard and their children such as ffmpeg)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            args = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if args and (str(home) in args or f"LUSTRAX_HOME={home}".encode() in environ):
            found.append(f"{proc.name} {args}")
    return found


def test_up_detached_then_status_then_down_leaves_nothing_running(tmp_path: Path) -> None:
    env = _fresh_env(tmp_path)
    up = _lustrax(env, "up", "--detach")
    assert up.returncode == 0, up.stderr
    assert env["LUSTRAX_KAFKA_BOOTSTRAP"] in up.stdout and env["LUSTRAX_S3_ENDPOINT"] in up.stdout
    assert f"127.0.0.1:{env['LUSTRAX_INGEST_PORT']}" in up.stdout
    try:
        # `lustrax sql` through the real sink process: refused statements leave it ready
        refused = _lustrax(env, "sql", "DROP TABLE lustrax.heat_scores")
        assert refused.returncode == 1 and "query refused" in refused.stderr
        answered = _lustrax(env, "sql", "SELECT count() AS n FROM heat_scores")
        assert answered.returncode == 0, answered.stderr
        status = _lustrax(env, "status")
        assert status.returncode == 0, status.stdout
        assert status.stdout.count("ready") == 12  # kafka, s3, clickhouse, edge, ingest, transcode, sink, heat,
        #                                            moderation, gateway, recs, takedown
    finally:
        began = time.monotonic()
        down = _lustrax(env, "down")
        down_s = time.monotonic() - began
    assert down.returncode == 0 and "stopped" in down.stdout
    assert down_s < 20, f"`lustrax down` took {down_s:.1f} s"  # services, then the broker, in seconds
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


def test_token_ttl_over_the_maximum_is_a_one_line_error(tmp_path: Path) -> None:
    env = {"LUSTRAX_HOME": str(tmp_path), "LUSTRAX_JWT_MAX_TTL_S": "600"}
    refused = _lustrax(env, "token", "--user", "u", "--ttl", "601", timeout=60)
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr.count("\n") == 1 and "LUSTRAX_JWT_MAX_TTL_S (600 s)" in refused.stderr
    for ttl in (["--ttl", "600"], []):  # no --ttl: the default is capped at the maximum
        issued = _lustrax(env, "token", "--user", "u", *ttl, timeout=60)
        assert issued.returncode == 0 and issued.stdout.count(".") == 2, issued.stderr  # header.claims.signature
