"""The load side of bench/socketio.py (its own process): bench/ws_load.py's client loop, with a lean
Socket.IO client per connection over Engine.IO's websocket transport.

    python -m bench.socketio_load --url http://127.0.0.1:8766 --connections N --seconds T

`run_client` of bench/ws_load.py opens the connections, measures and prints the same lines and
JSON result, so that both transports are measured alike; only the protocol class differs. Each
client opens `/socket.io/?EIO=4&transport=websocket`, joins the default namespace (`40`) right
after the upgrade (the gateway then subscribes it to the feed), answers Engine.IO pings
(`2` -> `3`) and counts `42[...]` packets; every 20th samples the latency from the packet's last
argument `{"channel", "seq"}` (seq // 1024 is the Kafka timestamp in ms).
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
import time
from urllib.parse import urlsplit

from bench import ws_load
from bench.ws_load import SEQ_PER_MS, LeanClient


class SocketIOClient(LeanClient):
    connect_packet = b"40"  # main() adds the auth: the age token (the feed is behind the age gate)

    def __init__(self, stats: ws_load.Stats, sample: bool, handshake: bytes, subscribe: bytes | None) -> None:
        # Sent right after the upgrade: join the default namespace (the gateway subscribes it to the feed).
        super().__init__(stats, sample, handshake, self.connect_packet)

    def packet(self, body: bytes) -> None:
        if body[:2] == b"42":
            stats = self.stats
            if stats.measuring:
                stats.frames += 1
                if self.sample:
                    where = json.loads(body[2:])[-1]
                    if isinstance(where, dict) and where.get("seq"):
                        stats.latencies.append(time.time() * 1000 - where["seq"] / SEQ_PER_MS)
        elif body == b"2":
            self._send(1, b"3")

    def data_received(self, data: bytes) -> None:
        if not self.upgraded.done():  # the HTTP upgrade (and Engine.IO's open packet): the parent's
            super().data_received(data)
            return
        buf = self.buffer
        buf += data
        at = 0
        while len(buf) - at >= 2:
            size, header = buf[at + 1] & 0x7F, 2
            if size >= 126:
                header = 4 if size == 126 else 10
                if len(buf) - at < header:
                    break
                size = struct.unpack_from("!H" if header == 4 else "!Q", buf, at + 2)[0]
            if len(buf) - at < header + size:
                break
            if buf[at] & 0x0F == 1:
                self.packet(bytes(buf[at + header:at + header + size]))
            at += header + size
        del buf[:at]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.socketio_load")
    parser.add_argument("--url", required=True)
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--warmup", type=float, default=2)
    parser.add_argument("--age-token", required=True, help="an age token the gateway accepts")
    args = parser.parse_args(argv)
    SocketIOClient.connect_packet = b"40" + json.dumps({"age_token": args.age_token}).encode()
    import uvloop  # the client must cost less per packet than the server it measures

    # run_client makes its connections from the module's LeanClient: this one speaks Socket.IO.
    ws_load.LeanClient = SocketIOClient  # type: ignore[misc]
    address = urlsplit(args.url).netloc
    result = uvloop.run(ws_load.run_client(f"ws://{address}/socket.io/?EIO=4&transport=websocket",
                                           args.connections, args.seconds, args.warmup, None))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
