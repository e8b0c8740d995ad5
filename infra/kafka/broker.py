"""A single-node KRaft Kafka broker: configuration and command lines (pure), then the process."""

from __future__ import annotations

import base64
import logging
import uuid
from pathlib import Path

from confluent_kafka.admin import AdminClient

from infra.kafka.install import ensure_kafka_libs
from infra.tools import require_tool, run_logged
from common.process import ManagedProcess
from common.settings import Settings

LOG4J2_CONFIG = Path(__file__).with_name("log4j2.properties")


def broker_properties(host: str, port: int, controller_port: int, log_dir: Path) -> dict[str, str]:
    """server.properties of a combined broker+controller on one loopback host."""
    return {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{host}:{controller_port}",
        "listeners": f"PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{host}:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(log_dir),
        # The project creates every topic with explicit settings (schemas/topics.py).
        "auto.create.topics.enable": "false",
        "num.partitions": "1",
        # One node: internal topics cannot have more replicas than brokers.
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "min.insync.replicas": "1",
        # Consumer groups (Faust, the sink) start at once instead of after 3 s.
        "group.initial.rebalance.delay.ms": "0",
        "offsets.topic.num.partitions": "10",
        "log.retention.hours": "168",
        "message.max.bytes": str(2 * 1024 * 1024),
    }


def render_properties(props: dict[str, str]) -> str:
    return "".join(f"{key}={value}\n" for key, value in props.items())


def new_cluster_id() -> str:
    """Kafka's cluster id format: 16 random bytes, URL-safe base64 without padding. Like Kafka's
    Uuid.randomUuid, never one starting with "-": kafka-storage would take it for an option."""
    while (cluster_id := base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")).startswith("-"):
        pass
    return cluster_id


def java_argv(java: str, libs: Path, heap: str, main_class: str, *args: str) -> list[str]:
    return [
        java, f"-Xms{heap}", f"-Xmx{heap}", "-XX:+UseG1GC", "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={LOG4J2_CONFIG}",
        "-cp", f"{libs}/*", main_class, *args,
    ]


def storage_format_argv(java: str, libs: Path, heap: str, cluster_id: str, config: Path) -> list[str]:
    return java_argv(java, libs, heap, "kafka.tools.StorageTool",
                     "format", "-t", cluster_id, "-c", str(config), "--ignore-formatted")


def broker_argv(java: str, libs: Path, heap: str, config: Path) -> list[str]:
    return java_argv(java, libs, heap, "kafka.Kafka", str(config))


# librdkafka reports every refused connection while we poll a starting broker: keep that quiet.
QUIET_LOGGER = logging.getLogger("lustrax.kafka.admin")
QUIET_LOGGER.addHandler(logging.NullHandler())
QUIET_LOGGER.propagate = False


def broker_answers(bootstrap: str, timeout_s: float = 1.0) -> bool:
    """True once the broker serves metadata (controller elected, listener open)."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "socket.connection.setup.timeout.ms": 1000},
                        logger=QUIET_LOGGER)
    try:
        metadata = admin.list_topics(timeout=timeout_s)
    except Exception:  # noqa: BLE001 - any failure means "not ready yet"
        return False
    return bool(metadata.brokers)


class KafkaBroker:
    """The local broker process; its data lives under LUSTRAX_HOME/data/kafka."""

    name = "kafka"

    def __init__(self, settings: Settings, tie_to_parent: bool = True) -> None:
        self.settings = settings
        self.host, self.port = settings.kafka_address
        self.dir = settings.data_dir / "kafka"
        self.log_path = settings.logs_dir / "kafka.log"
        self.tie_to_parent = tie_to_parent
        self.process: ManagedProcess | None = None

    @property
    def ports(self) -> list[tuple[str, int]]:
        return [(self.host, self.port), (self.host, self.settings.kafka_controller_port)]

    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def install(self) -> None:
        ensure_kafka_libs(self.settings)

    def start(self) -> None:
        java = require_tool(self.name, "java", "install a Java 17+ runtime")
        libs = ensure_kafka_libs(self.settings)
        config = self.dir / "server.properties"
        log_dir = self.dir / "log"
        self.dir.mkdir(parents=True, exist_ok=True)
        props = broker_properties(self.host, self.port, self.settings.kafka_controller_port, log_dir)
        config.write_text(render_properties(props))
        cluster_id_file = self.dir / "cluster.id"
        if not cluster_id_file.exists():
            cluster_id_file.write_text(new_cluster_id())
        run_logged(self.name, storage_format_argv(java, libs, "256m", cluster_id_file.read_text().strip(), config),
                   self.log_path, timeout_s=120)
        self.process = ManagedProcess(self.name, broker_argv(java, libs, self.settings.kafka_heap, config),
                                      self.log_path, tie_to_parent=self.tie_to_parent)
        self.process.start()

    def wait_ready(self) -> float:
        assert self.process is not None
        return self.process.wait_ready(lambda: broker_answers(self.address()), self.settings.startup_timeout_s)
