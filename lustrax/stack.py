"""The local stack: Kafka broker, S3 server and ClickHouse store, then the project's services.

`LocalStack.start()` brings everything up in order and leaves nothing running if any step fails;
`stop()` stops in reverse order. The state file under LUSTRAX_HOME/run lets `lustrax down` and
`lustrax status` find a stack started by another process.
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

from infra.clickhouse.client import clickhouse_client
from infra.kafka.broker import KafkaBroker, broker_answers
from infra.s3.server import VersityGateway, s3_answers
from common.errors import ComponentError, ConfigError
from common.process import ManagedProcess, pid_alive, port_is_free, stop_process_group
from lustrax.provision import Endpoint, provision
from lustrax.services import http_ok, local_services
from common.settings import LOOPBACK_HOSTS, Settings


class Component(Protocol):
    name: str
    log_path: Path
    process: ManagedProcess | None

    @property
    def ports(self) -> list[tuple[str, int]]: ...
    def address(self) -> str: ...
    def install(self) -> None: ...
    def start(self) -> None: ...
    def wait_ready(self) -> float: ...


def state_file(settings: Settings) -> Path:
    return settings.run_dir / "stack.json"


class LocalStack:
    def __init__(self, settings: Settings, tie_to_parent: bool = True, with_services: bool = True) -> None:
        if settings.env != "local":
            raise ConfigError("the local stack runs with LUSTRAX_ENV=local; production uses its own services")
        self.settings = settings
        self.infrastructure: list[Component] = [KafkaBroker(settings, tie_to_parent),
                                                VersityGateway(settings, tie_to_parent)]
        # Tests and benchmarks start the services they exercise themselves, with their own settings.
        self.services: list[Component] = list(local_services(settings, tie_to_parent)) if with_services else []
        self.started: list[Component] = []
        self.endpoints: list[Endpoint] = []
        self.timings: dict[str, float] = {}

    def install(self) -> None:
        """Fetch/build what is missing (Maven jars, versitygw) in parallel; no-op when cached."""
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=len(self.infrastructure)) as pool:
            for future in [pool.submit(c.install) for c in self.infrastructure]:
                future.result()
        self.timings["install"] = time.monotonic() - started

    def check_addresses(self) -> None:
        for component in [*self.infrastructure, *self.services]:
            for host, port in component.ports:
                if host not in LOOPBACK_HOSTS:
                    raise ComponentError(component.name, f"the local stack listens on loopback only, not {host}")
                if not port_is_free(host, port):
                    raise ComponentError(component.name, f"port {host}:{port} is already in use", component.log_path)

    def start(self) -> list[Endpoint]:
        began = time.monotonic()
        self.check_addresses()
        self.install()
        try:
            self._start_all(self.infrastructure)
            self.endpoints = provision(self.settings)
            self._start_all(self.services)
            self.endpoints += [Endpoint(s.name, s.address(), "") for s in self.services]
        except BaseException:
            self.stop()
            raise
        self.timings["ready"] = time.monotonic() - began
        self.write_state(ready=True)
        return self.endpoints

    def _start_all(self, components: list[Component]) -> None:
        """Start together (they boot in parallel), then wait for each to answer."""
        for component in components:
            self.started.append(component)
            component.start()
        for component in components:
            self.timings[component.name] = component.wait_ready()

    def failed_component(self) -> Component | None:
        for component in self.started:
            if component.process is not None and component.process.exited() is not None:
                return component
        return None

    def stop(self) -> None:
        for component in reversed(self.started):
            if component.process is not None:
                component.process.stop()
        self.started.clear()
        state_file(self.settings).unlink(missing_ok=True)

    def write_state(self, ready: bool) -> None:
        path = state_file(self.settings)
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {
            "supervisor_pid": os.getpid(),
            "ready": ready,
            "components": {c.name: c.process.pid for c in self.started if c.process is not None},
            "endpoints": [e.__dict__ for e in self.endpoints],
        }
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(path)


def read_state(settings: Settings) -> dict[str, object] | None:
    try:
        return json.loads(state_file(settings).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def stop_running_stack(settings: Settings, timeout_s: float = 30.0) -> bool:
    """Stop a stack started by another `lustrax up`; returns False when none was running."""
    state = read_state(settings)
    if state is None:
        return False
    supervisor = int(state.get("supervisor_pid", 0))  # type: ignore[arg-type]
    if supervisor and pid_alive(supervisor):
        # The supervisor stops its own children in order on SIGTERM.
        stop_process_group(supervisor, timeout_s)
    for pid in dict(state.get("components", {})).values():  # type: ignore[arg-type]
        if pid_alive(int(pid)):
            stop_process_group(int(pid), timeout_s)
    state_file(settings).unlink(missing_ok=True)
    return True


def probe_components(settings: Settings) -> dict[str, tuple[bool, str]]:
    """What answers right now: name -> (ok, detail)."""
    results = {
        "kafka": (broker_answers(settings.kafka_bootstrap, timeout_s=2.0), settings.kafka_bootstrap),
        "s3": (s3_answers(settings.s3_endpoint, timeout_s=2.0), settings.s3_endpoint),
    }
    results["clickhouse"] = _probe_clickhouse(settings)
    for service in local_services(settings):
        results[service.name] = (http_ok(f"{service.address()}/healthz", timeout_s=3.0), service.address())
    return results


def _probe_clickhouse(settings: Settings) -> tuple[bool, str]:
    if settings.clickhouse_embedded:
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{settings.sink_query_port}/healthz", timeout=1.0):
                return True, f"{settings.clickhouse_url} (held by the sink; `lustrax sql` queries through it)"
        except urllib.error.HTTPError as exc:  # the sink holds the engine but cannot write to it
            reason = json.loads(exc.read() or b"{}").get("reason", exc.reason)
            return False, f"{settings.clickhouse_url} (held by the sink, which cannot write: {reason})"
        except OSError:
            pass  # no sink: the directory is free to open here
    try:
        client = clickhouse_client(settings)
    except Exception as exc:  # noqa: BLE001 - report, don't crash `status`
        return False, f"{settings.clickhouse_url}: {str(exc).strip().splitlines()[0][:200]}"
    try:
        rows = client.query(
            f"SELECT count() FROM system.tables WHERE database = '{settings.clickhouse_database}' "
            "AND name = 'schema_migrations'"
        ).result_rows
        if not rows[0][0]:
            return False, f"{settings.clickhouse_url}: not migrated (run `lustrax up`)"
        count = client.query(
            f"SELECT count() FROM `{settings.clickhouse_database}`.schema_migrations FINAL").result_rows[0][0]
        return True, f"{settings.clickhouse_url} ({count} migrations applied)"
    finally:
        client.close()
