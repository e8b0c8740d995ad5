"""The load side of bench/socketio.py (its own process): N lean Socket.IO clients over Engine.IO's
websocket transport, counting event packets.

    python -m bench.socketio_load --url http://127.0.0.1:8766 --connections N --seconds T

The same lines and JSON result as bench/ws_load.py's client (connected, measure-start, measure-end),
so that bench/socketio.py reads both alike. Each client opens
`/socket.io/?EIO=4&transport=websocket`, joins the default namespace (`40`), answers Engine.IO
pings (`2` -> `3`) and counts `42[...]` packets; every 20th samples the latency from the packet's
last argument `{"channel", "seq"}` (seq // 1024 is the Kafka timestamp in ms).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import struct
import sys
import time
from urllib.parse import urlsplit

from bench.ws_load import SAMPLE_EVERY, SEQ_PER_MS, Stats, raise_nofile


class SocketIOClient(asyncio.Protocol):
    def __init__(self, stats: Stats, sample: bool, handshake: bytes) -> None:
        self.stats, self.sample, self.handshake = stats, sample, handshake
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

    def text(self, payload: bytes) -> None:
        assert self.transport is not None and len(payload) < 126  # masked with a zero key
        self.transport.write(bytes([0x81, 0x80 | len(payload)]) + b"\0\0\0\0" + payload)

    def packet(self, body: bytes) -> None:
        if body[:2] == b"42":
            if self.stats.measuring:
                self.stats.frames += 1
                if self.sample:
                    where = json.loads(body[2:])[-1]
                    if isinstance(where, dict) and where.get("seq"):
                        self.stats.latencies.append(time.time() * 1000 - where["seq"] / SEQ_PER_MS)
        elif body == b"2":
            self.text(b"3")
        elif body[:1] == b"0":
            self.text(b"40")  # Engine.IO is open: join the namespace (the gateway subscribes it to the feed)

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
        pos = 0
        while len(buf) - pos >= 2:
            length, head = buf[pos + 1] & 0x7F, 2
            if length >= 126:
                head = 4 if length == 126 else 10
                if len(buf) - pos < head:
                    break
                length = struct.unpack_from("!H" if head == 4 else "!Q", buf, pos + 2)[0]
            if len(buf) - pos < head + length:
                break
            if buf[pos] & 0x0F == 1:
                self.packet(bytes(buf[pos + head:pos + head + length]))
            pos += head + length
        del buf[:pos]


async def run(url: str, connections: int, seconds: float, warmup: float) -> dict[str, object]:
    raise_nofile()
    parts = urlsplit(url)
    loop = asyncio.get_running_loop()
    stats = Stats()
    opened: list[SocketIOClient] = []
    failures: dict[str, int] = {}
    gate = asyncio.Semaphore(100)
    started = time.monotonic()

    async def open_one(i: int) -> None:
        key = base64.b64encode(os.urandom(16)).decode()
        handshake = (f"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                     f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n").encode()
        async with gate:
            try:
                _, proto = await loop.create_connection(
                    lambda: SocketIOClient(stats, i % SAMPLE_EVERY == 0, handshake), parts.hostname, parts.port)
                await asyncio.wait_for(proto.upgraded, 30)
                opened.append(proto)
            except (OSError, ConnectionError, TimeoutError) as exc:
                reason = f"{type(exc).__name__}: {str(exc)[:60]}"
                failures[reason] = failures.get(reason, 0) + 1

    await asyncio.gather(*(open_one(i) for i in range(connections)))
    connect_s = time.monotonic() - started
    print("connected", flush=True)
    await asyncio.sleep(warmup)
    print("measure-start", flush=True)
    stats.measuring = True
    t0 = time.monotonic()
    await asyncio.sleep(seconds)
    stats.measuring = False
    print("measure-end", flush=True)
    elapsed = time.monotonic() - t0
    lat = sorted(stats.latencies)

    def pct(p: float) -> float | None:
        return round(lat[min(len(lat) - 1, int(p * len(lat)))], 1) if lat else None

    for proto in opened:
        assert proto.transport is not None
        proto.transport.close()
    return {"connected": len(opened), "held": len(opened) - stats.closed, "failures": failures,
            "connect_s": round(connect_s, 2), "deliveries_per_s": round(stats.frames / elapsed),
            "frames": stats.frames,
            "latency_ms": {"p50": pct(0.5), "p99": pct(0.99), "max": pct(1.0), "samples": len(lat)}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.socketio_load")
    parser.add_argument("--url", required=True)
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--warmup", type=float, default=2)
    args = parser.parse_args(argv)
    import uvloop  # the client must cost less per packet than the server it measures

    print(json.dumps(uvloop.run(run(args.url, args.connections, args.seconds, args.warmup))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
