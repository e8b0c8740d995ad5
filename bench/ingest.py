"""Ingest benchmark: the API against raw confluent-kafka, in the same run, on a real local stack.

    .venv/bin/python -m bench.ingest [--events 60000] [--rate 500] [--seconds 10] [--warmup 15]

After a warm-up (not counted: 10,000 events each way, then --warmup seconds of single-event
traffic at the offered rate, so that the broker's JIT and the API's caches are warm):

1. Throughput: the same Avro events (views, likes, watch ticks) through `POST /v1/events/batch`
   (500 per request, 4 in flight) vs a raw idempotent confluent-kafka producer writing the
   single-object-encoded events directly (no HTTP, no validation); three alternating rounds each,
   medians compared. Prints both and the ratio.
2. Latency (measured first): single-event `POST /v1/events` at a constant offered rate from
   vegeta (an open-loop load generator in Go, built into the cache on first use) vs raw
   produce->ack latency of single messages at the same rate. Prints p50/p99 of both.

The API runs in its own process (`lustrax serve ingest`), as in production; the throughput load
generator runs in this process, the latency one is vegeta. Everything shares the machine's 2 cores with the broker.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from confluent_kafka import Producer
from fastavro import schemaless_writer

from bench import percentile
from infra.tools import require_tool, run_logged
from common.process import ManagedProcess, free_port
from lustrax.services import http_ok, settings_env
from common.settings import Settings, load_settings
from lustrax.stack import LocalStack
from common.tokens import issue_token
from infra.kafka.producer import producer_config
from schemas.codec import MAGIC
from schemas.envelope import new_record
from schemas.registry import fingerprint, schema_for
from schemas.topics import TOPIC_BY_SCHEMA

BATCH = 500
VEGETA_VERSION = "v12.13.0"


def make_events(count: int) -> list[dict[str, Any]]:
    now_ms = int(time.time() * 1000)
    events: list[dict[str, Any]] = []
    for i in range(count):
        base = {"video_id": f"video-{i % 97}", "user_id": f"user-{i % 1013}", "event_id": str(uuid.uuid4()),
                "occurred_at": now_ms - 1000}
        kind = i % 10
        if kind < 4:
            events.append({"type": "view", "session_id": f"s-{i // 10}", **base})
        elif kind < 9:
            events.append({"type": "watch_tick", "session_id": f"s-{i // 10}", "position_ms": (i % 60) * 1000,
                           "duration_ms": 60000, **base})
        else:
            events.append({"type": "like", **base})
    return events


def raw_messages(events: list[dict[str, Any]]) -> list[tuple[str, bytes, Any]]:
    """(topic, key, record) with the Avro records the API would build."""
    out = []
    for event in events:
        schema_name = {"view": "VideoView", "like": "VideoLike", "watch_tick": "WatchTick"}[event["type"]]
        fields = {"video_id": event["video_id"], "user_id": event["user_id"]}
        if event["type"] == "like":
            fields["action"] = "LIKE"
        else:
            fields["session_id"] = event["session_id"]
        if event["type"] == "watch_tick":
            fields.update(position_ms=event["position_ms"], duration_ms=event["duration_ms"])
        record = new_record(schema_name, "bench-raw", fields, event_id=uuid.UUID(event["event_id"]),
                            occurred_at=datetime.fromtimestamp(event["occurred_at"] / 1000, tz=UTC))
        out.append((schema_name, event["video_id"].encode(), record))
    return out


def raw_throughput(settings: Settings, events: list[dict[str, Any]]) -> float:
    """Events/s: fastavro single-object encoding + idempotent acks=all production, until all acked."""
    producer = Producer(producer_config(settings.kafka_bootstrap, 30000))
    headers = {name: MAGIC + fingerprint(schema_for(name)) for name in ("VideoView", "VideoLike", "WatchTick")}
    started = time.perf_counter()
    for schema_name, key, record in raw_messages(events):
        buffer = io.BytesIO()
        buffer.write(headers[schema_name])
        schemaless_writer(buffer, schema_for(schema_name), record)
        while True:
            try:
                producer.produce(TOPIC_BY_SCHEMA[schema_name].name, buffer.getvalue(), key)
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
    assert producer.flush(60) == 0
    return len(events) / (time.perf_counter() - started)


async def api_throughput(base_url: str, token: str, events: list[dict[str, Any]], in_flight: int = 4) -> float:
    bodies = [json.dumps({"events": events[i:i + BATCH]}).encode() for i in range(0, len(events), BATCH)]
    pending = iter(bodies)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    async with aiohttp.ClientSession(base_url, headers=headers) as client:
        async def worker() -> None:
            for body in pending:
                async with client.post("/v1/events/batch", data=body) as response:
                    assert response.status == 202, await response.text()
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(in_flight)))
        return len(events) / (time.perf_counter() - started)


def ensure_vegeta(settings: Settings) -> Path:
    """vegeta (open-loop HTTP load generator, Go) built once into the cache, like versitygw."""
    binary = settings.cache_dir / "bin" / f"vegeta-{VEGETA_VERSION}" / "vegeta"
    if not binary.exists():
        go = require_tool("bench", "go", "install Go to build the vegeta load generator")
        run_logged("bench", [go, "install", f"github.com/tsenart/vegeta/v12@{VEGETA_VERSION}"],
                   settings.logs_dir / "setup-vegeta.log", env={**os.environ, "GOBIN": str(binary.parent)})
    return binary


def api_latency(vegeta: Path, base_url: str, token: str, rate: float, seconds: float, workdir: Path) -> list[float]:
    """Single-event POSTs at a constant rate from vegeta, a separate Go process (a Python client in
    this process adds its own pauses to the tail); every request carries a new event_id."""
    targets = workdir / "targets.jsonl"
    headers = {"Authorization": [f"Bearer {token}"], "Content-Type": ["application/json"]}
    with targets.open("w") as out:
        for event in make_events(int(rate * seconds)):
            body = base64.b64encode(json.dumps(event).encode()).decode()
            out.write(json.dumps({"method": "POST", "url": f"{base_url}/v1/events", "body": body,
                                  "header": headers}) + "\n")
    return attack(vegeta, targets, rate, seconds, "202")


def attack(vegeta: Path, targets: Path, rate: float, seconds: float, expected_status: str) -> list[float]:
    """Latencies (s) of vegeta's requests from a JSON targets file at a constant rate (open loop);
    every answer must have `expected_status`."""
    run = subprocess.run([str(vegeta), "attack", "-format=json", f"-targets={targets}", f"-rate={rate:.0f}/s",
                          f"-duration={seconds}s", "-lazy", "-timeout=10s"], capture_output=True, check=True)
    report = subprocess.run([str(vegeta), "encode", "--to", "csv"], input=run.stdout, capture_output=True,
                            check=True).stdout.decode()
    latencies = []
    for row in report.splitlines():
        fields = row.split(",")  # timestamp, status code, latency ns, ...
        assert fields[1] == expected_status, row
        latencies.append(int(fields[2]) / 1e9)
    return latencies


def raw_latency(settings: Settings, rate: float, seconds: float) -> list[float]:
    """Produce->ack latency of single messages at the same offered rate (same producer settings)."""
    producer = Producer(producer_config(settings.kafka_bootstrap, 30000))
    latencies: list[float] = []
    messages = raw_messages(make_events(int(rate * seconds)))
    topic = TOPIC_BY_SCHEMA["VideoView"].name
    start = time.perf_counter()
    for i, (schema_name, key, record) in enumerate(messages):
        due = start + i / rate
        while time.perf_counter() < due:
            producer.poll(0.0005)
        buffer = io.BytesIO()
        schemaless_writer(buffer, schema_for(schema_name), record)
        producer.produce(topic, buffer.getvalue(), key,
                         on_delivery=lambda err, msg, due=due: latencies.append(time.perf_counter() - due))
        producer.poll(0)
    producer.flush(30)
    return latencies



def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=60000)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=15.0, help="seconds of single-event traffic not counted")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="lustrax-bench-"))
    settings = load_settings(home=home, kafka_bootstrap=f"127.0.0.1:{free_port()}", kafka_controller_port=free_port(),
                             s3_endpoint=f"http://127.0.0.1:{free_port()}", ingest_port=free_port(),
                             edge_port=free_port())
    stack = LocalStack(settings, with_services=False)  # the API is started below, on its own
    print(f"starting a local stack under {home} ...", file=sys.stderr)
    stack.start()
    api = ManagedProcess("ingest", [sys.executable, "-m", "lustrax.cli", "serve", "ingest"],
                         settings.logs_dir / "ingest.log", env=settings_env(settings))
    try:
        api.start()
        base_url = f"http://{settings.ingest_host}:{settings.ingest_port}"
        api.wait_ready(lambda: http_ok(f"{base_url}/readyz"), 60)
        token = issue_token(settings.jwt_signing_secret, "bench", ("service",), 3600)
        events = make_events(args.events)

        # Warm-up: the broker's JIT, the API's connections and caches; nothing here is counted.
        raw_throughput(settings, events[:10000])
        asyncio.run(api_throughput(base_url, token, make_events(10000)))
        raw_latency(settings, args.rate, 3)
        vegeta = ensure_vegeta(settings)
        api_latency(vegeta, base_url, token, args.rate, args.warmup, home)

        raw = raw_latency(settings, args.rate, args.seconds)
        http = api_latency(vegeta, base_url, token, args.rate, args.seconds, home)
        for label, values in (("raw produce->ack     ", raw), ("POST /v1/events -> 202", http)):
            print(f"latency at {args.rate:.0f}/s  {label}: p50 {percentile(values, 0.5) * 1000:6.2f} ms   "
                  f"p99 {percentile(values, 0.99) * 1000:6.2f} ms   (n={len(values)})")

        # Throughput: alternate the two, three rounds each, and compare medians (2 shared cores are noisy).
        raw_rounds, api_rounds = [], []
        for _ in range(3):
            raw_rounds.append(raw_throughput(settings, events))
            api_rounds.append(asyncio.run(api_throughput(base_url, token, make_events(args.events))))
        raw_eps, api_eps = statistics.median(raw_rounds), statistics.median(api_rounds)
        print(f"throughput  raw confluent-kafka: {raw_eps:>9,.0f} events/s   (rounds: "
              + ", ".join(f"{r:,.0f}" for r in raw_rounds) + ")")
        print(f"throughput  ingest API (batch):  {api_eps:>9,.0f} events/s   (rounds: "
              + ", ".join(f"{r:,.0f}" for r in api_rounds) + f")   ratio {api_eps / raw_eps:.1%} of raw")
    finally:
        api.stop()
        stack.stop()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
