"""The supervisor keeps a real stack up (`lustrax up --detach` on free ports).

Under traffic through the ingest API, each component is killed with SIGKILL in turn: it comes back
(its restart count rises, it answers again) and every acknowledged event is stored exactly once.
Then repeated failures give a component up (status names it and its log) until `lustrax restart`,
and a SIGKILL of the supervisor leaves no process behind, grandchildren (ffmpeg's case) included.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from common.errors import LustraxError
from common.process import pid_alive
from common.settings import Settings
from common.tokens import issue_token
from infra.clickhouse.analyst import run_sql
from infra.kafka.broker import broker_answers
from infra.s3.server import s3_answers
from lustrax.services import http_ok
from lustrax.stack import read_state
from tests.helpers import SUPERVISED_ENV, SupervisedStack, lustrax_command, processes_using

pytestmark = pytest.mark.integration

MAX_FAILURES = int(SUPERVISED_ENV["LUSTRAX_RESTART_MAX_FAILURES"])  # the supervisor's give-up threshold


class Traffic:
    """Sends batches of views for one video until stopped; remembers which event ids were acknowledged."""

    def __init__(self, settings: Settings) -> None:
        self.url = f"http://127.0.0.1:{settings.ingest_port}/v1/events/batch"
        self.token = issue_token(settings.jwt_signing_secret, "supervisor-test", ("service",), 3600)
        self.video_id = f"sup-{uuid.uuid4().hex[:8]}"
        self.acked: set[str] = set()
        self.refused = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        with httpx.Client(timeout=10, headers={"Authorization": f"Bearer {self.token}"}) as client:
            while not self._stop.is_set():
                events = [{"type": "view", "video_id": self.video_id, "user_id": f"u{i}", "session_id": "s",
                           "event_id": str(uuid.uuid4())} for i in range(10)]
                try:
                    answer = client.post(self.url, json={"events": events})
                except httpx.HTTPError:
                    answer = None
                if answer is not None and answer.status_code == 202:
                    self.acked.update(answer.json()["event_ids"])
                else:
                    self.refused += 1  # ingest or the broker is down: not acknowledged, may be stored
                self._stop.wait(0.05)

    def wait_for_acks(self, more_than: int, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.acked) <= more_than:
            assert time.monotonic() < deadline, f"no event acknowledged within {timeout_s} s"
            time.sleep(0.2)


def _component(settings: Settings, name: str) -> dict[str, Any]:
    state = read_state(settings)
    assert state is not None, "the supervisor's state file is gone"
    return dict(state["components"][name])


def _answers(settings: Settings, name: str) -> bool:
    if name == "kafka":
        return broker_answers(settings.kafka_bootstrap, timeout_s=2.0)
    if name == "s3":
        return s3_answers(settings.s3_endpoint, timeout_s=2.0)
    port = {"ingest": settings.ingest_port, "transcode": settings.transcode_web_port,
            "sink": settings.sink_query_port, "heat": settings.heat_web_port}[name]
    return http_ok(f"http://127.0.0.1:{port}/healthz", timeout_s=2.0)


def _kill_and_wait_back(settings: Settings, name: str, timeout_s: float = 90) -> float:
    """SIGKILL the component's process; returns the seconds until it runs again and answers."""
    before = _component(settings, name)
    os.kill(int(before["pid"]), signal.SIGKILL)
    began = time.monotonic()
    while time.monotonic() - began < timeout_s:
        now = _component(settings, name)
        if now["restarts"] > before["restarts"] and now["state"] == "running" and _answers(settings, name):
            assert now["pid"] != before["pid"]
            return time.monotonic() - began
        time.sleep(0.2)
    raise AssertionError(f"{name} did not come back within {timeout_s} s: {_component(settings, name)}")


def _stored(settings: Settings, video_id: str) -> dict[str, int]:
    # FINAL: the event store is ReplacingMergeTree by event_id (docs/analytics.md). Through the sink
    # only: opening the embedded store here would keep a restarting sink from it for good.
    _, rows = run_sql(settings, "SELECT toString(event_id), count() FROM {db}.views FINAL "
                      "WHERE video_id = {v:String} GROUP BY event_id", {"v": video_id}, open_embedded=False)
    return {event_id: int(count) for event_id, count in rows}


@pytest.fixture(scope="module")
def supervised(supervised_stack: SupervisedStack) -> tuple[dict[str, str], Settings, Path]:
    """The session's supervised stack (tests/conftest.py), after tests/integration/test_faults.py's
    faults; this module's last test of it ends it (a SIGKILL of its supervisor)."""
    return supervised_stack.env, supervised_stack.settings, supervised_stack.home


def test_each_component_killed_under_traffic_comes_back_and_no_acknowledged_event_is_lost_or_doubled(
        supervised: tuple[dict[str, str], Settings, Path]) -> None:
    env, settings, _ = supervised
    back_after: dict[str, float] = {}
    with Traffic(settings) as traffic:
        # The heat worker, the transcoder, the moderation worker and the gateway are killed in
        # tests/integration/test_faults.py, with what each must then do (converge, publish once, resume).
        for name in ("ingest", "sink", "kafka", "s3"):
            traffic.wait_for_acks(more_than=len(traffic.acked))  # traffic flows before each kill
            back_after[name] = _kill_and_wait_back(settings, name)
        traffic.wait_for_acks(more_than=len(traffic.acked))  # and after the last
    print(f"back after SIGKILL (s): {back_after}; acknowledged {len(traffic.acked)}, refused {traffic.refused}")
    assert traffic.refused > 0  # the kills did interrupt the traffic

    deadline, stored = time.monotonic() + 60, {}
    while time.monotonic() < deadline and not traffic.acked <= stored.keys():
        time.sleep(1)
        try:
            stored = _stored(settings, traffic.video_id)
        except LustraxError:  # the sink's query endpoint is between restarts: ask again
            continue
    missing = traffic.acked - stored.keys()
    assert not missing, f"{len(missing)} of {len(traffic.acked)} acknowledged events not stored"
    assert set(stored.values()) == {1}

    status = lustrax_command(env, "status")
    assert status.returncode == 0, status.stdout
    for name in back_after:
        assert f"restarts: {_component(settings, name)['restarts']}" in status.stdout
        assert _component(settings, name)["restarts"] >= 1


def test_repeated_failures_give_a_component_up_until_restarted_by_hand(
        supervised: tuple[dict[str, str], Settings, Path]) -> None:
    env, settings, home = supervised
    for _ in range(MAX_FAILURES + 1):  # earlier kills in the window count too
        entry = _component(settings, "ingest")
        if entry["state"] == "failed":
            break
        os.kill(int(entry["pid"]), signal.SIGKILL)
        deadline = time.monotonic() + 60
        while _component(settings, "ingest") == entry or _component(settings, "ingest")["state"] == "restarting":
            assert time.monotonic() < deadline
            time.sleep(0.2)
    assert _component(settings, "ingest")["state"] == "failed"
    status = lustrax_command(env, "status")
    assert status.returncode == 1
    line = next(line for line in status.stdout.splitlines() if line.strip().startswith("ingest"))
    assert "FAILED" in line and str(home / "logs" / "ingest.log") in line
    log = (home / "logs" / "lustrax.log").read_text()
    assert "lustrax: error: ingest:" in log and "gave up" in log and "ingest.log" in log
    assert _answers(settings, "sink") and _answers(settings, "kafka")  # the rest stays up

    restart = lustrax_command(env, "restart", "ingest")
    assert restart.returncode == 0, restart.stderr
    assert _component(settings, "ingest")["state"] == "running" and _answers(settings, "ingest")
    assert lustrax_command(env, "status").returncode == 0

    unknown = lustrax_command(env, "restart", "nope")
    assert unknown.returncode == 1 and unknown.stderr.startswith("lustrax: error: no component 'nope'")


def test_sigkill_of_the_supervisor_leaves_no_process_behind(
        supervised: tuple[dict[str, str], Settings, Path]) -> None:
    env, settings, home = supervised
    state = read_state(settings)
    assert state is not None and len(processes_using(home)) >= 6
    os.kill(int(state["supervisor_pid"]), signal.SIGKILL)
    deadline = time.monotonic() + 5
    while processes_using(home) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_using(home) == []
    status = lustrax_command(env, "status")
    assert status.returncode == 1 and "supervisor  DOWN" in status.stdout


SUPERVISOR_SCRIPT = """
import sys, time
from pathlib import Path
from common.process import GroupGuard, ManagedProcess
logs = Path(sys.argv[1])
guard = GroupGuard(logs / "guard.log")
guard.start()
child = ManagedProcess("child", ["sh", "-c", "sleep 300 & echo $! > " + str(logs / "grandchild.pid") + "; wait"],
                       logs / "child.log")
child.start()
guard.watch(child.pid)
print(child.pid, guard.popen.pid, flush=True)
time.sleep(300)
"""


def test_grandchildren_die_with_a_killed_supervisor(tmp_path: Path) -> None:
    """The transcode worker's ffmpeg case: PDEATHSIG ends the child, the guard ends what it started."""
    supervisor = subprocess.Popen([sys.executable, "-c", SUPERVISOR_SCRIPT, str(tmp_path)], stdout=subprocess.PIPE,
                                  text=True)
    assert supervisor.stdout is not None
    child, guard = (int(pid) for pid in supervisor.stdout.readline().split())
    pid_file = tmp_path / "grandchild.pid"
    deadline = time.monotonic() + 10
    while not pid_file.exists() or not pid_file.read_text().strip():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    grandchild = int(pid_file.read_text())
    assert pid_alive(child) and pid_alive(grandchild)
    supervisor.kill()
    supervisor.wait()
    deadline = time.monotonic() + 5
    while any(pid_alive(p) and _not_zombie(p) for p in (child, grandchild, guard)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(pid_alive(p) and _not_zombie(p) for p in (child, grandchild, guard))


def _not_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
