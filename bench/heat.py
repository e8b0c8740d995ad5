"""Heat benchmark: Kafka -> Faust heat worker + ClickHouse sink, against a raw loop, same run.

    .venv/bin/python -m bench.heat [--events 100000] [--rate 5000] [--seconds 20] [--videos 500]

1. Throughput: N engagement events (views, watch ticks, likes over --videos videos). The
   baseline: one confluent-kafka consumer + fastavro decode + batched clickhouse-connect inserts
   into the same tables of a scratch database. The project: the heat worker (`lustrax worker
   heat`, its own process, RocksDB tables) and the ClickHouse sink (in this process: it holds the
   embedded engine), started and caught up first; then N more events are produced and the clock
   stops when the worker's group has committed every offset and ClickHouse holds every row.
2. Lag at a steady offered rate: events produced at --rate for --seconds with occurred_at = send
   time. Sink lag = ClickHouse `ingested_at - occurred_at` per row (p50/p99). Worker lag = the heat
   group's unconsumed messages, sampled every 0.25 s, divided by the offered rate (p50/p99).
3. Peak RSS (VmHWM) of the heat worker.
"""

from __future__ import annotations

import argparse
import io
import random
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition
from fastavro import schemaless_reader

from bench import percentile
from infra.clickhouse.client import clickhouse_client
from infra.clickhouse.migrate import migrate
from lustrax.process import free_port
from lustrax.services import PROJECT_SERVICES, ServiceProcess
from lustrax.settings import load_settings
from lustrax.stack import LocalStack
from processors.sink.rows import TABLE_OF_SCHEMA
from processors.sink.sink import ClickHouseSink
from schemas.codec import HEADER_SIZE, encode
from schemas.registry import writer_schema_for
from schemas.topics import TOPIC_BY_SCHEMA

ENGAGEMENT = ("VideoView", "WatchTick", "VideoLike")


def make_event(rng: random.Random, videos: int, at: datetime) -> tuple[str, dict[str, Any]]:
    video, user = f"video-{rng.randrange(videos)}", f"user-{rng.randrange(videos * 20)}"
    base = {"event_id": uuid.uuid4(), "occurred_at": at, "producer": "bench", "schema_version": 1,
            "video_id": video, "user_id": user}
    kind = rng.random()
    if kind < 0.3:
        return "VideoView", {**base, "session_id": f"{user}-{video}"}
    if kind < 0.95:
        return "WatchTick", {**base, "session_id": f"{user}-{video}", "position_ms": rng.randrange(0, 600_000),
                             "duration_ms": 600_000}
    return "VideoLike", {**base, "action": "LIKE" if rng.random() < 0.8 else "UNLIKE"}


def produce(bootstrap: str, events: list[tuple[str, dict[str, Any]]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "compression.type": "lz4"})
    for schema, record in events:
        while True:
            try:
                producer.produce(TOPIC_BY_SCHEMA[schema].name, encode(schema, record), record["video_id"].encode())
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
    producer.flush(60)


def group_lag(bootstrap: str, group: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        partitions = [TopicPartition(TOPIC_BY_SCHEMA[s].name, p) for s in ENGAGEMENT
                      for p in range(TOPIC_BY_SCHEMA[s].partitions)]
        committed = consumer.committed(partitions, timeout=10)
        lag = 0
        for tp in committed:
            _, high = consumer.get_watermark_offsets(tp, timeout=10, cached=False)
            lag += high - max(tp.offset, 0)
        return lag
    finally:
        consumer.close()


def raw_loop(bootstrap: str, client: Any, database: str, expected: int) -> float:
    """The baseline: consume, decode with fastavro, insert in batches of 10k (events/s)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"raw-{uuid.uuid4().hex}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([TOPIC_BY_SCHEMA[s].name for s in ENGAGEMENT])
    started, done = time.perf_counter(), 0
    batches: dict[str, list[list[Any]]] = {}
    while done < expected:
        for msg in consumer.consume(num_messages=5000, timeout=0.5):
            if msg.error():
                continue
            name, writer = writer_schema_for(msg.value()[2:HEADER_SIZE])
            record = schemaless_reader(io.BytesIO(msg.value()[HEADER_SIZE:]), writer, None)
            mapping = TABLE_OF_SCHEMA[name]
            batches.setdefault(mapping.table, []).append(mapping.row(record))
            done += 1
        if sum(map(len, batches.values())) >= 10_000 or done >= expected:
            for table, rows in batches.items():
                client.insert(f"`{database}`.`{table}`", rows, column_names=list(TABLE_OF_SCHEMA[
                    next(s for s in ENGAGEMENT if TABLE_OF_SCHEMA[s].table == table)].columns))
            consumer.commit(asynchronous=False)
            batches = {}
    consumer.close()
    return expected / (time.perf_counter() - started)


def count_rows(client: Any, database: str, lock: threading.Lock) -> int:
    with lock:
        return sum(client.query(f"SELECT count() FROM `{database}`.`{TABLE_OF_SCHEMA[s].table}`").result_rows[0][0]
                   for s in ENGAGEMENT)



def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=5000.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--videos", type=int, default=500)
    args = parser.parse_args()
    rng = random.Random(1)

    home = Path(tempfile.mkdtemp(prefix="lustrax-bench-heat-"))
    settings = load_settings(home=home, kafka_bootstrap=f"127.0.0.1:{free_port()}",
                             kafka_controller_port=free_port(), s3_endpoint=f"http://127.0.0.1:{free_port()}",
                             heat_web_port=free_port(), heat_emit_interval_s=5.0)
    stack = LocalStack(settings, with_services=False)
    print(f"starting a local stack under {home} ...", file=sys.stderr)
    stack.start()
    client = clickhouse_client(settings)
    worker = ServiceProcess(settings, PROJECT_SERVICES["heat"], "127.0.0.1", settings.heat_web_port)
    lock = threading.Lock()
    try:
        events = [make_event(rng, args.videos, datetime.now(UTC)) for _ in range(args.events)]
        # Baseline first, on its own: produce, then consume+decode+insert into a scratch database.
        produce(settings.kafka_bootstrap, events)
        scratch = f"bench_raw_{uuid.uuid4().hex[:8]}"
        migrate(client, scratch)
        raw_eps = raw_loop(settings.kafka_bootstrap, client, scratch, args.events)

        # The project, warm: worker and sink running and caught up with the events above, then the
        # same number of new events; the clock runs from the first produce to the last stored row.
        sink = ClickHouseSink(client, settings.clickhouse_database, settings.kafka_bootstrap, lock=lock)
        worker.start()
        threading.Thread(target=sink.run, daemon=True).start()
        worker.wait_ready()
        while group_lag(settings.kafka_bootstrap, "lustrax-heat") > 0 or \
                count_rows(client, settings.clickhouse_database, lock) < args.events:
            time.sleep(0.25)
        started = time.perf_counter()
        produce(settings.kafka_bootstrap, [make_event(rng, args.videos, datetime.now(UTC))
                                           for _ in range(args.events)])
        while group_lag(settings.kafka_bootstrap, "lustrax-heat") > 0 or \
                count_rows(client, settings.clickhouse_database, lock) < 2 * args.events:
            time.sleep(0.25)
        project_eps = args.events / (time.perf_counter() - started)
        print(f"throughput  raw consume+decode+insert loop: {raw_eps:>9,.0f} events/s")
        print(f"throughput  heat worker + sink (warm):     {project_eps:>9,.0f} events/s   "
              f"ratio {project_eps / raw_eps:.1%} of raw (includes producing them)")

        # Steady rate: produce on schedule, sample the worker's backlog.
        lags: list[float] = []
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                lags.append(group_lag(settings.kafka_bootstrap, "lustrax-heat") / args.rate)
                time.sleep(0.25)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "linger.ms": 5})
        marker = datetime.now(UTC)
        begin, sent = time.perf_counter(), 0
        while time.perf_counter() - begin < args.seconds:
            due = int((time.perf_counter() - begin) * args.rate)
            while sent < due:
                schema, record = make_event(rng, args.videos, datetime.now(UTC))
                producer.produce(TOPIC_BY_SCHEMA[schema].name, encode(schema, record), record["video_id"].encode())
                sent += 1
            producer.poll(0)
            time.sleep(0.002)
        producer.flush(30)
        offered = sent / (time.perf_counter() - begin)
        time.sleep(5)
        stop.set()
        sampler.join()
        with lock:
            [(p50, p99, n)] = client.query(
                f"SELECT quantile(0.5)(d), quantile(0.99)(d), count() FROM (SELECT "
                f"dateDiff('millisecond', occurred_at, ingested_at) / 1000 AS d FROM `{settings.clickhouse_database}`"
                f".watch_ticks WHERE occurred_at >= {{m:DateTime64(3, 'UTC')}})", parameters={"m": marker}
            ).result_rows
        print(f"lag at {offered:,.0f} events/s offered for {args.seconds:.0f} s:")
        print(f"  Kafka -> ClickHouse (sink, per row):   p50 {p50:6.2f} s   p99 {p99:6.2f} s   (n={n})")
        print(f"  heat worker backlog (sampled):         p50 {percentile(lags, 0.5):6.2f} s   "
              f"p99 {percentile(lags, 0.99):6.2f} s   (n={len(lags)})")
        assert worker.process is not None and worker.process.pid is not None
        status = Path(f"/proc/{worker.process.pid}/status").read_text()
        peak = next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM"))
        print(f"heat worker peak RSS: {int(peak) / 1024:.0f} MiB")
        sink.stop()
    finally:
        if worker.process is not None:
            worker.process.stop()
        client.close()
        stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
