"""The load side of bench/ws.py (its own processes): the bare baseline server, and the Python load
client of `bench.ws --client python` and bench/socketio.py (bench.ws's default client is the Go
one of bench/ws_load_go, which speaks the same protocol to bench/ws.py at less CPU per frame).

    python -m bench.ws_load client --url ws://127.0.0.1:8765/v1/ws --connections N --seconds T
    python -m bench.ws_load bare --port P --rate R --size 300

The client speaks just enough RFC 6455 (handshake, unmasked server frames, pong) to count frames
on N connections at a low cost per frame, so that the server, not the client, is measured; it
samples latency on every 20th connection from the frame itself (the gateway: seq // 1024 is the
Kafka timestamp in ms; the bare server: `t`, the scheduled send time) and prints one JSON line
(or writes it to --result) with its own CPU share and the raw samples (bench/ws.py runs several clients and merges them).
With --wait-go it waits for a line on stdin once connected, so that several clients measure the
same window. The bare server is the baseline: websockets' broadcast() of one pre-serialized frame
to every connection at a fixed rate, compression off, nothing else.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import resource
import struct
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

SEQ_PER_MS = 1024
SAMPLE_EVERY = 20


def raise_nofile() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Stats:
    def __init__(self) -> None:
        self.frames = 0
        self.latencies: list[float] = []
        self.measuring = False
        self.closed = 0


class LeanClient(asyncio.Protocol):
    def __init__(self, stats: Stats, sample: bool, handshake: bytes, subscribe: bytes | None) -> None:
        self.stats, self.sample = stats, sample
        self.handshake, self.subscribe = handshake, subscribe
        self.buffer = bytearray()
        self.upgraded = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(self.handshake)  # type: ignore[union-attr]

    def connection_lost(self, exc: Exception | None) -> None:
        self.stats.closed += 1
        if not self.upgraded.done():
            self.upgraded.set_exception(ConnectionError("closed during the handshake"))

    def _send(self, opcode: int, payload: bytes) -> None:
        # Client frames must be masked; a zero key leaves the payload as it is.
        assert self.transport is not None and len(payload) < 126
        self.transport.write(bytes([0x80 | opcode, 0x80 | len(payload)]) + b"\0\0\0\0" + payload)

    def data_received(self, data: bytes) -> None:
        buf = self.buffer
        buf += data
        if not self.upgraded.done():
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if not buf.startswith(b"HTTP/1.1 101"):
                self.upgraded.set_exception(ConnectionError(bytes(buf[:60]).decode(errors="replace")))
                return
            del buf[:end + 4]
            self.upgraded.set_result(None)
            if self.subscribe:
                self._send(1, self.subscribe)
        pos, size = 0, len(buf)
        stats = self.stats
        while size - pos >= 2:
            opcode, length = buf[pos] & 0x0F, buf[pos + 1] & 0x7F
            head = 2
            if length == 126:
                if size - pos < 4:
                    break
                length, head = struct.unpack_from("!H", buf, pos + 2)[0], 4
            elif length == 127:
                if size - pos < 10:
                    break
                length, head = struct.unpack_from("!Q", buf, pos + 2)[0], 10
            if size - pos < head + length:
                break
            if opcode == 1:
                if stats.measuring:
                    stats.frames += 1
                    if self.sample:
                        body = json.loads(bytes(buf[pos + head:pos + head + length]))
                        sent_ms = body["seq"] / SEQ_PER_MS if body.get("seq") else body.get("t")
                        if sent_ms and body.get("type") != "subscribed":
                            stats.latencies.append(time.time() * 1000 - sent_ms)
            elif opcode == 9:
                self._send(10, bytes(buf[pos + head:pos + head + length]))
            pos += head + length
        del buf[:pos]


async def run_client(url: str, connections: int, seconds: float, warmup: float, subscribe: str | None,
                     wait_go: bool = False) -> dict:
    raise_nofile()
    parts = urlsplit(url)
    loop = asyncio.get_running_loop()
    stats = Stats()
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    sub = json.dumps({"op": "subscribe", "channels": [subscribe]}).encode() if subscribe else None
    opened: list[LeanClient] = []
    failures: dict[str, int] = {}
    gate = asyncio.Semaphore(100)
    started = time.monotonic()

    async def open_one(i: int) -> None:
        key = base64.b64encode(os.urandom(16)).decode()
        handshake = (f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
                     f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()
        async with gate:
            try:
                _, proto = await loop.create_connection(
                    lambda: LeanClient(stats, i % SAMPLE_EVERY == 0, handshake, sub), parts.hostname, parts.port)
                await asyncio.wait_for(proto.upgraded, 30)
                opened.append(proto)
            except (OSError, ConnectionError, TimeoutError) as exc:
                reason = f"{type(exc).__name__}: {str(exc)[:60]}"
                failures[reason] = failures.get(reason, 0) + 1

    await asyncio.gather(*(open_one(i) for i in range(connections)))
    connect_s = time.monotonic() - started
    print("connected", flush=True)  # bench/ws.py starts the traffic once every client is here
    if wait_go:
        await loop.run_in_executor(None, sys.stdin.readline)
    await asyncio.sleep(warmup)
    print("measure-start", flush=True)  # bench/ws.py samples the server's CPU time here
    stats.measuring = True
    t0, cpu0 = time.monotonic(), time.process_time()
    await asyncio.sleep(seconds)
    stats.measuring = False
    print("measure-end", flush=True)
    elapsed, cpu = time.monotonic() - t0, time.process_time() - cpu0
    held = len(opened) - stats.closed
    lat = sorted(stats.latencies)

    def pct(p: float) -> float | None:
        return round(lat[min(len(lat) - 1, int(p * len(lat)))], 1) if lat else None

    for proto in opened:
        assert proto.transport is not None
        proto.transport.close()
    return {"connected": len(opened), "held": held, "failures": failures, "connect_s": round(connect_s, 2),
            "deliveries_per_s": round(stats.frames / elapsed), "frames": stats.frames,
            "client_cpu_pct": round(100 * cpu / elapsed),
            "latency_ms": {"p50": pct(0.5), "p99": pct(0.99), "max": pct(1.0), "samples": len(lat)},
            "latency_samples_ms": [round(x, 1) for x in lat]}


async def run_bare(port: int, rate: float, size: int, expect: int) -> None:
    """The baseline: broadcast() of one frame per tick to every connection, on a fixed schedule,
    from when `expect` clients are connected (or 120 s passed)."""
    from websockets.asyncio.server import broadcast, serve

    raise_nofile()
    pad = "x" * max(0, size - 40)

    async def handler(connection) -> None:  # type: ignore[no-untyped-def]
        async for _ in connection:
            pass

    async with serve(handler, "127.0.0.1", port, compression=None, max_size=65536) as server:
        print("ready", flush=True)
        deadline = time.monotonic() + 120
        while len(server.connections) < expect and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        interval = 1 / rate
        due = time.time()
        while True:
            due += interval
            # Yield to the loop every tick, also when behind schedule: it must read and flush too.
            await asyncio.sleep(max(0.0, due - time.time()))
            message = json.dumps({"t": due * 1000, "pad": pad})
            broadcast(server.connections, message)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.ws_load")
    sub = parser.add_subparsers(dest="mode", required=True)
    client = sub.add_parser("client")
    client.add_argument("--url", required=True)
    client.add_argument("--connections", type=int, default=1000)
    client.add_argument("--seconds", type=float, default=10)
    client.add_argument("--warmup", type=float, default=2)
    client.add_argument("--subscribe", default="feed")
    client.add_argument("--wait-go", action="store_true")
    client.add_argument("--result", help="write the JSON result to this file instead of stdout")
    bare = sub.add_parser("bare")
    bare.add_argument("--port", type=int, required=True)
    bare.add_argument("--rate", type=float, default=10)
    bare.add_argument("--size", type=int, default=300)
    bare.add_argument("--expect", type=int, default=1)
    args = parser.parse_args(argv)
    if args.mode == "client":
        import uvloop  # the client must cost less per frame than the server it measures

        result = uvloop.run(run_client(args.url, args.connections, args.seconds, args.warmup,
                                        args.subscribe or None, args.wait_go))
        if args.result:  # a large result on a pipe nobody reads yet could block or be cut short
            Path(args.result).write_text(json.dumps(result))
        else:
            print(json.dumps(result), flush=True)
    else:
        asyncio.run(run_bare(args.port, args.rate, args.size, args.expect))
    return 0


if __name__ == "__main__":
    sys.exit(main())
