"""WebSocket gateway benchmark: the gateway against a bare websockets broadcast loop, same run.

    .venv/bin/python -m bench.ws [--connections 1000] [--big 10000] [--seconds 10] [--skip-big]

Every phase runs the server in its own process(es) and the load client (bench/ws_load.py) in
another, on a fresh local Kafka; frames are about 300 bytes.
1. Throughput (--connections clients, 30 msg/s offered, from when all are connected): deliveries/s
   received and deliveries per CPU second of the server (its capacity on one core: the load
   client shares the machine's two cores, so the servers are compared by CPU per delivery), for
   the bare loop (baseline), the gateway with one process and with two (SO_REUSEPORT). The
   gateway's messages are VideoPublished events produced to Kafka at that rate; the same phase
   gives the latency, Kafka publish (the record timestamp, which seq encodes) to client receive.
2. At --big clients and 10 msg/s, the bare loop and the gateway: latency (the bare loop's is
   behind its own schedule), the most connections held and the memory per connection (RSS growth
   of the server / connections).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from common.process import free_port
from common.settings import Settings, load_settings
from lustrax.services import settings_env
from lustrax.stack import LocalStack
from schemas.codec import encode
from schemas.envelope import new_record
from schemas.topics import TOPIC_BY_SCHEMA

# Offered load of the throughput phases: what the load client (one process) still absorbs on
# this machine, so that both servers deliver all of it and are compared by their CPU per delivery.
THROUGHPUT_RATE = 30.0


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except FileNotFoundError:
        pass
    return 0


def _family(pid: int) -> list[int]:
    """pid and its children (the gateway's SO_REUSEPORT processes)."""
    pids = [pid]
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        if int(fields[1]) == pid:
            pids.append(int(stat.parent.name))
    return pids


def _cpu_s(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except FileNotFoundError:
            pass
    return total / 100


@contextmanager
def _server(settings: Settings, kind: str, processes: int, rate: float, clients: int
            ) -> Iterator[tuple[str, list[int]]]:
    port = free_port()
    logs = settings.logs_dir
    logs.mkdir(parents=True, exist_ok=True)
    if kind == "bare":
        argv = [sys.executable, "-m", "bench.ws_load", "bare", "--port", str(port), "--rate", str(rate),
                "--expect", str(clients)]
        env = None
        url = f"ws://127.0.0.1:{port}/"
    else:
        argv = [sys.executable, "-m", "lustrax.cli", "serve", "gateway"]
        env = {**settings_env(settings), "LUSTRAX_WS_PORT": str(port), "LUSTRAX_WS_PROCESSES": str(processes),
               "LUSTRAX_WS_MAX_CONNECTIONS_PER_IP": "50000", "LUSTRAX_WS_HISTORY_AGE_S": "60", "PATH": "/usr/bin:/bin"}
        url = f"ws://127.0.0.1:{port}/v1/ws"
    with (logs / f"bench-{kind}.log").open("ab") as log:
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the {kind} server exited; see {logs}")
            try:
                if kind == "bare":
                    import socket
                    socket.create_connection(("127.0.0.1", port), 1).close()
                    break
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as response:
                    if response.status == 200 and (processes == 1 or len(_family(proc.pid)) > processes):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the {kind} server did not become ready")
            time.sleep(0.2)
        time.sleep(0.5 if processes == 1 else 3)  # every SO_REUSEPORT process listening
        yield url, _family(proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _produce(settings: Settings, rate: float, stop: threading.Event) -> None:
    topic = TOPIC_BY_SCHEMA["VideoPublished"].name
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "linger.ms": 1})
    interval, due, n = 1 / rate, time.time(), 0
    while not stop.is_set():
        due += interval
        delay = due - time.time()
        if delay > 0:
            time.sleep(delay)
        video_id = uuid.uuid4().hex[:24]
        record = new_record("VideoPublished", "bench", {
            "video_id": video_id, "title": f"benchmark video {n:08d}", "uploader_id": "bench",
            "video_url": f"http://127.0.0.1:7070/lustrax-public/videos/{video_id}/master.m3u8",
            "thumbnail": f"http://127.0.0.1:7070/lustrax-public/videos/{video_id}/thumb.jpg",
            "premium": False, "published_at": datetime.now(UTC)})
        producer.produce(topic, encode("VideoPublished", record), video_id.encode())
        producer.poll(0)
        n += 1
    producer.flush(10)


def phase(settings: Settings, kind: str, connections: int, rate: float, seconds: float, processes: int = 1
          ) -> dict[str, Any]:
    with _server(settings, kind, processes, rate, connections) as (url, pids):
        idle_kib = sum(_rss_kib(p) for p in pids)
        peak = [idle_kib]
        stop = threading.Event()
        threads = [threading.Thread(target=lambda: [peak.append(sum(_rss_kib(p) for p in pids))
                                                    for _ in iter(lambda: stop.wait(0.5), True)], daemon=True)]
        producer = threading.Thread(target=_produce, args=(settings, rate, stop), daemon=True)
        for thread in threads:
            thread.start()
        client = subprocess.Popen(
            [sys.executable, "-m", "bench.ws_load", "client", "--url", url, "--connections", str(connections),
             "--seconds", str(seconds), "--subscribe", "feed" if kind == "gateway" else ""],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert client.stdout is not None
        lines, cpu0, t0, cpu = [], 0.0, 0.0, 0.0
        for line in client.stdout:
            if line.startswith("connected") and kind == "gateway":
                producer.start()  # traffic once every client is connected (the bare server waits too)
                threads.append(producer)
            elif line.startswith("measure-start"):
                cpu0, t0 = _cpu_s(pids), time.monotonic()
            elif line.startswith("measure-end"):
                cpu = _cpu_s(pids) - cpu0
                window = time.monotonic() - t0
            lines.append(line)
        client.wait(60)
        stop.set()
        for thread in threads:
            thread.join(15)
    if client.returncode != 0:
        raise RuntimeError(f"load client failed: {client.stderr.read()[-2000:] if client.stderr else ''}")
    result: dict[str, Any] = json.loads(lines[-1])
    delivered = result["frames"]
    result.update(kind=kind, processes=processes, offered_rate=rate, clients=connections,
                  server_cpu_pct=round(100 * cpu / window),
                  # capacity of one core: deliveries per CPU second of the server
                  deliveries_per_cpu_s=round(delivered / cpu) if cpu else None,
                  server_rss_mib=round(max(peak) / 1024, 1),
                  kib_per_connection=round((max(peak) - idle_kib) / max(1, result["held"]), 1))
    print(json.dumps(result), flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.ws")
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--big", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--skip-big", action="store_true")
    parser.add_argument("--big-only", action="store_true")
    args = parser.parse_args(argv)
    home = Path(tempfile.mkdtemp(prefix="lustrax-bench-ws-"))
    settings = load_settings(home=home, kafka_bootstrap=f"127.0.0.1:{free_port()}",
                             kafka_controller_port=free_port(), s3_endpoint=f"http://127.0.0.1:{free_port()}")
    stack = LocalStack(settings, with_services=False)
    print(f"starting a local stack under {home} ...", file=sys.stderr)
    stack.start()
    try:
        n, s = args.connections, args.seconds
        summary: dict[str, Any] = {}
        if args.big_only:
            return _big(settings, args.big, s, summary)
        bare = phase(settings, "bare", n, THROUGHPUT_RATE, s)
        one = phase(settings, "gateway", n, THROUGHPUT_RATE, s)
        two = phase(settings, "gateway", n, THROUGHPUT_RATE, s, processes=2)
        summary.update({
            "bare_deliveries_per_s": bare["deliveries_per_s"], "gateway_deliveries_per_s": one["deliveries_per_s"],
            "gateway_vs_bare_pct": round(100 * one["deliveries_per_s"] / max(1, bare["deliveries_per_s"]), 1),
            "bare_deliveries_per_cpu_s": bare["deliveries_per_cpu_s"],
            "gateway_deliveries_per_cpu_s": one["deliveries_per_cpu_s"],
            "gateway_vs_bare_per_cpu_pct": round(100 * (one["deliveries_per_cpu_s"] or 0)
                                                 / max(1, bare["deliveries_per_cpu_s"] or 1), 1),
            "two_processes_deliveries_per_s": two["deliveries_per_s"],
            "two_processes_deliveries_per_cpu_s": two["deliveries_per_cpu_s"],
            f"bare_p99_ms_at_{n}": bare["latency_ms"]["p99"], f"gateway_p99_ms_at_{n}": one["latency_ms"]["p99"],
            f"two_processes_p99_ms_at_{n}": two["latency_ms"]["p99"]})
        if args.skip_big:
            print(json.dumps({"summary": summary}, indent=1))
            return 0
        return _big(settings, args.big, s, summary)
    finally:
        stack.stop()


def _big(settings: Settings, clients: int, seconds: float, summary: dict[str, Any]) -> int:
    big_bare = phase(settings, "bare", clients, 10, seconds)
    big = phase(settings, "gateway", clients, 10, seconds)
    summary.update({f"bare_p99_ms_at_{clients}": big_bare["latency_ms"]["p99"],
                    f"gateway_p99_ms_at_{clients}": big["latency_ms"]["p99"],
                    "bare_big_deliveries_per_cpu_s": big_bare["deliveries_per_cpu_s"],
                    "gateway_big_deliveries_per_cpu_s": big["deliveries_per_cpu_s"],
                    "most_connections_held": big["held"], "kib_per_connection": big["kib_per_connection"],
                    "bare_kib_per_connection": big_bare["kib_per_connection"],
                    "big_deliveries_per_s": big["deliveries_per_s"], "big_server_cpu_pct": big["server_cpu_pct"]})
    print(json.dumps({"summary": summary}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
