"""Child processes of the local stack: started with their output in a log file, stopped as a group.

Children die with the supervisor, always: each gets SIGKILL from the kernel when the thread that
started it dies (PR_SET_PDEATHSIG; a Faust worker would take seconds over a SIGTERM), and a
`GroupGuard` process SIGKILLs each child's whole process group (ffmpeg and other grandchildren
included) the moment the supervisor's end of a pipe closes, however the supervisor died.
"""

from __future__ import annotations

import ctypes
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from common.errors import ComponentError

_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL("libc.so.6", use_errno=True)


def die_with_parent(parent: int) -> Callable[[], None]:
    """preexec_fn: SIGKILL when the parent (thread) dies; exit at once if it died before the prctl."""
    def setup() -> None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:
            os._exit(1)
    return setup


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        # As servers do: connections in TIME_WAIT from a previous run do not block the port.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


_EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_LOWEST_CHOSEN_PORT = 10_000
_handed_out: set[int] = set()


def _ephemeral_low() -> int:
    try:
        return int(_EPHEMERAL_RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768  # Linux's default


def free_port(host: str = "127.0.0.1") -> int:
    """A loopback port free now, for a server started later. Chosen below the kernel's ephemeral
    range: a port from that range (what binding port 0 gives) can be taken by any outgoing
    connection's local end before the server binds it, and a Kafka client makes many. Never the
    same port twice in one process."""
    upper = _ephemeral_low()
    for _ in range(200):
        port = random.randrange(_LOWEST_CHOSEN_PORT, upper)
        if port not in _handed_out and port_is_free(host, port):
            _handed_out.add(port)
            return port
    with socket.socket() as sock:  # nothing free below the range: let the kernel choose
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
                    preexec_fn=die_with_parent(os.getpid()) if self.tie_to_parent else None,
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
        stop_process_groups([self.popen.pid], timeout_s)
        self.popen.wait(timeout=5)


def stop_process_groups(pids: Iterable[int], timeout_s: float = 20.0) -> None:
    """SIGTERM the process groups together, SIGKILL what is left after `timeout_s`; once each leader
    is gone, SIGKILL its group too, for grandchildren that outlived it."""
    leaders = list(pids)
    pending = leaders
    for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
        for pid in pending:
            signal_group(pid, sig)
        deadline = time.monotonic() + wait_s
        while pending and time.monotonic() < deadline:
            pending = [pid for pid in pending if not _reaped(pid)]
            if pending:
                time.sleep(0.1)
        if not pending:
            break
    for pid in leaders:
        signal_group(pid, signal.SIGKILL)


def signal_group(pgid: int, sig: int) -> None:
    """Send `sig` to a process group that may already be gone."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _reaped(pid: int) -> bool:
    try:
        # Reaps our own child; for a pid from a pid file (not our child) fall back to kill(0).
        return os.waitpid(pid, os.WNOHANG)[0] == pid
    except ChildProcessError:
        return not pid_alive(pid)


class GroupGuard:
    """A small process that SIGKILLs every watched process group once the supervisor is gone.

    The supervisor holds the write end of a pipe and announces each child's group (`+pgid`) and its
    end (`-pgid`); the guard reads until end of file, which the kernel delivers however the
    supervisor ended (kill -9 included), then kills what is still announced.
    """

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.watched: set[int] = set()
        self.popen: subprocess.Popen[bytes] | None = None
        self._write_fd = -1

    def start(self) -> None:
        read_fd, self._write_fd = os.pipe()  # not inherited by other children (close_fds)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen([sys.executable, "-m", "common.process", str(read_fd)],
                                          pass_fds=(read_fd,), stdin=subprocess.DEVNULL, stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True)
        os.close(read_fd)
        for pgid in self.watched:
            self._send(f"+{pgid}")

    def ensure_running(self) -> None:
        """Start a new guard (with everything watched) if someone killed this one."""
        if self.popen is not None and self.popen.poll() is not None:
            os.close(self._write_fd)
            self.start()

    def watch(self, pgid: int) -> None:
        self.watched.add(pgid)
        self._send(f"+{pgid}")

    def forget(self, pgid: int) -> None:
        self.watched.discard(pgid)
        self._send(f"-{pgid}")

    def close(self) -> None:
        if self.popen is None:
            return
        os.close(self._write_fd)
        self.popen.wait(timeout=10)
        self.popen = None

    def _send(self, line: str) -> None:
        try:
            os.write(self._write_fd, f"{line}\n".encode())
        except OSError:
            pass  # the guard died: ensure_running() starts another with everything watched


def _guard_main(read_fd: int) -> None:
    # Ctrl-C in the supervisor's terminal is the supervisor's to handle; it closes the pipe after.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    watched: set[int] = set()
    with os.fdopen(read_fd, "rb") as pipe:
        for raw in pipe:
            line = raw.decode().strip()
            if line[:1] in "+-" and line[1:].isdigit():
                (watched.add if line[0] == "+" else watched.discard)(int(line[1:]))
    for pgid in watched:
        signal_group(pgid, signal.SIGKILL)


if __name__ == "__main__":
    _guard_main(int(sys.argv[1]))
