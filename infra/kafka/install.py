"""Fetch the Kafka broker jars from Maven Central into the cache directory (once per version)."""

from __future__ import annotations

from pathlib import Path

from infra.tools import require_tool, run_logged
from common.settings import Settings

POM = Path(__file__).with_name("pom.xml")


def kafka_libs_dir(settings: Settings) -> Path:
    return settings.cache_dir / f"kafka-{settings.kafka_version}" / "libs"


def ensure_kafka_libs(settings: Settings) -> Path:
    """The directory of runtime jars, resolving them with Maven when absent."""
    libs = kafka_libs_dir(settings)
    marker = libs / ".complete"
    if marker.exists():
        return libs
    require_tool("kafka", "java", "install a Java 17+ runtime (Debian: openjdk-17-jre-headless)")
    mvn = require_tool("kafka", "mvn", "install Apache Maven (Debian: maven)")
    run_logged(
        "kafka",
        [mvn, "-B", "-q", "-f", str(POM), f"-Dkafka.version={settings.kafka_version}",
         "dependency:copy-dependencies", f"-DoutputDirectory={libs}", "-DincludeScope=runtime"],
        settings.logs_dir / "setup-kafka.log",
    )
    # The marker is written last so an interrupted download is redone, not half-used.
    marker.touch()
    return libs
