"""Heat benchmark: Kafka -> Faust heat worker + ClickHouse sink, against a raw loop, same run.

    .venv/bin/python -m bench.heat [--events 100000] [--rate 5000] [--seconds 20] [--videos 500]

1. Throughput on a backlog of N engagement events (views, watch ticks, likes over --videos
   videos), clock from the first event taken to the last one done, startup left out. The
   baseline: one confluent-kafka consumer + fastavro decode + batched clickhouse-connect inserts
   into the same tables of a scratch database. The project: the heat worker (`lustrax worker
   heat`, its own process, RocksDB tables) and the ClickHouse sink (in this process: it holds the
   embedded engine), both stopped while N new events are produced, then started: done when the
   worker has applied every event (its /metrics counter) and the sink has stored and committed
   every one.
2. Lag at a steady offered rate: events produced at --rate for --seconds with occurred_at = send
   time. Sink lag = ClickHouse `ingested_at - occurred_at` per row (p50/p99). Worker lag = Kafka
   record timestamp to applied in the worker's state, from the worker's
   lustrax_heat_event_lag_seconds histogram over the phase (p50/p99, interpolated within buckets
   as Prometheus' histogram_quantile does).
3. Peak RSS (VmHWM) of the heat worker.
"""

from __future__ import annotations

import argparse
import io
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition
from fastavro import schemaless_reader
from prometheus_client.parser import text_string_to_metric_families

from infra.clickhouse.client import clickhouse_client
from infra.clickhouse.migrate import migrate
from common.process import free_port
from lustrax.services import PROJECT_SERVICES, ServiceProcess
from common.settings import load_settings
from lustrax.stack import LocalStack
from processors.sink.rows import TABLE_OF_SCHEMA
from processors.sink.sink import GROUP_ID as SINK_GROUP
from processors.sink.sink import ClickHouseSink
from schemas.codec import HEADER_SIZE, encode
from schemas.envelope import new_record
from schemas.registry import writer_schema_for
from schemas.topics import TOPIC_BY_SCHEMA

ENGAGEMENT = ("VideoView", "WatchTick", "VideoLike")


def make_event(rng: random.Random, videos: int, at: datetime) -> tuple[str, dict[str, Any]]:
    video, user = f"video-{rng.randrange(videos)}", f"user-{rng.randrange(videos * 20)}"
    base = {"video_id": video, "user_id": user}
    kind = rng.random()
    if kind < 0.3:
        schema, fields = "VideoView", {**base, "session_id": f"{user}-{video}"}
    elif kind < 0.95:
        schema, fields = "WatchTick", {**base, "session_id": f"{user}-{video}",
                                       "position_ms": rng.randrange(0, 600_000), "duration_ms": 600_000}
    else:
        schema, fields = "VideoLike", {**base, "action": "LIKE" if rng.random() < 0.8 else "UNLIKE"}
    return schema, new_record(schema, "bench", fields, occurred_at=at)


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
    started, done = 0.0, 0
    batches: dict[str, list[list[Any]]] = {}
    while done < expected:
        for msg in consumer.consume(num_messages=5000, timeout=0.5):
            if msg.error():
                continue
            started = started or time.perf_counter()  # from the first message: joining is left out
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


def worker_metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return response.read().decode()


def events_taken(metrics: str) -> int:
    return int(sum(sample.value for family in text_string_to_metric_families(metrics) for sample in family.samples
                   if sample.name == "lustrax_heat_events_total"))


def lag_buckets(metrics: str) -> list[tuple[float, float]]:
    """(upper bound, cumulative count) of the worker's lag histogram."""
    return [(float(sample.labels["le"]), sample.value) for family in text_string_to_metric_families(metrics)
            for sample in family.samples if sample.name == "lustrax_heat_event_lag_seconds_bucket"]


def bucket_quantile(before: list[tuple[float, float]], after: list[tuple[float, float]], q: float) -> float:
    """The q-quantile of the observations between two snapshots, linear within a bucket."""
    counts = [(bound, a - b) for (bound, a), (_, b) in zip(after, before, strict=True)]
    rank = q * counts[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in counts:
        if count >= rank:
            if bound == float("inf"):
                return lower_bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / max(count - lower_count, 1e-9)
        lower_bound, lower_count = bound, count
    return lower_bound


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
                             heat_web_port=free_port(), heat_emit_interval_s=5.0, edge_port=free_port())
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
        # For scale: what a Faust agent that does nothing takes from the same backlog.
        noop = subprocess.run([sys.executable, "-m", "bench.faust_noop", settings.kafka_bootstrap, str(args.events)],
                              capture_output=True, text=True, timeout=600, check=True)
        noop_eps = float(re.findall(r"noop events/s (\d+)", noop.stdout + noop.stderr)[-1])  # Faust logs prints

        # The project on the same kind of backlog: worker and sink catch up with the events above
        # and stop; N new events are produced; both start again, and the clock runs from the first
        # event either of them takes to the last one both have done (the worker has applied it, the
        # sink has stored it and committed). Startup is left out, as for the baseline.
        port = settings.heat_web_port
        heat_group = "lustrax-heat"

        def start_sink() -> tuple[ClickHouseSink, threading.Thread]:
            sink = ClickHouseSink(client, settings.clickhouse_database, settings.kafka_bootstrap, lock=lock)
            thread = threading.Thread(target=sink.run, daemon=True)
            thread.start()
            return sink, thread

        sink, sink_thread = start_sink()
        worker.start()
        worker.wait_ready()
        while group_lag(settings.kafka_bootstrap, heat_group) or group_lag(settings.kafka_bootstrap, SINK_GROUP):
            time.sleep(0.25)
        assert worker.process is not None
        worker.process.stop()
        sink.stop()
        sink_thread.join()
        produce(settings.kafka_bootstrap, [make_event(rng, args.videos, datetime.now(UTC))
                                           for _ in range(args.events)])
        backlog = group_lag(settings.kafka_bootstrap, heat_group)
        sink, sink_thread = start_sink()
        worker.start()
        first = worker_done = sink_done = 0.0
        while not (worker_done and sink_done):
            time.sleep(0.05)
            now = time.perf_counter()
            try:
                taken = events_taken(worker_metrics(port))
            except OSError:
                taken = 0  # not serving yet
            sink_left = group_lag(settings.kafka_bootstrap, SINK_GROUP)
            if not first and (taken or sink_left < backlog):
                first = now
            if not worker_done and taken >= backlog:
                worker_done = now
            if not sink_done and sink_left == 0:
                sink_done = now
        project_eps = backlog / (max(worker_done, sink_done) - first)
        print(f"project: {backlog} events; heat worker applied all {worker_done - first:.1f} s and the sink "
              f"stored all {sink_done - first:.1f} s after the first was taken")
        print(f"throughput  raw consume+decode+insert loop: {raw_eps:>9,.0f} events/s")
        print(f"throughput  Faust agent doing nothing:     {noop_eps:>9,.0f} events/s   "
              f"ratio {noop_eps / raw_eps:.1%} of raw (the framework's own ceiling here)")
        print(f"throughput  heat worker + sink:             {project_eps:>9,.0f} events/s   "
              f"ratio {project_eps / raw_eps:.1%} of raw")

        # Steady rate: produce on schedule; the worker's lag histogram before and after.
        lag_before = lag_buckets(worker_metrics(port))
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
        lag_after = lag_buckets(worker_metrics(port))
        with lock:
            [(p50, p99, n)] = client.query(
                f"SELECT quantile(0.5)(d), quantile(0.99)(d), count() FROM (SELECT "
                f"dateDiff('millisecond', occurred_at, ingested_at) / 1000 AS d FROM `{settings.clickhouse_database}`"
                f".watch_ticks WHERE occurred_at >= {{m:DateTime64(3, 'UTC')}})", parameters={"m": marker}
            ).result_rows
        print(f"lag at {offered:,.0f} events/s offered for {args.seconds:.0f} s:")
        print(f"  Kafka -> ClickHouse (sink, per row):   p50 {p50:6.2f} s   p99 {p99:6.2f} s   (n={n})")
        print(f"  Kafka -> heat state (worker, per event): p50 {bucket_quantile(lag_before, lag_after, 0.5):6.2f} s"
              f"   p99 {bucket_quantile(lag_before, lag_after, 0.99):6.2f} s   (n={lag_after[-1][1] - lag_before[-1][1]:.0f})")
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
