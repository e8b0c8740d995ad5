"""The local stack: Kafka broker, S3 server and ClickHouse store, then the project's services.

`LocalStack.start()` brings everything up in order and leaves nothing running if any step fails;
`supervise()` then keeps it up: a component that exits is restarted with backoff
(lustrax/restart_policy.py) and only repeated failures give it up; `stop()` stops the services
together, then the infrastructure. The state file under LUSTRAX_HOME/run lets `lustrax down`,
`lustrax status` and `lustrax restart` find a stack started by another process; a restart request
is a file named after the component in LUSTRAX_HOME/run/requests, taken by the supervisor's loop.

Every child is started from the supervisor's main thread: PR_SET_PDEATHSIG fires when the thread
that forked a child ends, so a child started from a short-lived thread would die with it.
"""

from __future__ import annotations

import json
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

from infra.clickhouse.client import clickhouse_client
from infra.kafka.broker import KafkaBroker, broker_answers
from infra.s3.server import VersityGateway, s3_answers
from common.errors import ComponentError, ConfigError, LustraxError
from common.process import (GroupGuard, ManagedProcess, pid_alive, port_is_free, signal_group,
                            stop_process_groups)
from lustrax.provision import Endpoint, provision
from lustrax.restart_policy import RestartPolicy, RestartTracker
from lustrax.services import http_ok, local_edge, local_services
from common.settings import LOOPBACK_HOSTS, Settings

SUPERVISE_TICK_S = 0.25


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


def requests_dir(settings: Settings) -> Path:
    return settings.run_dir / "requests"


def restart_policy(settings: Settings) -> RestartPolicy:
    return RestartPolicy(max_failures=settings.restart_max_failures, window_s=settings.restart_window_s,
                         max_delay_s=settings.restart_backoff_max_s)


class LocalStack:
    def __init__(self, settings: Settings, tie_to_parent: bool = True, with_services: bool = True) -> None:
        if settings.env != "local":
            raise ConfigError("the local stack runs with LUSTRAX_ENV=local; production uses its own services")
        self.settings = settings
        self.infrastructure: list[Component] = [KafkaBroker(settings, tie_to_parent),
                                                VersityGateway(settings, tie_to_parent),
                                                local_edge(settings, tie_to_parent)]
        # Tests and benchmarks start the services they exercise themselves, with their own settings.
        self.services: list[Component] = list(local_services(settings, tie_to_parent)) if with_services else []
        self.started: list[Component] = []
        self.endpoints: list[Endpoint] = []
        self.timings: dict[str, float] = {}
        policy = restart_policy(settings)
        self.trackers = {c.name: RestartTracker(policy) for c in [*self.infrastructure, *self.services]}
        self.next_start: dict[str, float] = {}  # component -> monotonic time of its next start
        self.guard = GroupGuard(settings.logs_dir / "guard.log") if tie_to_parent else None

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
            if self.guard is not None:
                self.guard.start()
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
            self._launch(component)
        for component in components:
            self.timings[component.name] = component.wait_ready()

    def _launch(self, component: Component) -> None:
        component.start()
        if self.guard is not None and component.process is not None and component.process.pid:
            self.guard.watch(component.process.pid)  # its process group: start_new_session

    def supervise(self) -> None:
        """Keep the stack up until interrupted (SIGTERM/SIGINT raise KeyboardInterrupt in `lustrax up`)."""
        while True:
            self.supervise_once()
            time.sleep(SUPERVISE_TICK_S)

    def supervise_once(self) -> None:
        if self.guard is not None:
            self.guard.ensure_running()
        for name in take_restart_requests(self.settings):
            self.restart(name)
        for component in list(self.started):
            tracker = self.trackers[component.name]
            if tracker.given_up:
                continue
            due = self.next_start.get(component.name)
            if due is not None:
                if time.monotonic() >= due:
                    del self.next_start[component.name]
                    self._start_again(component)
                continue
            code = component.process.exited() if component.process is not None else None
            if code is not None:
                self._on_exit(component, f"exited with code {code}")

    def restart(self, name: str) -> None:
        """An operator's restart: stop (gracefully) and start again, with a fresh failure count."""
        component = next((c for c in self.started if c.name == name), None)
        if component is None:
            _report(f"restart of {name!r} ignored: no such component in this stack")
            return
        self.trackers[name].on_manual_restart()
        self.next_start.pop(name, None)
        self._stop_tier([component])
        _report(f"{name}: restarting on request")
        self._start_again(component)

    def _start_again(self, component: Component) -> None:
        self.trackers[component.name].restarts += 1
        try:
            self._launch(component)
            waited = component.wait_ready()
        except ComponentError as exc:
            self._stop_tier([component])  # it may still run when it was too slow to answer
            self._on_exit(component, f"did not come back ({str(exc).removeprefix(component.name + ': ')})")
            return
        _report(f"{component.name}: running again after {waited:.1f} s "
                f"(restarts: {self.trackers[component.name].restarts})")
        self.write_state(ready=True)

    def _on_exit(self, component: Component, why: str) -> None:
        if component.process is not None and component.process.pid:
            signal_group(component.process.pid, signal.SIGKILL)  # grandchildren (ffmpeg) of a killed worker
            if self.guard is not None:
                self.guard.forget(component.process.pid)
        decision = self.trackers[component.name].on_exit(time.monotonic())
        if decision.give_up:
            error = ComponentError(component.name, f"{why}; gave up after {decision.failures_in_window} failures "
                                   f"within {self.settings.restart_window_s:.0f} s", component.log_path)
            _report(f"error: {error}")
        else:
            self.next_start[component.name] = time.monotonic() + decision.delay_s
            _report(f"{component.name}: {why}; restarting in {decision.delay_s:.1f} s")
        self.write_state(ready=True)

    def stop(self) -> None:
        """Producers and processors first (together), then the S3 server and the broker."""
        services = [c for c in self.started if c not in self.infrastructure]
        self._stop_tier(services)
        self._stop_tier([c for c in self.started if c in self.infrastructure])
        self.started.clear()
        if self.guard is not None:
            self.guard.close()
        state_file(self.settings).unlink(missing_ok=True)

    def _stop_tier(self, components: list[Component]) -> None:
        running = [c.process for c in components if c.process is not None and c.process.exited() is None]
        stop_process_groups([p.pid for p in running if p.pid], self.settings.stop_timeout_s)
        for process in running:
            assert process.popen is not None
            process.popen.wait(timeout=5)
            if self.guard is not None and process.pid:
                self.guard.forget(process.pid)

    def write_state(self, ready: bool) -> None:
        path = state_file(self.settings)
        path.parent.mkdir(parents=True, exist_ok=True)
        components: dict[str, dict[str, Any]] = {}
        for c in self.started:
            tracker = self.trackers[c.name]
            running = c.process is not None and c.process.exited() is None
            components[c.name] = {
                "pid": c.process.pid if c.process is not None else None,
                "state": "failed" if tracker.given_up else "running" if running else "restarting",
                "restarts": tracker.restarts, "log": str(c.log_path),
            }
        state = {"supervisor_pid": os.getpid(), "ready": ready, "components": components,
                 "endpoints": [e.__dict__ for e in self.endpoints]}
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(path)


def _report(message: str) -> None:
    print(f"lustrax: {message}", flush=True)


def read_state(settings: Settings) -> dict[str, Any] | None:
    try:
        return dict(json.loads(state_file(settings).read_text()))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def running_state(settings: Settings) -> dict[str, Any] | None:
    """The state of a stack whose supervisor is alive, else None."""
    state = read_state(settings)
    if state and pid_alive(int(state.get("supervisor_pid", 0))):
        return state
    return None


def request_restart(settings: Settings, name: str, timeout_s: float) -> dict[str, Any]:
    """Ask the running supervisor to restart `name`; returns its state entry once it runs again."""
    state = running_state(settings)
    if state is None:
        raise LustraxError("no stack is running (`lustrax up` starts one)")
    components = state["components"]
    if name not in components:
        raise LustraxError(f"no component {name!r}; the stack runs {', '.join(components)}")
    before = int(components[name]["restarts"])
    folder = requests_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).touch()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = running_state(settings)
        if state is None:
            raise LustraxError("the supervisor stopped")
        entry = dict(state["components"][name])
        if entry["restarts"] > before and entry["state"] != "restarting":
            if entry["state"] == "failed":
                raise ComponentError(name, "did not come back after the restart", entry["log"])
            return entry
        time.sleep(0.2)
    raise ComponentError(name, f"not running again within {timeout_s:.0f} s", components[name]["log"])


def take_restart_requests(settings: Settings) -> list[str]:
    try:
        names = [p.name for p in requests_dir(settings).iterdir()]
    except FileNotFoundError:
        return []
    for name in names:
        (requests_dir(settings) / name).unlink(missing_ok=True)
    return names


def stop_running_stack(settings: Settings) -> bool:
    """Stop a stack started by another `lustrax up`; returns False when none was running."""
    state = read_state(settings)
    if state is None:
        return False
    supervisor = int(state.get("supervisor_pid", 0))
    # The supervisor stops its children in order on SIGTERM: two tiers of at most stop_timeout_s
    # and a SIGKILL grace each.
    tier_s = settings.stop_timeout_s + 5
    if supervisor and pid_alive(supervisor):
        stop_process_groups([supervisor], 2 * tier_s + 5)
    # Whatever outlived it, services before the infrastructure (the state lists it first).
    pids = [entry["pid"] for entry in reversed(list(state.get("components", {}).values()))
            if entry.get("pid") and pid_alive(int(entry["pid"]))]
    stop_process_groups(pids, settings.stop_timeout_s)
    state_file(settings).unlink(missing_ok=True)
    return True


def probe_components(settings: Settings) -> dict[str, tuple[bool, str]]:
    """What answers right now: name -> (ok, detail)."""
    results = {
        "kafka": (broker_answers(settings.kafka_bootstrap, timeout_s=2.0), settings.kafka_bootstrap),
        "s3": (s3_answers(settings.s3_endpoint, timeout_s=2.0), settings.s3_endpoint),
    }
    results["clickhouse"] = _probe_clickhouse(settings)
    for service in [local_edge(settings), *local_services(settings)]:
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
