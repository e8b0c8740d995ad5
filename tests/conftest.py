"""Session fixtures: one real stack per test run.

Where the stack comes from, in order:
1. LUSTRAX_TEST_EXTERNAL=1: the services named by the LUSTRAX_* environment variables;
2. a Docker engine answers: testcontainers (Apache Kafka and versitygw images);
3. otherwise: the project's own local stack (Kafka from Maven, versitygw) on free loopback ports.
ClickHouse is the embedded chDB engine (one data directory for the whole pytest process: chDB
allows one path per process) unless LUSTRAX_CLICKHOUSE_DSN names a server.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from common.process import free_port
from lustrax.provision import provision
from common.settings import Settings, load_settings
from tests.helpers import SUPERVISED_ENV, SupervisedStack, fresh_env, lustrax_command, processes_using, settings_of

# The modules that share the session's supervised stack, in the order they run; the last ends it
# (a SIGKILL of its supervisor).
SUPERVISED_MODULES = ("test_faults.py", "test_supervisor.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The modules of the supervised stack one after the other: meanwhile it would stay up idle and
    slow the modules between them (2 cores)."""
    shared = [item for name in SUPERVISED_MODULES for item in items if item.path.name == name]
    if not shared:
        return
    first = next(i for i, item in enumerate(items) if item.path.name in SUPERVISED_MODULES)
    rest = [item for item in items if item.path.name not in SUPERVISED_MODULES]
    items[:] = rest[:first] + shared + rest[first:]


def _docker_answers() -> bool:
    try:
        import docker  # testcontainers' own dependency

        docker.from_env(timeout=2).ping()
    except Exception:  # noqa: BLE001 - no engine is the normal case here
        return False
    return True


def _containers_stack(home: Path) -> Iterator[Settings]:
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.waiting_utils import wait_for_logs
    from testcontainers.kafka import KafkaContainer

    probe = load_settings(home=home)
    access_key, secret_key = probe.s3_credentials
    with KafkaContainer("apache/kafka:4.1.1").with_kraft() as kafka, DockerContainer(
        "versity/versitygw:v1.8.0"
    ).with_env("ROOT_ACCESS_KEY", access_key).with_env("ROOT_SECRET_KEY", secret_key).with_command(
        "--port :7070 posix /tmp"
    ).with_exposed_ports(7070) as s3:
        wait_for_logs(s3, "", timeout=30)
        endpoint = f"http://{s3.get_container_host_ip()}:{s3.get_exposed_port(7070)}"
        settings = load_settings(home=home, kafka_bootstrap=kafka.get_bootstrap_server(), s3_endpoint=endpoint)
        provision(settings)
        yield settings


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Settings of a running stack: Kafka, S3 server, buckets and topics created."""
    home = tmp_path_factory.mktemp("lustrax-home")
    if os.environ.get("LUSTRAX_TEST_EXTERNAL") == "1":
        settings = load_settings()
        provision(settings)
        yield settings
        return
    if _docker_answers():
        yield from _containers_stack(home)
        return
    from lustrax.stack import LocalStack

    settings = load_settings(
        home=home,
        kafka_bootstrap=f"127.0.0.1:{free_port()}",
        kafka_controller_port=free_port(),
        s3_endpoint=f"http://127.0.0.1:{free_port()}",
        edge_port=free_port(),
        ingest_port=free_port(),
        transcode_web_port=free_port(),
        sink_query_port=free_port(),
        heat_web_port=free_port(),
        ws_port=free_port(),
        socketio_port=free_port(),
        recs_web_port=free_port(),
        recs_milvus_port=free_port(),
    )
    local = LocalStack(settings, with_services=False)
    local.start()
    try:
        yield settings
    finally:
        local.stop()


@pytest.fixture(scope="session")
def clickhouse(stack: Settings):  # type: ignore[no-untyped-def]
    """One clickhouse-connect client for the run (embedded chDB unless a server DSN is set)."""
    from infra.clickhouse.client import clickhouse_client

    client = clickhouse_client(stack)
    yield client
    client.close()


@pytest.fixture(scope="session")
def ingest_api(stack: Settings) -> Iterator[str]:
    """The ingest API served by uvicorn over real HTTP on a free port; yields its base URL."""
    from lustrax.review import human_reviewer
    from producers.app import create_app
    from tests.helpers import served

    with served(create_app(stack, reviewer=human_reviewer(stack))) as url:
        yield url


@pytest.fixture(scope="module")
def sink(stack: Settings, clickhouse: Any) -> Iterator[Any]:
    """The ClickHouse sink in this process (the test process holds the run's chDB directory),
    reading every topic from the start under a group of its own."""
    import threading
    import uuid

    from processors.sink.sink import ClickHouseSink

    sink = ClickHouseSink(clickhouse, stack.clickhouse_database, stack.kafka_bootstrap, batch_interval_s=0.5,
                          group_id=f"test-sink-{uuid.uuid4().hex}")
    thread = threading.Thread(target=sink.run, daemon=True)
    thread.start()
    yield sink
    sink.stop()
    thread.join(timeout=30)


@pytest.fixture(scope="session")
def supervised_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SupervisedStack]:
    """One whole stack under its supervisor (`lustrax up --detach` on free ports), SUPERVISED_ENV's
    settings, for tests/integration/test_faults.py and then test_supervisor.py (one start instead of two)."""
    home = tmp_path_factory.mktemp("supervised")
    env = {**fresh_env(home), **SUPERVISED_ENV}
    up = lustrax_command(env, "up", "--detach")
    assert up.returncode == 0, up.stderr
    try:
        yield SupervisedStack(env, settings_of(env), home)
    finally:
        lustrax_command(env, "down")
        assert processes_using(home) == []
