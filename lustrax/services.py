"""What the project runs, by name: infrastructure and the project's own services.

docker-compose.yml must describe every entry (a test checks it); `lustrax up` starts the local
equivalents of the project's services after the infrastructure is ready.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from common.process import ManagedProcess
from common.settings import ENV_PREFIX, Settings

# Infrastructure the project relies on: compose service name -> what it is.
INFRASTRUCTURE: dict[str, str] = {
    "kafka": "Apache Kafka broker (KRaft)",
    "clickhouse": "ClickHouse server (the local stack embeds chDB instead)",
    "s3": "S3-compatible object store (versitygw)",
    "edge": "CDN edge in front of the public bucket (CloudFront in production; locally infra/edge)",
    "milvus": "Milvus vector database (the local stack embeds Milvus Lite in the recs worker instead)",
}


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    command: tuple[str, ...]  # `lustrax` arguments that run it


# The project's own processes, by compose service name.
PROJECT_SERVICES: dict[str, ServiceSpec] = {
    "provision": ServiceSpec("provision", ("provision",)),
    "ingest": ServiceSpec("ingest", ("serve", "ingest")),
    "transcode": ServiceSpec("transcode", ("worker", "transcode")),
    "sink": ServiceSpec("sink", ("worker", "sink")),
    "heat": ServiceSpec("heat", ("worker", "heat")),
    "moderation": ServiceSpec("moderation", ("worker", "moderation")),
    "gateway": ServiceSpec("gateway", ("serve", "gateway")),
    "recs": ServiceSpec("recs", ("worker", "recs")),
    "takedown": ServiceSpec("takedown", ("worker", "takedown")),
}


def settings_env(settings: Settings) -> dict[str, str]:
    """The settings as LUSTRAX_* variables, so a child process sees exactly this configuration."""
    env = {}
    for name, value in settings.model_dump().items():
        if value is not None:
            env[f"{ENV_PREFIX}{name.upper()}"] = str(value)
    access_key, secret_key = settings.s3_credentials
    env.update({f"{ENV_PREFIX}S3_ACCESS_KEY": access_key, f"{ENV_PREFIX}S3_SECRET_KEY": secret_key,
                f"{ENV_PREFIX}JWT_SECRET": settings.jwt_signing_secret,
                f"{ENV_PREFIX}CLICKHOUSE_DSN": settings.clickhouse_url})
    return env


def http_ok(url: str, timeout_s: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


class ServiceProcess:
    """A long-running project service under the supervisor, ready when its /healthz answers
    (the HTTP services' own port; a Faust worker's loopback web port)."""

    def __init__(self, settings: Settings, spec: ServiceSpec, host: str, port: int,
                 tie_to_parent: bool = True) -> None:
        self.settings = settings
        self.spec = spec
        self.name = spec.name
        self.host, self.port = host, port
        self.log_path: Path = settings.logs_dir / f"{spec.name}.log"
        self.tie_to_parent = tie_to_parent
        self.process: ManagedProcess | None = None

    @property
    def ports(self) -> list[tuple[str, int]]:
        return [(self.host, self.port)]

    def address(self) -> str:
        return f"http://{self.host}:{self.port}"

    def install(self) -> None:
        """Nothing to fetch: the service is this package."""

    def start(self) -> None:
        self.process = ManagedProcess(self.name, [sys.executable, "-m", "lustrax.cli", *self.spec.command],
                                      self.log_path, env=settings_env(self.settings),
                                      tie_to_parent=self.tie_to_parent)
        self.process.start()

    def wait_ready(self) -> float:
        assert self.process is not None
        return self.process.wait_ready(lambda: http_ok(f"{self.address()}/healthz"), self.settings.startup_timeout_s)


class GatewayProcess(ServiceProcess):
    """The gateway: its WebSocket port and, unless turned off, its Socket.IO port (gateways/socketio)."""

    def __init__(self, settings: Settings, tie_to_parent: bool = True) -> None:
        super().__init__(settings, PROJECT_SERVICES["gateway"], settings.ws_host, settings.ws_port, tie_to_parent)

    @property
    def ports(self) -> list[tuple[str, int]]:
        socketio = [(self.host, self.settings.socketio_port)] if self.settings.socketio_port else []
        return [*super().ports, *socketio]

    def wait_ready(self) -> float:
        assert self.process is not None
        return self.process.wait_ready(
            lambda: all(http_ok(f"http://{host}:{port}/healthz") for host, port in self.ports),
            self.settings.startup_timeout_s)


class RecsProcess(ServiceProcess):
    """The recs worker: its web port and, holding Milvus Lite unless LUSTRAX_MILVUS_URI is set, the
    loopback port it serves Milvus on."""

    def __init__(self, settings: Settings, tie_to_parent: bool = True) -> None:
        super().__init__(settings, PROJECT_SERVICES["recs"], "127.0.0.1", settings.recs_web_port, tie_to_parent)

    @property
    def ports(self) -> list[tuple[str, int]]:
        milvus = [("127.0.0.1", self.settings.recs_milvus_port)] if self.settings.milvus_uri is None else []
        return [*super().ports, *milvus]


# The local edge runs from this package too, but as infrastructure: started with the S3 server.
EDGE = ServiceSpec("edge", ("serve", "edge"))


def local_edge(settings: Settings, tie_to_parent: bool = True) -> ServiceProcess:
    return ServiceProcess(settings, EDGE, settings.edge_host, settings.edge_port, tie_to_parent)


def heat_workers(settings: Settings, tie_to_parent: bool = True) -> list[ServiceProcess]:
    """LUSTRAX_HEAT_WORKERS heat workers in one consumer group: `heat` on LUSTRAX_HEAT_WEB_PORT, then
    `heat-2`, `heat-3`, ... each 100 ports above the previous one (the port names the worker's
    data directory and its static group membership)."""
    workers = []
    for n in range(settings.heat_workers):
        port = settings.heat_web_port + 100 * n
        spec = PROJECT_SERVICES["heat"] if n == 0 else ServiceSpec(f"heat-{n + 1}", PROJECT_SERVICES["heat"].command)
        workers.append(ServiceProcess(settings.model_copy(update={"heat_web_port": port}), spec, "127.0.0.1", port,
                                      tie_to_parent))
    return workers


def local_services(settings: Settings, tie_to_parent: bool = True) -> list[ServiceProcess]:
    return [
        ServiceProcess(settings, PROJECT_SERVICES["ingest"], settings.ingest_host, settings.ingest_port, tie_to_parent),
        ServiceProcess(settings, PROJECT_SERVICES["transcode"], "127.0.0.1", settings.transcode_web_port, tie_to_parent),
        # The sink owns the embedded ClickHouse directory while the stack runs (chDB: one process).
        ServiceProcess(settings, PROJECT_SERVICES["sink"], "127.0.0.1", settings.sink_query_port, tie_to_parent),
        *heat_workers(settings, tie_to_parent),
        ServiceProcess(settings, PROJECT_SERVICES["moderation"], "127.0.0.1", settings.moderation_web_port,
                       tie_to_parent),
        GatewayProcess(settings, tie_to_parent),
        RecsProcess(settings, tie_to_parent),
        ServiceProcess(settings, PROJECT_SERVICES["takedown"], "127.0.0.1", settings.takedown_web_port, tie_to_parent),
    ]
