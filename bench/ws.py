"""WebSocket gateway benchmark: the gateway against a bare websockets broadcast loop, same run.

    .venv/bin/python -m bench.ws [--connections 1000] [--big 10000] [--seconds 10]
                                 [--phases latency,saturation,big] [--saturating-rate 1000]
                                 [--saturating-connections 2000] [--client go|python]
                                 [--client-impl raw|gorilla]

Every phase runs the server in its own process(es) and the load client in another, on a fresh
local Kafka; frames are about 300 bytes. The load client is bench/ws_load_go (Go: one process on
every core, a goroutine per connection; measured at 0.6 to 1 times the Python client's CPU per
frame when frames come one per read, where the kernel's read dominates, and a tenth when the
gateway batches them; built with `go build` into .venv/bin/lustrax-ws-load when missing or older
than its source, so bench.ws needs Go), or with --client python bench/ws_load.py's (two processes
sharing the connections). Both speak the same protocol to this script; the bare loop and the
gateway are measured with the same client.
The gateway's messages are VideoPublished events produced to Kafka at the offered rate; its
latency is Kafka publish (the record timestamp, which seq encodes) to client receive, next to a
plain consumer's publish-to-receive on the same topic (the Kafka part of that path); the bare
loop's is behind its own schedule. Each phase measures from when every client is connected.
First the fresh broker is warmed up (produced to at the highest rate used until a plain
consumer's p99 is under 500 ms), so that the first gateway phase does not pay for its first
seconds (they lagged by 4-10 s on a loaded machine).
1. latency: --connections clients at 30 msg/s, which both servers deliver in full: latency, and
   deliveries per CPU second of the server (its capacity on one core).
2. saturation: --saturating-connections clients at --saturating-rate msg/s, more than one
   server process delivers: deliveries/s received, for the bare loop, the gateway and the gateway
   with two processes (SO_REUSEPORT), with the CPU of each server process.
3. big: --big clients at 10 msg/s, the bare loop and the gateway: deliveries/s, latency, the most
   connections held and the memory per connection (RSS growth of the server / connections).
"""

from __future__ import annotations

import argparse
import json
import shutil
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

from confluent_kafka import OFFSET_END, Consumer, Producer, TopicPartition

from bench.proc import cpu_seconds, rss_kib
from common.process import free_port
from common.settings import Settings, load_settings
from common.tokens import issue_age_token
from lustrax.services import settings_env
from lustrax.stack import LocalStack
from schemas.codec import encode
from schemas.envelope import new_record
from schemas.topics import TOPIC_BY_SCHEMA

# Offered load of the latency phase: what both servers deliver in full on this machine, so that
# they are compared by latency and by their CPU per delivery.
THROUGHPUT_RATE = 30.0
# Offered load of the saturation phase: more than one server process delivers, so that the
# deliveries/s received are its throughput.
SATURATING_RATE = 1000.0
SATURATING_CONNECTIONS = 2000
# Load client processes of the Python client (the connections split among them), so that the
# client is not the limit; the Go client is one process on every core.
LOAD_PROCESSES = 2
ROOT = Path(__file__).resolve().parents[1]
GO_CLIENT_SOURCE = ROOT / "bench" / "ws_load_go"
GO_CLIENT = ROOT / ".venv" / "bin" / "lustrax-ws-load"  # git-ignored with .venv/


def go_load_client() -> Path:
    """The Go load client, built when it is missing or older than its source."""
    sources = [*GO_CLIENT_SOURCE.glob("*.go"), GO_CLIENT_SOURCE / "go.mod", GO_CLIENT_SOURCE / "go.sum"]
    if GO_CLIENT.exists() and GO_CLIENT.stat().st_mtime >= max(p.stat().st_mtime for p in sources):
        return GO_CLIENT
    go = shutil.which("go") or ("/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None)
    if go is None:
        raise SystemExit("bench.ws needs Go (1.24 or newer) to build its load client bench/ws_load_go: install it "
                         "from https://go.dev/dl/ into /usr/local/go (or put `go` on PATH), or run with "
                         "--client python (the slower Python client, which limits the saturation phase)")
    print(f"building {GO_CLIENT} with {go} ...", file=sys.stderr)
    subprocess.run([go, "build", "-o", str(GO_CLIENT), "."], cwd=GO_CLIENT_SOURCE, check=True)
    return GO_CLIENT


def _client_argv(client: str, impl: str) -> list[str]:
    return [str(go_load_client()), "--impl", impl] if client == "go" else [sys.executable, "-m", "bench.ws_load", "client"]


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
    return sum(_cpu_each(pids))


def _cpu_each(pids: list[int]) -> list[float]:
    """CPU seconds (user + system) of each process."""
    return [cpu_seconds(pid) for pid in pids]


def age_token(settings: Settings) -> str:
    """A self-declaration's age token: the gateway's feed is behind the age gate."""
    return issue_age_token(settings.age_token_key, "self_declaration", settings.age_gate_default_jurisdiction,
                           settings.age_token_ttl_s)[0]


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
        url = f"ws://127.0.0.1:{port}/v1/ws?age_token={age_token(settings)}"  # the feed is behind the age gate
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


def _produce(settings: Settings, rate: float, stop: threading.Event, produced: list[int] | None = None) -> None:
    """VideoPublished events at `rate` per second until `stop`; `produced[0]` counts them."""
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
        if produced is not None:
            produced[0] = n
    producer.flush(10)


def _kafka_latency(settings: Settings, window: threading.Event, stop: threading.Event, out: list[float]) -> None:
    """The Kafka part of the gateway's path, as a baseline: publish (record timestamp) to a plain
    consumer's receive, with the gateway consumer's fetch wait, while `window` is set."""
    topic = TOPIC_BY_SCHEMA["VideoPublished"].name
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": f"bench-ws-{uuid.uuid4().hex}",
                         "enable.auto.commit": False, "fetch.wait.max.ms": 10})
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_END) for p in partitions])
    while not stop.is_set():
        for msg in consumer.consume(1000, 0.05):
            if window.is_set() and not msg.error():
                out.append(time.time() * 1000 - msg.timestamp()[1])
    consumer.close()


def warm_kafka(settings: Settings, rate: float, least_s: float = 10, most_s: float = 90,
               good_p99_ms: float = 500) -> dict[str, Any]:
    """Produce at `rate` with a plain consumer reading until its publish-to-receive p99 over the
    last 2 s is under `good_p99_ms` (at least `least_s`, at most `most_s`): a fresh broker (JIT,
    first segments) lags by seconds at first, which the first gateway phase measured would pay."""
    stop, window, lat = threading.Event(), threading.Event(), list[float]()
    threads = [threading.Thread(target=_kafka_latency, args=(settings, window, stop, lat), daemon=True),
               threading.Thread(target=_produce, args=(settings, rate, stop), daemon=True)]
    for thread in threads:
        thread.start()
    started, p99 = time.monotonic(), None
    window.set()
    try:
        while time.monotonic() - started < most_s:
            lat.clear()
            time.sleep(2)
            p99 = _percentiles(lat)["p99"]
            if time.monotonic() - started >= least_s and p99 is not None and p99 < good_p99_ms:
                break
    finally:
        stop.set()
        for thread in threads:
            thread.join(15)
    result = {"kafka_warmup_s": round(time.monotonic() - started, 1), "kafka_warmup_last_p99_ms": p99}
    print(json.dumps(result), flush=True)
    return result


def _percentiles(samples: list[float]) -> dict[str, float | None]:
    lat = sorted(samples)

    def pct(q: float) -> float | None:
        return round(lat[min(len(lat) - 1, int(q * len(lat)))], 1) if lat else None

    return {"p50": pct(0.5), "p99": pct(0.99), "max": pct(1.0), "samples": len(lat)}


def _merge(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The load clients' results as one: sums, and percentiles over all their samples."""
    lat = [x for r in results for x in r.pop("latency_samples_ms")]
    failures: dict[str, int] = {}
    for r in results:
        for reason, count in r["failures"].items():
            failures[reason] = failures.get(reason, 0) + count
    return {"connected": sum(r["connected"] for r in results), "held": sum(r["held"] for r in results),
            "failures": failures, "connect_s": max(r["connect_s"] for r in results),
            "deliveries_per_s": sum(r["deliveries_per_s"] for r in results),
            "frames": sum(r["frames"] for r in results),
            "client_cpu_pct": [r["client_cpu_pct"] for r in results],
            "latency_ms": _percentiles(lat)}


def phase(settings: Settings, kind: str, connections: int, rate: float, seconds: float, processes: int = 1,
          load_processes: int | None = None, client: str = "python", impl: str = "raw") -> dict[str, Any]:
    """One server (the bare loop or the gateway with `processes` processes) under `connections`
    clients of the `client` load client ("go": bench/ws_load_go with --impl `impl`; "python":
    bench/ws_load.py) offered `rate` msg/s."""
    if load_processes is None:
        load_processes = 1 if client == "go" else LOAD_PROCESSES
    argv = _client_argv(client, impl)
    with _server(settings, kind, processes, rate, connections) as (url, pids):
        idle_kib = sum(rss_kib(p) for p in pids)
        peak = [idle_kib]
        stop = threading.Event()
        threads = [threading.Thread(target=lambda: [peak.append(sum(rss_kib(p) for p in pids))
                                                    for _ in iter(lambda: stop.wait(0.5), True)], daemon=True)]
        produced = [0]
        producer = threading.Thread(target=_produce, args=(settings, rate, stop, produced), daemon=True)
        window, kafka_lat = threading.Event(), list[float]()
        if kind == "gateway":
            threads.append(threading.Thread(target=_kafka_latency, args=(settings, window, stop, kafka_lat),
                                            daemon=True))
        for thread in threads:
            thread.start()
        shares = [connections // load_processes + (i < connections % load_processes) for i in range(load_processes)]
        results = [settings.logs_dir / f"bench-ws-client-{i}.json" for i in range(load_processes)]
        clients = [subprocess.Popen(
            [*argv, "--url", url, "--connections", str(share),
             "--seconds", str(seconds), "--subscribe", "feed" if kind == "gateway" else "", "--wait-go",
             "--result", str(path)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for share, path in zip(shares, results)]
        for load in clients:  # every client connected: then the traffic and the window start together
            assert load.stdout is not None
            for line in load.stdout:
                if line.startswith("connected"):
                    break
        if kind == "gateway":
            producer.start()  # the bare server waits for all its clients too
            threads.append(producer)
        for load in clients:
            assert load.stdin is not None
            load.stdin.write("go\n")
            load.stdin.flush()
        cpu0, cpu_each, t0, elapsed, sent = [0.0] * len(pids), [0.0] * len(pids), 0.0, 1.0, 0
        for i, load in enumerate(clients):
            assert load.stdout is not None
            for line in load.stdout:
                if line.startswith("measure-start") and i == 0:
                    cpu0, t0, sent = _cpu_each(pids), time.monotonic(), produced[0]
                    window.set()
                elif line.startswith("measure-end") and i == 0:
                    cpu_each, elapsed = [b - a for a, b in zip(cpu0, _cpu_each(pids))], time.monotonic() - t0
                    sent = produced[0] - sent
                    window.clear()
            load.wait(60)
        stop.set()
        for thread in threads:
            thread.join(15)
    for load in clients:
        if load.returncode != 0:
            raise RuntimeError(f"load client failed: {load.stderr.read()[-2000:] if load.stderr else ''}")
    cpu = sum(cpu_each)
    result = _merge([json.loads(path.read_text()) for path in results])
    delivered = result["frames"]
    result.update(kind=kind, processes=processes, offered_rate=rate, clients=connections, load_client=client,
                  load_processes=load_processes, server_cpu_pct=round(100 * cpu / elapsed),
                  # the supervisor first when there are several: it only waits
                  server_cpu_pct_each=[round(100 * c / elapsed) for c in cpu_each],
                  # capacity of one core: deliveries per CPU second of the server, and of the load client
                  deliveries_per_cpu_s=round(delivered / cpu) if cpu else None,
                  client_deliveries_per_cpu_s=round(100 * result["deliveries_per_s"] / max(1, sum(result["client_cpu_pct"]))),
                  server_rss_mib=round(max(peak) / 1024, 1),
                  kib_per_connection=round((max(peak) - idle_kib) / max(1, result["held"]), 1))
    if kind == "gateway":
        result["kafka_latency_ms"] = _percentiles(kafka_lat)
        # what the producer kept up with in the window: the offered deliveries/s are this times the clients
        result["produced_per_s"] = round(sent / elapsed)
    print(json.dumps(result), flush=True)
    return result


def _pct(part: float | None, whole: float | None) -> float | None:
    return round(100 * part / whole, 1) if part is not None and whole else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.ws")
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--big", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--saturating-rate", type=float, default=SATURATING_RATE)
    parser.add_argument("--saturating-connections", type=int, default=SATURATING_CONNECTIONS)
    parser.add_argument("--client", choices=("go", "python"), default="go",
                        help="the load client: bench/ws_load_go (needs Go) or bench/ws_load.py")
    parser.add_argument("--client-impl", choices=("raw", "gorilla"), default="raw",
                        help="the Go client's reader: frame headers parsed over a bufio.Reader, or gorilla/websocket")
    parser.add_argument("--phases", default="latency,saturation,big",
                        help="a comma-separated subset of latency, saturation, big")
    args = parser.parse_args(argv)
    phases = set(args.phases.split(","))
    if not phases or phases - {"latency", "saturation", "big"}:
        parser.error("--phases: a comma-separated subset of latency, saturation, big")
    home = Path(tempfile.mkdtemp(prefix="lustrax-bench-ws-"))
    settings = load_settings(home=home, kafka_bootstrap=f"127.0.0.1:{free_port()}",
                             kafka_controller_port=free_port(), s3_endpoint=f"http://127.0.0.1:{free_port()}",
                             edge_port=free_port(), socketio_port=free_port())
    n, s, big = args.connections, args.seconds, args.big
    if args.client == "go":
        go_load_client()  # before the stack: a missing Go stops the run at once
    stack = LocalStack(settings, with_services=False)
    print(f"starting a local stack under {home} ...", file=sys.stderr)
    stack.start()

    def run(kind: str, connections: int, rate: float, processes: int = 1) -> dict[str, Any]:
        return phase(settings, kind, connections, rate, s, processes, client=args.client, impl=args.client_impl)

    summary: dict[str, Any] = {}
    try:
        summary.update(warm_kafka(settings, args.saturating_rate if "saturation" in phases else THROUGHPUT_RATE))
        if "latency" in phases:
            bare = run("bare", n, THROUGHPUT_RATE)
            one = run("gateway", n, THROUGHPUT_RATE)
            summary.update({
                f"bare_p99_ms_at_{n}": bare["latency_ms"]["p99"], f"gateway_p99_ms_at_{n}": one["latency_ms"]["p99"],
                f"kafka_only_p99_ms_at_{n}": one["kafka_latency_ms"]["p99"],
                "bare_deliveries_per_cpu_s": bare["deliveries_per_cpu_s"],
                "gateway_deliveries_per_cpu_s": one["deliveries_per_cpu_s"],
                "gateway_vs_bare_per_cpu_pct": _pct(one["deliveries_per_cpu_s"], bare["deliveries_per_cpu_s"])})
        if "saturation" in phases:
            rate, m = args.saturating_rate, args.saturating_connections
            bare = run("bare", m, rate)
            one = run("gateway", m, rate)
            two = run("gateway", m, rate, processes=2)
            summary.update({
                "saturated_clients": m, "saturated_offered_per_s": round(m * rate),
                # deliveries/s offered as produced in the window (the producer may fall short of the rate)
                "saturated_produced_offered_per_s": [m * one["produced_per_s"], m * two["produced_per_s"]],
                "saturated_bare_deliveries_per_s": bare["deliveries_per_s"],
                "saturated_gateway_deliveries_per_s": one["deliveries_per_s"],
                "saturated_gateway_vs_bare_pct": _pct(one["deliveries_per_s"], bare["deliveries_per_s"]),
                "saturated_two_processes_deliveries_per_s": two["deliveries_per_s"],
                "saturated_two_vs_one_pct": _pct(two["deliveries_per_s"], one["deliveries_per_s"]),
                "saturated_held": [bare["held"], one["held"], two["held"]],
                # % of a core per server process (two: the busiest two, not their supervisor)
                "saturated_server_cpu_pct_each": {"bare": bare["server_cpu_pct_each"],
                                                  "one": one["server_cpu_pct_each"],
                                                  "two": sorted(two["server_cpu_pct_each"][1:])[-2:]},
                "saturated_client_cpu_pct": [bare["client_cpu_pct"], one["client_cpu_pct"], two["client_cpu_pct"]],
                # per CPU second: the gateway's processes together vs the load client (2 cores hold both)
                "saturated_deliveries_per_cpu_s": {"one": one["deliveries_per_cpu_s"], "two": two["deliveries_per_cpu_s"],
                                                   "client_at_one": one["client_deliveries_per_cpu_s"],
                                                   "client_at_two": two["client_deliveries_per_cpu_s"]},
                "saturated_p99_ms": [bare["latency_ms"]["p99"], one["latency_ms"]["p99"], two["latency_ms"]["p99"]]})
        if "big" in phases:
            big_bare = run("bare", big, 10)
            big_gw = run("gateway", big, 10)
            summary.update({
                f"bare_p99_ms_at_{big}": big_bare["latency_ms"]["p99"],
                f"gateway_p99_ms_at_{big}": big_gw["latency_ms"]["p99"],
                f"kafka_only_p99_ms_at_{big}": big_gw["kafka_latency_ms"]["p99"],
                f"bare_deliveries_per_s_at_{big}": big_bare["deliveries_per_s"],
                f"gateway_deliveries_per_s_at_{big}": big_gw["deliveries_per_s"],
                f"gateway_vs_bare_pct_at_{big}": _pct(big_gw["deliveries_per_s"], big_bare["deliveries_per_s"]),
                "most_connections_held": big_gw["held"], "kib_per_connection": big_gw["kib_per_connection"],
                "bare_kib_per_connection": big_bare["kib_per_connection"],
                "big_server_cpu_pct": [big_bare["server_cpu_pct"], big_gw["server_cpu_pct"]]})
    finally:
        stack.stop()
    summary["load_client"] = args.client if args.client == "python" else f"go ({args.client_impl})"
    print(json.dumps({"summary": summary}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
