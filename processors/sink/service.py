"""`lustrax worker sink`: the sink and, beside it, the query endpoint of the engine it holds."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

from infra.clickhouse.client import clickhouse_client
from common.settings import Settings
from processors.sink.query_server import start_query_server
from processors.sink.sink import ClickHouseSink


def run_sink(settings: Settings) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    client = clickhouse_client(settings)
    lock = threading.Lock()
    sink = ClickHouseSink(client, settings.clickhouse_database, settings.kafka_bootstrap,
                          settings.sink_batch_rows, settings.sink_batch_interval_s, lock)

    def stop(signum: int, frame: FrameType | None) -> None:
        sink.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server = start_query_server("127.0.0.1", settings.sink_query_port, client, lock, settings.jwt_signing_secret)
    try:
        sink.run()
    finally:
        server.shutdown()
        client.close()
