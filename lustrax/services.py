"""What the project runs, by name: infrastructure and the project's own services.

docker-compose.yml must describe every entry (a test checks it); `lustrax up` starts the local
equivalents.
"""

from __future__ import annotations

# Infrastructure the project relies on: compose service name -> what it is.
INFRASTRUCTURE: dict[str, str] = {
    "kafka": "Apache Kafka broker (KRaft)",
    "clickhouse": "ClickHouse server (the local stack embeds chDB instead)",
    "s3": "S3-compatible object store (versitygw)",
}

# The project's own processes: compose service name -> the `lustrax` subcommand that runs it.
PROJECT_SERVICES: dict[str, str] = {
    "provision": "provision",
}
