"""Socket.IO endpoint benchmark: Socket.IO deliveries/s beside plain WebSocket ones, same run.

    .venv/bin/python -m bench.socketio [--connections 1000] [--seconds 10] [--rate 30]

On a fresh local Kafka, one gateway process each time (`lustrax serve gateway`), VideoPublished
events produced at --rate per second (frames of about 300 bytes):
1. the WebSocket clients (bench/ws.py's phase and lean client, the baseline);
2. the same number of Socket.IO clients over Engine.IO's websocket transport (bench/socketio_load.py),
   every one on the feed.
Both report deliveries/s received, deliveries per CPU second of the gateway (its capacity on one
core: the load client shares the two cores) and the latency, Kafka publish to receive.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.ws import THROUGHPUT_RATE, _cpu_s, _merge, _produce, _server, age_token, phase
from common.process import free_port
from common.settings import Settings, load_settings
from lustrax.stack import LocalStack


def socketio_phase(settings: Settings, connections: int, rate: float, seconds: float) -> dict[str, Any]:
    with _server(settings, "gateway", 1, rate, connections) as (_, pids):
        stop = threading.Event()
        producer = threading.Thread(target=_produce, args=(settings, rate, stop), daemon=True)
        client = subprocess.Popen(
            [sys.executable, "-m", "bench.socketio_load", "--url", f"http://127.0.0.1:{settings.socketio_port}",
             "--connections", str(connections), "--seconds", str(seconds), "--age-token", age_token(settings)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert client.stdout is not None
        lines, cpu0, t0, cpu, window = [], 0.0, 0.0, 0.0, 1.0
        for line in client.stdout:
            if line.startswith("connected"):
                producer.start()
            elif line.startswith("measure-start"):
                cpu0, t0 = _cpu_s(pids), time.monotonic()
            elif line.startswith("measure-end"):
                cpu, window = _cpu_s(pids) - cpu0, time.monotonic() - t0
            lines.append(line)
        client.wait(60)
        stop.set()
        producer.join(15)
    if client.returncode != 0:
        raise RuntimeError(f"load client failed: {client.stderr.read()[-2000:] if client.stderr else ''}")
    result = _merge([json.loads(lines[-1])])  # its percentiles, without printing every sample
    result.update(kind="socketio", offered_rate=rate, clients=connections, server_cpu_pct=round(100 * cpu / window),
                  deliveries_per_cpu_s=round(result["frames"] / cpu) if cpu else None)
    print(json.dumps(result), flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.socketio")
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rate", type=float, default=THROUGHPUT_RATE)
    args = parser.parse_args(argv)
    home = Path(tempfile.mkdtemp(prefix="lustrax-bench-socketio-"))
    settings = load_settings(home=home, kafka_bootstrap=f"127.0.0.1:{free_port()}",
                             kafka_controller_port=free_port(), s3_endpoint=f"http://127.0.0.1:{free_port()}",
                             socketio_port=free_port())
    stack = LocalStack(settings, with_services=False)
    print(f"starting a local stack under {home} ...", file=sys.stderr)
    stack.start()
    try:
        n = args.connections
        ws = phase(settings, "gateway", n, args.rate, args.seconds)
        sio = socketio_phase(settings, n, args.rate, args.seconds)
        print(json.dumps({"summary": {
            "websocket_deliveries_per_s": ws["deliveries_per_s"], "socketio_deliveries_per_s": sio["deliveries_per_s"],
            "websocket_deliveries_per_cpu_s": ws["deliveries_per_cpu_s"],
            "socketio_deliveries_per_cpu_s": sio["deliveries_per_cpu_s"],
            "socketio_vs_websocket_per_cpu_pct": round(100 * (sio["deliveries_per_cpu_s"] or 0)
                                                       / max(1, ws["deliveries_per_cpu_s"] or 1), 1),
            f"websocket_p99_ms_at_{n}": ws["latency_ms"]["p99"], f"socketio_p99_ms_at_{n}": sio["latency_ms"]["p99"],
            "socketio_connected": sio["connected"], "socketio_held": sio["held"]}}, indent=1))
        return 0
    finally:
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
