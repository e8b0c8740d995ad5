"""Heat benchmark: Kafka -> Faust heat worker + ClickHouse sink, against baselines of the same run.

    .venv/bin/python -m bench.heat [--events 50000] [--rate 5000] [--seconds 20] [--videos 500]
                                   [--workers 2] [--steady-workers 1] [--pairs N ...] [--faust-variants]

1. Throughput on backlogs of three traffic shapes, clock from the first event taken to the last
   one done, startup left out:
   - uniform: --events views, watch ticks and likes over --videos videos, nearly every event a
     new (video, viewer) pair;
   - session: --events events as `lustrax simulate` makes them (producers/simulate.py: sessions of
     a view and a tick every 5 s, Zipf-popular videos, re-watches, likes and unlikes);
   - viral: one video, 5,000 viewers in 6,000 sessions (1,000 watch twice), 1,500 of them watched
     to the end; its heat row must then say exactly that.
   Baselines, on the same backlogs: one confluent-kafka consumer + fastavro decode + batched
   clickhouse-connect inserts (uniform only), and a Faust agent that does nothing
   (bench/faust_noop.py). The project: the heat worker (`lustrax worker heat`, its own process,
   RocksDB table) and the ClickHouse sink (in this process: it holds the embedded engine), both
   stopped while the backlog is produced, then started: done when the worker has taken every
   event (its /metrics counter) and the sink has stored and committed every one. The worker's
   rate runs from its own first event taken (its start-up left out, as the agent's is).
   With --faust-variants, the do-nothing agent also runs without uvloop and without Faust's
   Cython extensions (NO_CYTHON=1) on the uniform backlog: what each gives.
2. Scaling: one running heat worker, then --workers of them in one group (0 or 1 to skip), take
   a burst of --events uniform events produced at once (encoded beforehand: produced many times
   faster than taken), the sink running too; events/s from the first taken to the last. The new
   workers join and recover their state off the clock, as in a running deployment.
3. Lag at a steady offered rate, to --steady-workers running workers: uniform events made and
   encoded beforehand, produced at --rate for --seconds, occurred_at = the time each is due.
   Sink lag = ClickHouse `ingested_at - occurred_at` per row (p50/p99). Worker lag = Kafka record
   timestamp to applied in a worker's state, from the workers' lustrax_heat_event_lag_seconds
   histograms over the phase (p50/p99, interpolated within buckets as Prometheus'
   histogram_quantile does).
4. Peak RSS (VmHWM) of the heat worker; with --pairs N [M ...], after views of N distinct
   (video, viewer) pairs in the last 24 h, then of M in all, ... (and how long each took).

Timings on a shared machine are noisy: compare the ratios, which come from one run.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from fastavro import schemaless_reader
from prometheus_client.parser import text_string_to_metric_families

from bench.proc import cpu_seconds, peak_rss_mib
from infra.clickhouse.client import clickhouse_client
from infra.clickhouse.migrate import migrate
from common.process import free_port
from lustrax.services import PROJECT_SERVICES, ServiceProcess
from common.settings import load_settings
from lustrax.stack import LocalStack
from processors.sink.rows import TABLE_OF_SCHEMA
from processors.sink.sink import GROUP_ID as SINK_GROUP
from processors.sink.sink import ClickHouseSink
from producers.simulate import TrafficModel
from schemas.codec import HEADER_SIZE, encode
from schemas.envelope import new_record
from schemas.registry import writer_schema_for
from schemas.topics import TOPIC_BY_SCHEMA

ENGAGEMENT = ("VideoView", "WatchTick", "VideoLike")
COORDINATOR_NOT_READY = (KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
                         KafkaError.COORDINATOR_NOT_AVAILABLE)
Event = tuple[str, dict[str, Any]]
VIRAL_VIEWERS, VIRAL_REWATCHERS, VIRAL_COMPLETED = 5_000, 1_000, 1_500


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


def session_events(count: int, videos: int, seed: int) -> list[Event]:
    """`count` events of `lustrax simulate`'s traffic model, ending now."""
    rate = 2000.0
    start_ms = int(time.time() * 1000 - count / rate * 1000)
    model = TrafficModel.for_rate(rate, seed, users=videos * 40, videos=videos, start_ms=start_ms)
    schemas = {"view": "VideoView", "watch_tick": "WatchTick", "like": "VideoLike", "unlike": "VideoLike"}
    events: list[Event] = []
    now_ms = start_ms
    while len(events) < count:
        now_ms += 1000
        for event in model.events_until(now_ms):
            kind = event.pop("type")
            at = datetime.fromtimestamp(event.pop("occurred_at") / 1000, UTC)
            del event["event_id"]
            if kind in ("like", "unlike"):
                event["action"] = kind.upper()
            events.append((schemas[kind], new_record(schemas[kind], "bench", event, occurred_at=at)))
    return events[:count]


def viral_events(video: str, seed: int) -> list[Event]:
    """One video's last 50 minutes: VIRAL_VIEWERS viewers, the first VIRAL_REWATCHERS of them twice;
    the first VIRAL_COMPLETED sessions watch the 60 s clip to the end; a tick every 5 s."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    events: list[Event] = []
    n = 0
    for viewer in range(VIRAL_VIEWERS):
        user = f"viral-user-{viewer}"
        for repeat in range(2 if viewer < VIRAL_REWATCHERS else 1):
            session, start = f"{user}-{repeat}", now - timedelta(seconds=rng.randrange(60, 3000))
            reach = 60_000 if n < VIRAL_COMPLETED else rng.randrange(5_000, 50_000, 5_000)
            base = {"video_id": video, "user_id": user, "session_id": session}
            events.append(("VideoView", new_record("VideoView", "bench", base, occurred_at=start)))
            events.extend(("WatchTick", new_record("WatchTick", "bench", {**base, "position_ms": p, "duration_ms": 60_000},
                                                   occurred_at=start + timedelta(milliseconds=p)))
                          for p in range(5_000, reach + 1, 5_000))
            n += 1
    rng.shuffle(events)  # viewers interleave
    return events


def pair_views(first: int, count: int, seed: int) -> Iterator[Event]:
    """Views of `count` new distinct (video, viewer) pairs at times in the last 24 h (made as produced:
    a million records would not fit the bench's memory comfortably)."""
    rng, now = random.Random(seed), datetime.now(UTC)
    for n in range(first, first + count):
        yield ("VideoView", new_record("VideoView", "bench", {
            "video_id": f"pairs-video-{n % 1000}", "user_id": f"pairs-user-{n}", "session_id": f"s{n}"},
            occurred_at=now - timedelta(seconds=rng.randrange(0, 86_000))))


def encoded(events: Iterable[Event]) -> Iterator[tuple[str, bytes, bytes]]:
    """(topic, value, key) of each event, as produced."""
    return ((TOPIC_BY_SCHEMA[schema].name, encode(schema, record), record["video_id"].encode())
            for schema, record in events)


def produce(bootstrap: str, events: Iterable[Event]) -> None:
    produce_encoded(bootstrap, encoded(events))


def produce_encoded(bootstrap: str, records: Iterable[tuple[str, bytes, bytes]],
                    schedule: Callable[[int], None] | None = None) -> int:
    """Produce (topic, value, key) records; `schedule(n)`, when given, is called before the n-th
    and waits until it is due. The number produced, all acknowledged."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "compression.type": "lz4"})
    n = 0
    for topic, value, key in records:
        if schedule is not None:
            schedule(n)
        while True:
            try:
                producer.produce(topic, value, key)
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
        n += 1
    if producer.flush(60):
        raise RuntimeError("records left unacknowledged")
    return n


def group_lag(bootstrap: str, group: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        partitions = [TopicPartition(TOPIC_BY_SCHEMA[s].name, p) for s in ENGAGEMENT
                      for p in range(TOPIC_BY_SCHEMA[s].partitions)]
        for attempt in range(50):
            try:
                committed = consumer.committed(partitions, timeout=10)
                break
            except KafkaException as exc:  # the group coordinator still loading after a start
                if exc.args[0].code() not in COORDINATOR_NOT_READY or attempt == 49:
                    raise
                time.sleep(0.2)
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


def summed_buckets(per_worker: list[list[tuple[float, float]]]) -> list[tuple[float, float]]:
    """The workers' lag histograms as one (the same bounds in each)."""
    return [(rows[0][0], sum(count for _, count in rows)) for rows in zip(*per_worker, strict=True)]


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


def noop_rate(bootstrap: str, count: int, skip: int, loop: str = "uvloop", cython: bool = True) -> float:
    """What a Faust agent that does nothing takes from the last `count` events (after `skip`), on
    the worker's event loop and with Faust's Cython extensions unless told otherwise."""
    env = {key: value for key, value in os.environ.items() if key != "NO_CYTHON"}
    if not cython:
        env["NO_CYTHON"] = "1"
    noop = subprocess.run([sys.executable, "-m", "bench.faust_noop", bootstrap, str(count), str(skip), loop],
                          capture_output=True, text=True, timeout=900, check=True, env=env)
    return float(re.findall(r"noop events/s (\d+)", noop.stdout + noop.stderr)[-1])  # Faust logs prints


class Bench:
    """The stack, the sink (in this process) and the heat workers (their own processes)."""

    def __init__(self, settings: Any, client: Any) -> None:
        self.settings, self.client = settings, client
        self.lock = threading.Lock()
        self.workers = [ServiceProcess(settings, PROJECT_SERVICES["heat"], "127.0.0.1", settings.heat_web_port)]
        self.sink: ClickHouseSink | None = None
        self.sink_thread: threading.Thread | None = None
        self.produced = 0

    def produce(self, events: Iterable[Event]) -> None:
        counted = [0]

        def counting() -> Iterator[Event]:
            for event in events:
                counted[0] += 1
                yield event

        produce(self.settings.kafka_bootstrap, counting())
        self.produced += counted[0]

    def start_sink(self) -> None:
        self.sink = ClickHouseSink(self.client, self.settings.clickhouse_database, self.settings.kafka_bootstrap,
                                   lock=self.lock)
        self.sink_thread = threading.Thread(target=self.sink.run, daemon=True)
        self.sink_thread.start()

    def stop_all(self) -> None:
        for worker in self.workers:
            if worker.process is not None:
                worker.process.stop()
        if self.sink is not None and self.sink_thread is not None:
            self.sink.stop()
            self.sink_thread.join()
            self.sink = None

    def use_workers(self, count: int) -> None:
        while len(self.workers) < count:
            port = free_port()
            self.workers.append(ServiceProcess(self.settings.model_copy(update={"heat_web_port": port}),
                                               PROJECT_SERVICES["heat"], "127.0.0.1", port))
        for worker in self.workers[count:]:
            if worker.process is not None:
                worker.process.stop()
        del self.workers[count:]

    def settle(self, timeout_s: float = 300) -> None:
        """Until every worker has been assigned its partitions and recovered their state (its
        /healthz says ready, twice in a row)."""
        deadline, calm = time.monotonic() + timeout_s, 0
        while calm < 2:
            if time.monotonic() > deadline:
                raise TimeoutError("the heat workers did not settle")
            states = []
            for worker in self.workers:
                with urllib.request.urlopen(f"http://127.0.0.1:{worker.port}/healthz", timeout=10) as response:
                    states.append(json.loads(response.read()))
            calm = calm + 1 if all(state["ready"] for state in states) else 0
            time.sleep(0.5)

    def burst(self, events: list[Event]) -> float:
        """The running, settled workers take `events`, produced at once (encoded beforehand, and
        produced many times faster than the workers take them: a backlog with nobody restarted):
        events/s from the first one taken to the last."""
        records = list(encoded(events))
        before = self.taken()
        sender = threading.Thread(target=produce_encoded, args=(self.settings.kafka_bootstrap, records))
        sender.start()
        first = 0.0
        while True:
            taken = self.taken() - before
            now = time.perf_counter()
            if taken and not first:
                first = now
            if taken >= len(records):
                break
            time.sleep(0.05)
        sender.join()
        self.produced += len(records)
        return len(records) / max(now - first, 1e-9)

    def taken(self) -> int:
        total = 0
        for worker in self.workers:
            try:
                total += events_taken(worker_metrics(worker.port))
            except OSError:
                pass  # not serving yet
        return total

    def catch_up(self, events: Iterable[Event]) -> tuple[float, float, float]:
        """Everything stopped, `events` produced, everything started: (events/s of worker and sink
        together, seconds from the workers' first event taken until they took all, seconds from
        the sink's first event stored until it stored all)."""
        self.stop_all()
        self.produce(events)
        backlog = group_lag(self.settings.kafka_bootstrap, "lustrax-heat")
        self.start_sink()
        for worker in self.workers:
            worker.start()
        worker_first = sink_first = worker_done = sink_done = 0.0
        while not (worker_done and sink_done):
            time.sleep(0.05)
            now = time.perf_counter()
            taken = self.taken()
            sink_left = group_lag(self.settings.kafka_bootstrap, SINK_GROUP)
            if not worker_first and taken:
                worker_first = now
            if not sink_first and sink_left < backlog:
                sink_first = now
            if not worker_done and taken >= backlog:
                worker_first = worker_first or now  # an empty backlog
                worker_done = now
            if not sink_done and sink_left == 0:
                sink_first = sink_first or now
                sink_done = now
        for worker in self.workers:
            worker.wait_ready()  # an empty backlog is done at once: still serving before we go on
        # Off the clock: until the workers have committed all (a checkpoint and a score cover it),
        # so that the next backlog is not mixed with replays of this one.
        while group_lag(self.settings.kafka_bootstrap, "lustrax-heat"):
            time.sleep(0.25)
        first = min(worker_first, sink_first)
        return (backlog / max(max(worker_done, sink_done) - first, 1e-9), max(worker_done - worker_first, 1e-9),
                sink_done - sink_first)

    def heat_row(self, video: str, viewers: int, timeout_s: float = 120) -> tuple[Any, ...]:
        deadline, row = time.monotonic() + timeout_s, ()
        while time.monotonic() < deadline:
            with self.lock:
                rows = self.client.query(
                    f"SELECT unique_viewers, rewatch_rate, completion_rate FROM "
                    f"`{self.settings.clickhouse_database}`.heat_scores_latest FINAL "
                    "WHERE `window` = '1h' AND video_id = {v:String}", parameters={"v": video}).result_rows
            if rows:
                row = rows[0]
                if row[0] == viewers:
                    return row
            time.sleep(0.5)
        return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--rate", type=float, default=5000.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--videos", type=int, default=500)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--steady-workers", type=int, default=1, help="heat workers in the steady-rate phase")
    parser.add_argument("--pairs", type=int, nargs="*", default=[],
                        help="distinct (video, viewer) pairs in all after each step: peak RSS after each")
    parser.add_argument("--faust-variants", action="store_true",
                        help="also the do-nothing agent without uvloop and without Cython")
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
    bench = Bench(settings, client)
    try:
        # Baseline first, on its own: produce, then consume+decode+insert into a scratch database.
        warmup = [make_event(rng, args.videos, datetime.now(UTC)) for _ in range(args.events)]
        bench.produce(warmup)
        scratch = f"bench_raw_{uuid.uuid4().hex[:8]}"
        migrate(client, scratch)
        raw_eps = raw_loop(settings.kafka_bootstrap, client, scratch, args.events)
        # The workers and the sink take the warm-up backlog, then each shape is a new backlog.
        bench.catch_up([])
        viral_video = f"viral-{uuid.uuid4().hex[:8]}"
        shapes = {"uniform": [make_event(rng, args.videos, datetime.now(UTC)) for _ in range(args.events)],
                  "session": session_events(args.events, args.videos, seed=2),
                  "viral": viral_events(viral_video, seed=3)}
        print(f"throughput  raw consume+decode+insert loop (uniform): {raw_eps:>9,.0f} events/s")
        for shape, events in shapes.items():
            skip = bench.produced
            project_eps, worker_s, sink_s = bench.catch_up(events)
            noop_eps = noop_rate(settings.kafka_bootstrap, len(events), skip)
            worker_eps = len(events) / worker_s
            print(f"{shape:>8}: {len(events)} events; do-nothing Faust agent {noop_eps:>7,.0f} events/s; "
                  f"heat worker {worker_eps:>7,.0f} events/s = {worker_eps / noop_eps:.0%} of it; "
                  f"worker + sink {project_eps:>7,.0f} events/s = {project_eps / raw_eps:.1%} of raw "
                  f"(worker {worker_s:.1f} s, sink {sink_s:.1f} s)", flush=True)
            if shape == "uniform" and args.faust_variants:
                variants = {(loop, cython): noop_rate(settings.kafka_bootstrap, len(events), skip, loop, cython)
                            for loop in ("uvloop", "asyncio") for cython in (True, False)}
                print("          do-nothing agent: " + "; ".join(
                    f"{loop} {'with' if cython else 'without'} Cython {eps:,.0f} events/s"
                    for (loop, cython), eps in variants.items()), flush=True)
        viewers, rewatch, completion = bench.heat_row(viral_video, VIRAL_VIEWERS) or (None, None, None)
        print(f"   viral: the 1 h row says {viewers} unique viewers (want {VIRAL_VIEWERS}), re-watch {rewatch} "
              f"(want {VIRAL_REWATCHERS / VIRAL_VIEWERS}), completion {completion} "
              f"(want {VIRAL_COMPLETED / (VIRAL_VIEWERS + VIRAL_REWATCHERS)})")

        if args.workers > 1:
            # Running workers (the sink too) take a burst: no start-up, rebalance or recovery on
            # the clock. Off it, the new workers join and recover their partitions' state from the
            # changelog (a new worker's store starts empty), as a running deployment has done.
            bench.catch_up([])
            bench.settle()
            one_eps = bench.burst([make_event(rng, args.videos, datetime.now(UTC)) for _ in range(args.events)])
            bench.use_workers(args.workers)
            bench.catch_up([])
            bench.settle()
            several_eps = bench.burst([make_event(rng, args.videos, datetime.now(UTC)) for _ in range(args.events)])
            print(f"uniform burst to running heat workers: 1 worker {one_eps:,.0f} events/s; {args.workers} "
                  f"workers {several_eps:,.0f} events/s = {several_eps / one_eps:.2f}x")

        # Steady rate, to --steady-workers running workers: events made and encoded beforehand (the
        # sink shares this process), occurred_at = the time each is due, produced on that schedule.
        bench.use_workers(args.steady_workers)
        bench.catch_up([])
        bench.settle()
        lag_before = [lag_buckets(worker_metrics(worker.port)) for worker in bench.workers]
        count = int(args.rate * args.seconds)
        timed = time.perf_counter()
        for _ in range(2000):
            schema, record = make_event(rng, args.videos, datetime.now(UTC))
            encode(schema, record)
        begin = time.time() + 3 + 1.5 * count * (time.perf_counter() - timed) / 2000  # after the encoding below
        planned = [make_event(rng, args.videos, datetime.fromtimestamp(begin + n / args.rate, UTC))
                   for n in range(count)]
        records = list(encoded(planned))
        del planned
        marker = datetime.fromtimestamp(begin, UTC)

        def due(n: int) -> None:
            ahead = begin + n / args.rate - time.time()
            if ahead > 0.002:
                time.sleep(ahead)

        time.sleep(max(0.0, begin - time.time()))
        [broker] = [component for component in stack.infrastructure if component.name == "kafka"]
        pids = {"kafka": broker.process.pid, "bench (sink, producer)": os.getpid(),
                **{f"heat worker {n + 1}": worker.process.pid for n, worker in enumerate(bench.workers)}}
        cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        sent = produce_encoded(settings.kafka_bootstrap, records, schedule=due)
        bench.produced += sent
        elapsed = time.time() - begin
        cpu_share = {name: (cpu_seconds(pid) - cpu_before[name]) / elapsed for name, pid in pids.items()}
        offered = sent / elapsed
        time.sleep(5)
        lag_after = [lag_buckets(worker_metrics(worker.port)) for worker in bench.workers]
        with bench.lock:
            [(p50, p99, n)] = client.query(
                f"SELECT quantile(0.5)(d), quantile(0.99)(d), count() FROM (SELECT "
                f"dateDiff('millisecond', occurred_at, ingested_at) / 1000 AS d FROM `{settings.clickhouse_database}`"
                f".watch_ticks WHERE occurred_at >= {{m:DateTime64(3, 'UTC')}})", parameters={"m": marker}
            ).result_rows
        print(f"lag at {offered:,.0f} uniform events/s offered for {args.seconds:.0f} s:")
        print(f"  Kafka -> ClickHouse (sink, per row):   p50 {p50:6.2f} s   p99 {p99:6.2f} s   (n={n})")
        before, after = summed_buckets(lag_before), summed_buckets(lag_after)
        print(f"  Kafka -> heat state ({len(bench.workers)} worker(s), per event): p50 "
              f"{bucket_quantile(before, after, 0.5):6.2f} s   p99 {bucket_quantile(before, after, 0.99):6.2f} s"
              f"   (n={after[-1][1] - before[-1][1]:.0f})")
        print("  CPU while producing, share of one core: " + ", ".join(
            f"{name} {share:.0%}" for name, share in cpu_share.items()))
        worker = bench.workers[0]
        assert worker.process is not None and worker.process.pid is not None
        print(f"heat worker peak RSS: {peak_rss_mib(worker.process.pid):.0f} MiB after {bench.produced:,} events")
        made = 0
        if args.pairs:
            bench.use_workers(1)  # one worker holds all the pairs
        for total in args.pairs:
            began = time.perf_counter()
            _, worker_s, _ = bench.catch_up(pair_views(made, total - made, seed=total))
            made = total
            worker = bench.workers[0]
            assert worker.process is not None and worker.process.pid is not None
            print(f"heat worker peak RSS: {peak_rss_mib(worker.process.pid):.0f} MiB with {total:,} distinct "
                  f"(video, viewer) pairs in the last 24 h (this step {time.perf_counter() - began:,.0f} s, "
                  f"the worker's part {worker_s:,.0f} s)", flush=True)
    finally:
        bench.stop_all()
        client.close()
        stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
