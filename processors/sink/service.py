"""`lustrax worker sink`: the sink and, beside it, the query endpoint of the engine it holds."""

from __future__ import annotations

import logging
import signal
from types import FrameType

from common.settings import Settings
from infra.clickhouse.client import clickhouse_client
from processors.sink.query_server import start_query_server
from processors.sink.sink import ClickHouseSink


def sink_health(sink: ClickHouseSink) -> str | None:
    """Why the sink is not ready (its last insert error, first line), or None."""
    error = sink.insert_error
    return None if error is None else f"ClickHouse inserts failing: {error.strip().splitlines()[0][:500]}"


def run_sink(settings: Settings) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # The sink's own client: analyst queries open theirs (chDB: same engine, separate sessions),
    # so no query can change the session the sink writes through.
    client = clickhouse_client(settings)
    sink = ClickHouseSink(client, settings.clickhouse_database, settings.kafka_bootstrap,
                          settings.sink_batch_rows, settings.sink_batch_interval_s)

    def stop(signum: int, frame: FrameType | None) -> None:
        sink.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server = start_query_server("127.0.0.1", settings.sink_query_port, settings, lambda: sink_health(sink))
    try:
        sink.run()
    finally:
        server.shutdown()
        client.close()
