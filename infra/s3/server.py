"""The local versitygw process: a real S3 API over a posix data directory, on loopback."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

from infra.s3.install import ensure_versitygw
from common.process import ManagedProcess
from common.settings import Settings


def versitygw_argv(binary: Path, host: str, port: int, access_key: str, data_dir: Path) -> list[str]:
    # The secret goes through the environment (ROOT_SECRET_ACCESS_KEY), never the command line,
    # where any local user could read it from /proc.
    return [str(binary), "--access", access_key, "--port", f"{host}:{port}", "--quiet", "posix", str(data_dir)]


def s3_answers(endpoint: str, timeout_s: float = 1.0) -> bool:
    """True once the server answers HTTP (an anonymous ListBuckets is refused with 403: that is fine)."""
    try:
        urllib.request.urlopen(endpoint, timeout=timeout_s)
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False
    return True


class VersityGateway:
    name = "s3"

    def __init__(self, settings: Settings, tie_to_parent: bool = True) -> None:
        self.settings = settings
        self.host, self.port = settings.s3_address
        self.dir = settings.data_dir / "s3"
        self.log_path = settings.logs_dir / "s3.log"
        self.tie_to_parent = tie_to_parent
        self.process: ManagedProcess | None = None

    @property
    def ports(self) -> list[tuple[str, int]]:
        return [(self.host, self.port)]

    def address(self) -> str:
        return self.settings.s3_endpoint

    def install(self) -> None:
        ensure_versitygw(self.settings)

    def start(self) -> None:
        binary = ensure_versitygw(self.settings)
        self.dir.mkdir(parents=True, exist_ok=True)
        access_key, secret_key = self.settings.s3_credentials
        self.process = ManagedProcess(
            self.name, versitygw_argv(binary, self.host, self.port, access_key, self.dir), self.log_path,
            env={"ROOT_SECRET_ACCESS_KEY": secret_key}, tie_to_parent=self.tie_to_parent,
        )
        self.process.start()

    def wait_ready(self) -> float:
        assert self.process is not None
        return self.process.wait_ready(lambda: s3_answers(self.settings.s3_endpoint), self.settings.startup_timeout_s)
