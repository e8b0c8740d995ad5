"""Child processes of the local stack: started with their output in a log file, stopped as a group."""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from common.errors import ComponentError

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Runs in the child: own process group, and SIGTERM when the supervisor dies (no orphans)."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        # As servers do: connections in TIME_WAIT from a previous run do not block the port.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def tail(path: Path, lines: int = 5) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return ""


@dataclass
class ManagedProcess:
    """One long-running child with its output appended to `log_path`."""

    name: str
    argv: Sequence[str]
    log_path: Path
    env: Mapping[str, str] | None = None
    cwd: Path | None = None
    tie_to_parent: bool = True
    popen: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            try:
                self.popen = subprocess.Popen(
                    list(self.argv),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, **(self.env or {})},
                    cwd=self.cwd,
                    start_new_session=True,
                    preexec_fn=_die_with_parent if self.tie_to_parent else None,
                )
            except OSError as exc:
                raise ComponentError(self.name, f"cannot start {self.argv[0]}: {exc.strerror}", self.log_path) from None

    def exited(self) -> int | None:
        """The exit code once the process ended, else None."""
        return self.popen.poll() if self.popen else None

    def wait_ready(self, probe: Callable[[], bool], timeout_s: float, interval_s: float = 0.25) -> float:
        """Poll `probe` until it answers True; returns seconds waited. Fails fast if the child exits."""
        started = time.monotonic()
        while True:
            code = self.exited()
            if code is not None:
                last = tail(self.log_path, 3).replace("\n", " | ")
                raise ComponentError(self.name, f"exited with code {code} while starting: {last}", self.log_path)
            if probe():
                return time.monotonic() - started
            if time.monotonic() - started > timeout_s:
                raise ComponentError(self.name, f"did not become ready within {timeout_s:.0f} s", self.log_path)
            time.sleep(interval_s)

    def stop(self, timeout_s: float = 20.0) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        stop_process_group(self.popen.pid, timeout_s)
        self.popen.wait(timeout=5)


def stop_process_group(pid: int, timeout_s: float = 20.0) -> None:
    """SIGTERM the child's process group, then SIGKILL what is left after `timeout_s`."""
    for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            try:
                # Reaps our own child; for a pid from a pid file (not our child) fall back to kill(0).
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    return
            except ChildProcessError:
                if not pid_alive(pid):
                    return
            time.sleep(0.1)
