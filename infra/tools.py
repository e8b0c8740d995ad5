"""Running the build tools (mvn, go) that fetch the stack's runtimes, with their output in a log."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from common.process import tail
from infra.errors import InstallError


def require_tool(component: str, tool: str, hint: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise InstallError(component, f"`{tool}` was not found on PATH; {hint}")
    return path


def run_logged(component: str, argv: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None,
               timeout_s: float = 1200) -> None:
    """Run a setup command to completion; a failure names the component and the log file."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        log.write(f"$ {' '.join(argv)}\n".encode())
        log.flush()
        try:
            code = subprocess.run(list(argv), stdout=log, stderr=subprocess.STDOUT, env=env,
                                  stdin=subprocess.DEVNULL, timeout=timeout_s).returncode
        except subprocess.TimeoutExpired:
            raise InstallError(component, f"`{argv[0]}` took longer than {timeout_s:.0f} s", log_path) from None
    if code != 0:
        # The last lines say why (a CI log may be all there is to read afterwards).
        last = tail(log_path, 3).replace("\n", " | ")
        raise InstallError(component, f"`{' '.join(argv[:3])} ...` failed with exit code {code}: {last}", log_path)
