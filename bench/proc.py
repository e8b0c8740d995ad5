"""What the benchmarks read of a process from /proc: CPU seconds and memory."""

from __future__ import annotations

import os
from pathlib import Path

TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of `pid` so far; 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS_PER_S  # utime + stime
    except (OSError, IndexError, ValueError):
        return 0.0


def _status_kib(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_kib(pid: int) -> int:
    """Resident memory now (VmRSS); 0 once the process is gone."""
    return _status_kib(pid, "VmRSS")


def peak_rss_mib(pid: int) -> float:
    """The highest resident memory the process has had (VmHWM)."""
    return _status_kib(pid, "VmHWM") / 1024
