"""The gateway's WebSocket I/O on websockets' asyncio server (the protocol is gateways/ws/protocol.py).

`ws://HOST:PORT/v1/ws`; on the same port `GET /healthz` (200 once the history is rebuilt from the
topics) and `GET /metrics` (Prometheus text), answered by the `process_request` hook before any
upgrade. Each frame is serialized and framed once and written to each recipient's transport
(what `broadcast()` does, minus framing it again per connection), which never waits for a client:
a connection whose write buffer still holds more than LUSTRAX_WS_CLIENT_BUFFER_BYTES
LUSTRAX_WS_SLOW_GRACE_S after a write (or at once more than SLOW_HARD_FACTOR times that) is closed
with 3008 "slow". Compression is off (a broadcast frame would
be compressed once per connection, and each deflate context costs ~64 KiB of memory).
Several processes may share the port (SO_REUSEPORT): LUSTRAX_WS_PROCESSES. `transports` are further
transports fed by the same Core: the first process serves Socket.IO (gateways/socketio).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import resource
import signal
import threading
import time
import weakref
from collections import Counter
from collections.abc import Iterable, Mapping
from http import HTTPStatus
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

import orjson
from prometheus_client import CollectorRegistry, Counter as MetricCounter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from websockets.asyncio.server import Server, ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State

from common.errors import ApiError
from common.process import die_with_parent
from common.settings import Settings, load_settings
from common.tokens import AGE_COOKIE, AGE_TOKEN_FIELD, Principal, TokenVerifier
from gateways.ws.fanout import Fanout
from gateways.ws.protocol import Core, History, Limits, Positioned, Session, SEQ_PER_MS, cookie_value

log = logging.getLogger(__name__)
WS_PATH = "/v1/ws"
SWEEP_INTERVAL_S = 0.25
EXPIRE_EVERY_ROUNDS = 40  # the history is trimmed by age every 10 s
SLOW_CLOSE_CODE, SLOW_CLOSE_REASON = 3008, "slow"
# A burst (a loop that fell behind delivers what piled up in one write) may pass the bound for a
# moment on a healthy client; past this many times the bound, memory comes first.
SLOW_HARD_FACTOR = 2


def raise_open_file_limit() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit: each connection is a file descriptor."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


class _FanoutCollector:
    """The consumer thread's counters, read at scrape time."""

    def __init__(self, fanout: Fanout) -> None:
        self.fanout = fanout

    def collect(self) -> Iterable[Any]:
        events = CounterMetricFamily("lustrax_ws_kafka_messages", "Kafka messages read", labels=["outcome"])
        events.add_metric(["decoded"], self.fanout.stats.decoded)
        events.add_metric(["undecodable"], self.fanout.stats.undecodable)
        yield events


class GatewayMetrics:
    def __init__(self, gateway: "Gateway") -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        Gauge("lustrax_ws_connections", "open WebSocket connections", registry=r).set_function(
            lambda: len(gateway.sessions))
        Gauge("lustrax_ws_subscriptions", "channel subscriptions", registry=r).set_function(
            gateway.core.hub.subscriptions)
        Gauge("lustrax_ws_consumer_lag_messages", "messages on the broker not yet read", registry=r).set_function(
            lambda: gateway.fanout.stats.lag)
        Gauge("lustrax_ws_history_frames", "frames held for recovery (as of the last expiry)",
              registry=r).set_function(lambda: gateway.history_frames)
        self.frames_sent = MetricCounter("lustrax_ws_frames_sent", "frames written to clients", registry=r)
        self.slow_closes = MetricCounter("lustrax_ws_slow_closes", "clients closed with 3008 slow", registry=r)
        self.recoveries = MetricCounter("lustrax_ws_recoveries", "resubscriptions with since", ["outcome"], registry=r)
        self.rejected = MetricCounter("lustrax_ws_rejected_connections", "refused handshakes", ["reason"], registry=r)
        self.delivery_lag = Histogram("lustrax_ws_delivery_lag_seconds", "event timestamp to broadcast",
                                      buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5), registry=r)
        r.register(_FanoutCollector(gateway.fanout))


def _respond(connection: ServerConnection, status: int, body: str, content_type: str) -> Response:
    response = connection.respond(status, body)
    del response.headers["Content-Type"]  # Headers is a multidict: replace, do not add
    response.headers["Content-Type"] = content_type
    return response


def _json_response(connection: ServerConnection, status: int, code: str, message: str, field: str | None = None
                   ) -> Response:
    """The ingest API's error body (common.errors.ApiError), before any upgrade."""
    return _respond(connection, status, orjson.dumps(ApiError(status, code, message, field).body()).decode(),
                    "application/json")


class Transport(Protocol):
    """A second transport fed by this process's Core (gateways/socketio): started once the history is
    rebuilt, given each channel's frames of a batch (seq order) after the WebSocket clients, stopped
    before the consumer."""

    async def start(self) -> None: ...
    def deliver(self, channel: str, frames: list[bytes]) -> None: ...
    async def stop(self) -> None: ...


def text_frame(data: bytes) -> bytes:
    """A server's text frame on the wire (unmasked, no extension: compression is off), so that a
    frame is framed once for all its recipients instead of once per connection by broadcast()."""
    return Frame(Opcode.TEXT, data).serialize(mask=False)


def write_all(connections: Iterable[ServerConnection], wire: bytes, bound: int
              ) -> tuple[int, list[ServerConnection]]:
    """broadcast() for frames already on the wire: the same checks (open, no fragmented message in
    progress), then the transport's write, which never waits. Returns how many were written and
    those whose write buffer now holds more than `bound` bytes (only a write makes it grow)."""
    written, over = 0, list[ServerConnection]()
    for connection in connections:
        transport = connection.transport
        if (connection.protocol.state is State.OPEN and connection.send_in_progress is None
                and not transport.is_closing()):
            transport.write(wire)
            written += 1
            if transport.get_write_buffer_size() > bound:
                over.append(connection)
    return written, over


class Gateway:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.fanout = Fanout(settings.kafka_bootstrap, settings.ws_history_age_s, self._from_consumer)
        self.core: Core[ServerConnection] = Core(
            History(settings.ws_history_size, settings.ws_history_age_s, epoch=""),
            Limits(settings.ws_max_channels, settings.ws_anonymous_feed), settings.ws_presence_interval_s)
        self.verifier = TokenVerifier(settings.jwt_signing_secret)
        self.age_verifier = settings.age_verifier
        self.metrics = GatewayMetrics(self)
        self.sessions: dict[ServerConnection, Session[ServerConnection]] = {}
        # Who passed process_request; weak: a handshake that fails afterwards (Origin) never reaches
        # the handler that would pop it.
        self._handshakes: weakref.WeakKeyDictionary[ServerConnection, tuple[Principal | None, float]] = \
            weakref.WeakKeyDictionary()
        self._per_ip: Counter[str] = Counter()
        self._closing: set[asyncio.Task[None]] = set()
        self._over_bound: weakref.WeakSet[ServerConnection] = weakref.WeakSet()  # a recheck is due
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.server: Server | None = None
        self.history_frames = 0
        self._sweeper: asyncio.Task[None] | None = None
        self.transports: list[Transport] = []
        self._inbox: list[Positioned] = []  # batches from the consumer thread, not yet delivered
        self._inbox_lock = threading.Lock()
        self._drain_pending = False

    @property
    def ready(self) -> bool:
        return self.fanout.caught_up.is_set()

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self, reuse_port: bool = True) -> Server:
        self._loop = asyncio.get_running_loop()
        await asyncio.to_thread(self.fanout.assign)
        self.core.history.epoch = self.fanout.epoch
        self.core.history.horizon = self.fanout.started_ms * SEQ_PER_MS
        self._thread = threading.Thread(target=self.fanout.run, name="ws-fanout", daemon=True)
        self._thread.start()
        # Listen only once the history is rebuilt: with SO_REUSEPORT the kernel then hands
        # connections only to processes that are ready, and /healthz on the shared port is true.
        while not await asyncio.to_thread(self.fanout.caught_up.wait, 0.5):
            pass
        s = self.settings
        self.server = await serve(
            self._handle, s.ws_host, s.ws_port, process_request=self._process_request,
            origins=[*s.ws_origins, None], compression=None, max_size=s.ws_max_message_bytes,
            ping_interval=s.ws_ping_interval_s, ping_timeout=s.ws_ping_interval_s, close_timeout=3,
            reuse_port=reuse_port)
        self._sweeper = asyncio.create_task(self._sweep())
        for transport in self.transports:
            await transport.start()
        return self.server

    async def stop(self) -> None:
        """Close every client with 1001 (going away), then the consumer."""
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self.server is not None:
            self.server.close(code=1001, reason="gateway shutting down")
            await self.server.wait_closed()
        for transport in self.transports:
            await transport.stop()
        self.fanout.stop()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 10)
        self.fanout.close()

    # -- HTTP before the upgrade: health, metrics, auth, limits ---------------------------------
    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        url = urlsplit(request.path)
        if url.path == "/healthz":
            return connection.respond(HTTPStatus.OK if self.ready else HTTPStatus.SERVICE_UNAVAILABLE,
                                      "ok\n" if self.ready else "rebuilding history\n")
        if url.path == "/metrics":
            return _respond(connection, HTTPStatus.OK, generate_latest(self.metrics.registry).decode(),
                            CONTENT_TYPE_LATEST)
        if url.path != WS_PATH:
            return _json_response(connection, 404, "not_found", f"the WebSocket endpoint is {WS_PATH}")
        if not self.ready:
            return _json_response(connection, 503, "not_ready", "the gateway is rebuilding its history")
        if self._per_ip[connection.remote_address[0]] >= self.settings.ws_max_connections_per_ip:
            self.metrics.rejected.labels("per_ip").inc()
            return _json_response(connection, 429, "too_many_connections", "too many connections from this address")
        query = parse_qs(url.query)
        token = query.get("token", [None])[0]
        authorization = f"Bearer {token}" if token else request.headers.get("Authorization")
        age_token = query.get("age_token", [None])[0] or cookie_value(request.headers.get("Cookie"), AGE_COOKIE)
        try:
            age_until = self.age_of_handshake(age_token, authorization is not None, request.headers)
        except ApiError as exc:
            self.metrics.rejected.labels("age_token").inc()
            return _json_response(connection, exc.status, exc.code, exc.message, exc.field)
        if authorization is None and self.settings.ws_anonymous_feed:
            self._handshakes[connection] = (None, age_until)
            return None
        try:
            self._handshakes[connection] = (self.verifier.verify(authorization), age_until)
        except ApiError as exc:
            self.metrics.rejected.labels("token").inc()
            return _json_response(connection, exc.status, exc.code, exc.message, "token")
        return None

    def age_of_handshake(self, age_token: str | None, authenticated: bool, headers: Mapping[str, str]) -> float:
        """The age gate at a handshake (docs/trust-and-safety.md): until when the connection may
        subscribe to adult channels (0: never). A given age token must be accepted (401 otherwise);
        without one a signed-in user gets only upload:{id}, and an anonymous client is refused."""
        if age_token:
            return self.age_verifier.verify(age_token, headers).expires_at
        if not authenticated:
            raise ApiError(401, "age_verification_required", "pass the age gate first (POST /v1/age-gate) and "
                           "connect with ?age_token= or the lustrax_age cookie", AGE_TOKEN_FIELD)
        return 0.0

    # -- one connection -------------------------------------------------------------------------
    async def _handle(self, connection: ServerConnection) -> None:
        principal, age_until = self._handshakes.pop(connection, (None, 0.0))
        ip = connection.remote_address[0]
        if self._per_ip[ip] >= self.settings.ws_max_connections_per_ip:  # handshakes that raced
            self.metrics.rejected.labels("per_ip").inc()
            await connection.close(1008, "too many connections from this address")
            return
        self._per_ip[ip] += 1
        session = Session(connection, principal, age_until)
        self.sessions[connection] = session
        try:
            async for message in connection:
                if connection.state is not State.OPEN:
                    break
                out = self.core.handle(session, message, time.time())
                for reply in out.replies:
                    broadcast((connection,), reply, text=True)  # in order, before any live frame
                if out.recovered:
                    self.metrics.recoveries.labels("hit").inc(out.recovered)
                if out.reset:
                    self.metrics.recoveries.labels("miss").inc(out.reset)
        except ConnectionClosed:
            pass
        finally:
            self.sessions.pop(connection, None)
            self.core.disconnect(connection)
            self._per_ip[ip] -= 1
            if not self._per_ip[ip]:
                del self._per_ip[ip]

    # -- Kafka -> clients -----------------------------------------------------------------------
    def _from_consumer(self, batch: list[Positioned]) -> None:
        """In the consumer thread: queue the batch; one drain callback is pending at most, so that
        what piles up while the loop is busy is delivered together (one write per connection)."""
        assert self._loop is not None
        with self._inbox_lock:
            self._inbox.extend(batch)
            if self._drain_pending:
                return
            self._drain_pending = True
        self._loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        with self._inbox_lock:
            batch, self._inbox, self._drain_pending = self._inbox, [], False
        self._deliver(batch)

    def _deliver(self, batch: list[Positioned]) -> None:
        now = time.time()
        pubs = [(pub, item.ts_ms) for item in batch for pub in self.core.observe(*item.payload)]
        bound = self.settings.ws_client_buffer_bytes
        sent, slow = 0, list[ServerConnection]()
        for delivery in self.core.publish_batch(pubs, now):
            wires = [text_frame(data) for data in delivery.frames]
            count = len(wires)
            written, over = write_all(delivery.live, wires[0] if count == 1 else b"".join(wires), bound)
            sent, slow = sent + written * count, slow + over
            for conn, start in delivery.joined.items():
                written, over = write_all((conn,), b"".join(wires[start:]), bound)
                sent, slow = sent + written * (count - start), slow + over
            for transport in self.transports:
                transport.deliver(delivery.channel, delivery.frames)
            if delivery.live or delivery.joined:
                for ts_ms in delivery.ts_ms:
                    self.metrics.delivery_lag.observe(max(0.0, now - ts_ms / 1000))
        if sent:
            self.metrics.frames_sent.inc(sent)
        hard = bound * SLOW_HARD_FACTOR
        for connection in dict.fromkeys(slow):  # after the writes: closing changes the hub's sets
            if connection.transport.get_write_buffer_size() > hard:
                self._close_slow(connection)
            elif connection not in self._over_bound:
                self._over_bound.add(connection)
                asyncio.get_running_loop().call_later(self.settings.ws_slow_grace_s, self._recheck_slow, connection)

    def _recheck_slow(self, connection: ServerConnection) -> None:
        """A client still past the bound a grace after a write does not read: close it."""
        self._over_bound.discard(connection)
        transport = connection.transport
        if (connection.protocol.state is State.OPEN and not transport.is_closing()
                and transport.get_write_buffer_size() > self.settings.ws_client_buffer_bytes):
            self._close_slow(connection)

    def _close_slow(self, connection: ServerConnection) -> None:
        """Close with 3008 "slow" and leave every channel at once, so it costs nothing afterwards."""
        self.core.disconnect(connection)
        self.metrics.slow_closes.inc()
        task = asyncio.create_task(connection.close(SLOW_CLOSE_CODE, SLOW_CLOSE_REASON))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _sweep(self) -> None:
        """Presence every SWEEP_INTERVAL_S (rate-limited in Presence), history expiry now and then."""
        rounds = 0
        while True:
            await asyncio.sleep(SWEEP_INTERVAL_S)
            rounds += 1
            if rounds % EXPIRE_EVERY_ROUNDS == 0:
                self.history_frames = self.core.history.expire(time.time())
            for channel, data in self.core.presence.due(self.core.hub.count, time.monotonic()):
                broadcast(self.core.hub.members(channel), data, text=True)


async def run_gateway(settings: Settings, socketio: bool = True) -> None:
    """One gateway process until SIGTERM/SIGINT; with `socketio`, it serves the Socket.IO port too."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    gateway = Gateway(settings)
    if socketio and settings.socketio_port:
        from gateways.socketio.server import SocketIOTransport
        gateway.transports.append(SocketIOTransport(gateway))
    starting = asyncio.create_task(gateway.start())
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if starting.done():
        starting.result()  # a failed start raises here
        log.info("gateway listening on ws://%s:%s%s", settings.ws_host, settings.ws_port, WS_PATH)
        await stopping
    else:
        starting.cancel()  # stopped while rebuilding the history
    await gateway.stop()


def _child(parent: int, socketio: bool) -> None:
    die_with_parent(parent)()
    asyncio.run(run_gateway(load_settings(), socketio))


def serve_gateway(settings: Settings) -> None:
    """`lustrax serve gateway`: LUSTRAX_WS_PROCESSES processes on one port (SO_REUSEPORT)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("websockets").setLevel(logging.WARNING)  # not a line per connection opened/closed
    raise_open_file_limit()
    if settings.ws_processes == 1:
        asyncio.run(run_gateway(settings))
        return
    context = multiprocessing.get_context("spawn")
    children = [context.Process(target=_child, args=(os.getpid(), i == 0), name=f"ws-gateway-{i}") for i in range(settings.ws_processes)]
    stopping = threading.Event()

    def _stop(signum: int, frame: object) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    for child in children:
        child.start()
    while not stopping.is_set() and all(child.is_alive() for child in children):
        stopping.wait(0.5)
    for child in children:
        if child.is_alive():
            child.terminate()  # SIGTERM: each closes its clients with 1001
    for child in children:
        child.join(15)
    if not stopping.is_set():
        raise SystemExit("a gateway process stopped unexpectedly")
