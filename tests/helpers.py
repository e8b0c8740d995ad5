"""Helpers shared by the tests (not fixtures)."""

from __future__ import annotations

import sys
import threading
import time
import urllib.request
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
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
