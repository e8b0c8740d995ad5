"""Helpers shared by the tests (not fixtures)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import uvicorn
from botocore.stub import Stubber
from prometheus_client.parser import text_string_to_metric_families

from common.process import free_port, stop_process_groups, tail


@contextmanager
def served(app: Any) -> Iterator[str]:
    """Serve an ASGI app with uvicorn over real HTTP on a free loopback port; yields the base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           access_log=False, lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the app did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def wait_until(what: str, check: Any, timeout_s: float = 30.0, every_s: float = 0.2) -> Any:
    """Poll `check()` until it returns something truthy (returned); AssertionError naming `what` after
    `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(every_s)
    raise AssertionError(f"{what} within {timeout_s} s")


def records_on(bootstrap: str, topic: str, predicate: Any, count: int = 1, timeout_s: float = 60.0
               ) -> list[tuple[dict[str, Any], dict[str, bytes]]]:
    """Wait for `count` decoded records on `topic` (read from the start) that satisfy `predicate`.

    Returns (record, headers) pairs; raises AssertionError when they do not arrive in time.
    """
    import uuid

    from confluent_kafka import Consumer, TopicPartition

    from schemas.codec import decode

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"test-{uuid.uuid4().hex}",
                         "enable.auto.commit": False})
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    found: list[tuple[dict[str, Any], dict[str, bytes]]] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and len(found) < count:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            try:
                _, record = decode(msg.value())
            except Exception:  # noqa: BLE001 - other tests put undecodable bytes on purpose
                continue
            if predicate(record):
                found.append((record, dict(msg.headers() or [])))
    finally:
        consumer.close()
    assert len(found) >= count, f"{len(found)} of {count} records on {topic} within {timeout_s} s"
    return found


_STABLE_PORTS: dict[str, int] = {}


def stable_port(slot: str) -> int:
    """A free loopback port chosen once per test run for `slot` ("heat-1", "heat-2", ...): a heat
    worker restarted on its slot's port keeps its static group membership (processors/app.py) and
    rejoins at once, instead of waiting out a departed member's session."""
    if slot not in _STABLE_PORTS:
        _STABLE_PORTS[slot] = free_port()
    return _STABLE_PORTS[slot]


@contextmanager
def running_service(settings: Any, name: str, port: int) -> Iterator[Any]:
    """One of the project's services (lustrax/services.py) as its own process, ready, then stopped;
    yields its ServiceProcess."""
    with running_services([(settings, name, port)]) as [service]:
        yield service


@contextmanager
def running_services(specs: list[tuple[Any, str, int]]) -> Iterator[list[Any]]:
    """Several services, (settings, name, port) each ("edge" too), all started before any is
    waited for (they start in parallel); yields their ServiceProcesses, stopped at the end."""
    from lustrax.services import EDGE, PROJECT_SERVICES, ServiceProcess

    services = [ServiceProcess(settings, EDGE if name == "edge" else PROJECT_SERVICES[name], "127.0.0.1", port)
                for settings, name, port in specs]
    try:
        for service in services:
            service.start()
        for service in services:
            service.wait_ready()
        yield services
    except BaseException as exc:
        if not isinstance(exc, GeneratorExit):
            report_services(services)  # what each was doing when the test failed, before it is stopped
        raise
    finally:
        running = [s.process for s in services if s.process is not None and s.process.exited() is None]
        stop_process_groups([process.pid for process in running if process.pid])  # together: faster
        for process in running:
            process.stop()  # reaps what is left


LOG_TAIL_LINES = 60


def report_services(services: list[Any], lines: int = LOG_TAIL_LINES) -> None:
    """`report_service` for each of `services` (ServiceProcesses), each log once (several workers of
    one service share a log)."""
    shown: set[Path] = set()
    for service in services:
        pid = service.process.pid if service.process is not None else None
        report_service(service.name, service.port, None if service.log_path in shown else service.log_path, pid, lines)
        shown.add(service.log_path)


def report_service(name: str, port: int, log_path: Path | None, pid: int | None = None,
                   lines: int = LOG_TAIL_LINES) -> None:
    """Print to stderr the last `lines` of a service's log and the project's own figures of its
    /metrics (lustrax_*, without histogram buckets) if it serves them: a failed test's output shows
    what the service was doing."""
    out = [f"----- {name} (pid {pid}, port {port})"]
    if log_path is not None:
        out += [f"----- {name}: last {lines} lines of {log_path}", tail(log_path, lines)]
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            figures = [line for line in response.read().decode(errors="replace").splitlines()
                       if line.startswith("lustrax_") and "_bucket{" not in line]
    except OSError as exc:
        figures = [f"(no /metrics: {exc})"]
    out += [f"----- {name} /metrics", *figures]
    print("\n".join(out), file=sys.stderr)


def metric_sum(url: str, name: str, **labels: str) -> float:
    """The sum of a metric's samples on a Prometheus text endpoint, those with the given labels."""
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return sum(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
               if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()))


def heat_worker_counts(settings: Any) -> dict[str, float]:
    """The heat worker's /metrics: events by outcome, and how many lag observations."""
    with urllib.request.urlopen(f"http://127.0.0.1:{settings.heat_web_port}/metrics", timeout=10) as response:
        text = response.read().decode()
    counts: dict[str, float] = defaultdict(float)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "lustrax_heat_events_total":
                counts[sample.labels["outcome"]] += sample.value
            elif sample.name == "lustrax_heat_event_lag_seconds_count":
                counts["lag_observed"] += sample.value
    return counts



def wait_until_caught_up(bootstrap: str, group: str, topics: list[str], timeout_s: float = 90.0) -> None:
    """Until `group` has committed every message already on `topics` (earlier test modules leave
    events there that a new worker reads first)."""
    from confluent_kafka import Consumer, TopicPartition

    probe = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        partitions = [TopicPartition(topic, p) for topic in topics
                      for p in probe.list_topics(topic, timeout=10).topics[topic].partitions]
        ends = {(tp.topic, tp.partition): probe.get_watermark_offsets(tp, timeout=10)[1] for tp in partitions}
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            committed = probe.committed(partitions, timeout=10)
            if all(tp.offset >= ends[(tp.topic, tp.partition)] or ends[(tp.topic, tp.partition)] == 0
                   for tp in committed):
                return
            time.sleep(0.5)
    finally:
        probe.close()
    raise AssertionError(f"{group} did not catch up with {topics} within {timeout_s} s")


def age_token(settings: Any, method: str = "self_declaration", jurisdiction: str = "ZZ") -> str:
    """An age token as POST /v1/age-gate issues it (tests/integration/test_age_gate.py checks that
    route itself): what every test of adult content (catalog, playback, gateway) passes."""
    from common.tokens import issue_age_token

    return issue_age_token(settings.age_token_key, method, jurisdiction, settings.age_token_ttl_s)[0]


def age_headers(settings: Any, **headers: str) -> dict[str, str]:
    """`headers` plus the X-Age-Token header of a fresh age token."""
    return {**headers, "X-Age-Token": age_token(settings)}


def aws_client(service: str, region: str = "us-east-1") -> Any:
    """A real boto3 client for an AWS service the tests cannot reach (answered through a Stubber)."""
    return boto3.client(service, region_name=region, aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="secret")


@contextmanager
def stubbed(service: str, region: str = "us-east-1") -> Iterator[tuple[Any, Stubber]]:
    """The client and its Stubber, which checks each request against the service model; every
    queued answer must have been asked for."""
    client = aws_client(service, region)
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()

def lustrax_command(env: dict[str, str], *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """`lustrax ARGS` as a user runs it, in its own process, with `env` over this one's environment."""
    return subprocess.run([sys.executable, "-m", "lustrax.cli", *args], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=timeout)


def fresh_env(home: Path) -> dict[str, str]:
    """The environment of a stack of its own in `home`: every component on a free loopback port."""
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


def settings_of(env: dict[str, str]) -> Any:
    """The Settings a `lustrax` process started with `env` (LUSTRAX_* variables) reads."""
    from common.settings import load_settings

    return load_settings(**{key.removeprefix("LUSTRAX_").lower(): value for key, value in env.items()})


def processes_using(home: Path) -> list[str]:
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


# The settings of the one supervised stack tests/integration/test_faults.py and test_supervisor.py
# share (the session's `supervised_stack` fixture): what each module's tests need of it.
SUPERVISED_ENV = {
    "LUSTRAX_RESTART_MAX_FAILURES": "2",  # test_supervisor: repeated failures give a component up soon
    "LUSTRAX_SINK_BATCH_INTERVAL_S": "0.5",
    "LUSTRAX_SINK_BATCH_ROWS": "500",  # small: test_faults' store outage leaves a backlog of many batches
    "LUSTRAX_HEAT_EMIT_INTERVAL_S": "1", "LUSTRAX_HEAT_CHECKPOINT_INTERVAL_S": "1",
    "LUSTRAX_TRANSCODE_PRESET": "ultrafast", "LUSTRAX_MODERATION_SAMPLE_INTERVAL_S": "1",
    "LUSTRAX_INGEST_DELIVERY_TIMEOUT_MS": "2000",
}


@dataclass
class SupervisedStack:
    """A whole stack under its supervisor (`lustrax up --detach`): its environment, settings, home."""

    env: dict[str, str]
    settings: Any
    home: Path

    def pid(self, component: str) -> int:
        from lustrax.stack import read_state

        state = read_state(self.settings)
        assert state is not None, "the supervisor's state file is gone"
        return int(state["components"][component]["pid"])

    def wait_back(self, component: str, old_pid: int, port: int, timeout_s: float = 60) -> float:
        """Until the supervisor runs `component` again (a new pid that answers /healthz)."""
        from lustrax.services import http_ok
        from lustrax.stack import read_state

        began = time.monotonic()
        while time.monotonic() - began < timeout_s:
            state = read_state(self.settings)
            entry = state["components"][component] if state else {}
            if entry.get("state") == "running" and entry.get("pid") != old_pid and \
                    http_ok(f"http://127.0.0.1:{port}/healthz", timeout_s=2.0):
                return time.monotonic() - began
            time.sleep(0.2)
        raise AssertionError(f"{component} not back within {timeout_s} s")
