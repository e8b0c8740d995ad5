"""Provisioning, the same for the local stack and for production services: topics, buckets, migrations."""

from __future__ import annotations

from dataclasses import dataclass

from infra.clickhouse.client import clickhouse_client
from infra.clickhouse.migrate import migrate
from infra.kafka.topics import ensure_topics
from infra.s3.buckets import ensure_buckets
from common.settings import Settings


@dataclass(frozen=True)
class Endpoint:
    name: str
    address: str
    detail: str = ""


def provision(settings: Settings) -> list[Endpoint]:
    """Create what the project needs on running services (idempotent); returns what was done where."""
    created = ensure_topics(settings.kafka_bootstrap)
    buckets = ensure_buckets(settings)
    client = clickhouse_client(settings)
    try:
        applied = migrate(client, settings.clickhouse_database)
    finally:
        # chDB: release the data directory's lock for the service that owns it later.
        client.close()
    return [
        Endpoint("kafka", settings.kafka_bootstrap, f"{len(created)} topics created"),
        Endpoint("s3", settings.s3_endpoint, "buckets " + ", ".join(b.name for b in buckets)),
        Endpoint("clickhouse", settings.clickhouse_url, f"{len(applied)} migrations applied"),
        Endpoint("cdn", settings.public_base_url, "public bucket, anonymous read"),
    ]
