"""The gateway's Socket.IO endpoint: python-socketio (ASGI) on uvicorn, in the gateway's process and loop.

`http://HOST:LUSTRAX_SOCKETIO_PORT/socket.io/` (Socket.IO 5 / Engine.IO 4, polling and websocket),
fed by the same Fanout and History as the WebSocket clients (gateways/ws/server.py hands every
publication to `deliver`): one Kafka consumer, one decode and one serialization per event per
process. The Socket.IO clients have their own subscription Hub in a Core that shares the gateway's
History and uploader map, so channels, permissions, limits and recovery are the core's.

A live packet is put straight on each recipient's Engine.IO queue (what python-engineio's
`AsyncSocket.send` does, without an awaited call and a task per recipient as
`AsyncServer.emit` has): delivery never waits for a client. A sweep drops the clients whose queue
holds more than LUSTRAX_SOCKETIO_CLIENT_QUEUE_FRAMES unsent packets. On the same port `/healthz`
and `/metrics` (the gateway's registry: WebSocket and Socket.IO figures alike).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

import orjson
import socketio
import uvicorn
from engineio import packet as eio_packet
from prometheus_client import Counter as MetricCounter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from socketio.exceptions import ConnectionRefusedError as Refused

from common.errors import ApiError
from common.tokens import Principal
from gateways.socketio.packets import event_packet, feed_subscription, parse_handshake, reply_packet, subscribe_message
from gateways.ws.protocol import Core, Outcome, ProtocolError, Session, error_frame

if TYPE_CHECKING:
    from gateways.ws.server import Gateway

log = logging.getLogger(__name__)
SOCKETIO_PATH = "/socket.io/"
SWEEP_INTERVAL_S = 0.25
CLIENT_EVENTS = ("subscribe", "unsubscribe")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class SocketIOMetrics:
    """Registered on the gateway's registry: one /metrics shows both transports."""

    def __init__(self, transport: "SocketIOTransport") -> None:
        r = transport.gateway.metrics.registry
        Gauge("lustrax_socketio_connections", "connected Socket.IO clients", registry=r).set_function(
            lambda: len(transport.sessions))
        Gauge("lustrax_socketio_subscriptions", "channel subscriptions of Socket.IO clients",
              registry=r).set_function(transport.core.hub.subscriptions)
        self.frames_sent = MetricCounter("lustrax_socketio_frames_sent", "event packets queued to clients", registry=r)
        self.slow_closes = MetricCounter("lustrax_socketio_slow_closes", "clients closed for unsent packets",
                                         registry=r)
        self.recoveries = MetricCounter("lustrax_socketio_recoveries", "subscriptions with since", ["outcome"],
                                        registry=r)
        self.rejected = MetricCounter("lustrax_socketio_rejected_connections", "refused Socket.IO connections",
                                      ["reason"], registry=r)


class _Uvicorn(uvicorn.Server):
    """uvicorn inside the gateway's loop: the gateway owns SIGTERM/SIGINT (run_gateway)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class SocketIOTransport:
    def __init__(self, gateway: "Gateway") -> None:
        s = gateway.settings
        self.gateway = gateway
        self.settings = s
        # Its own subscribers; the gateway's history (seqs, recovery) and uploader map.
        self.core: Core[str] = Core(gateway.core.history, gateway.core.limits, s.ws_presence_interval_s)
        self.core.uploaders = gateway.core.uploaders
        self.sio = socketio.AsyncServer(
            async_mode="asgi", cors_allowed_origins=s.ws_origins, ping_interval=s.ws_ping_interval_s,
            ping_timeout=s.ws_ping_interval_s, max_http_buffer_size=s.ws_max_message_bytes,
            logger=False, engineio_logger=False)
        self.sio.on("connect", self._connect)
        self.sio.on("disconnect", self._disconnect)
        for op in CLIENT_EVENTS:
            self.sio.on(op, self._client_event(op))
        self.sio.on("*", self._unknown_event)
        self.app = socketio.ASGIApp(self.sio, other_asgi_app=self._http, socketio_path=SOCKETIO_PATH.strip("/"))
        self.metrics = SocketIOMetrics(self)
        self.sessions: dict[str, Session[str]] = {}  # Socket.IO sid -> session (conn: the Engine.IO sid)
        self._ip_of: dict[str, str] = {}
        self._per_ip: Counter[str] = Counter()
        self._server: _Uvicorn | None = None
        self._serving: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Task[None]] = set()

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        s = self.settings
        config = uvicorn.Config(
            self.app, host=s.ws_host, port=s.socketio_port, lifespan="off", ws="websockets-sansio",
            ws_max_size=s.ws_max_message_bytes, ws_ping_interval=None,  # Engine.IO pings on its own
            log_level="warning", access_log=False, timeout_graceful_shutdown=3)
        try:  # bound here, not by uvicorn, which would exit the process on failure
            family = socket.AF_INET6 if ":" in s.ws_host else socket.AF_INET
            listening = socket.create_server((s.ws_host, s.socketio_port), family=family)
        except OSError as exc:
            raise OSError(f"the Socket.IO endpoint cannot listen on {s.ws_host}:{s.socketio_port}: {exc}") from None
        self._server = _Uvicorn(config)
        self._serving = asyncio.create_task(self._server.serve(sockets=[listening]))
        while not self._server.started:
            if self._serving.done():
                self._serving.result()
            await asyncio.sleep(0.02)
        self._sweeper = asyncio.create_task(self._sweep())
        log.info("Socket.IO endpoint on http://%s:%s%s", s.ws_host, s.socketio_port, SOCKETIO_PATH)

    async def stop(self) -> None:
        """Every client is sent Engine.IO's close: socket.io-client sees "transport close" and
        reconnects (to another instance, resuming with since), as the WebSocket clients do on 1001."""
        if self._sweeper is not None:
            self._sweeper.cancel()
        sockets = list(self.sio.eio.sockets.values())
        if sockets:
            await asyncio.gather(*(sock.close(wait=False) for sock in sockets), return_exceptions=True)
        if self._server is not None and self._serving is not None:
            self._server.should_exit = True
            with contextlib.suppress(SystemExit):
                await self._serving
        await self.sio.shutdown()

    # -- HTTP beside Socket.IO ------------------------------------------------------------------
    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        if path == "/healthz":
            status, body, content_type = 200, b"ok\n", "text/plain"
        elif path == "/metrics":
            status, body, content_type = 200, generate_latest(self.gateway.metrics.registry), CONTENT_TYPE_LATEST
        else:
            body = orjson.dumps(ApiError(404, "not_found", f"the Socket.IO endpoint is {SOCKETIO_PATH}").body())
            status, content_type = 404, "application/json"
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", content_type.encode())]})
        await send({"type": "http.response.body", "body": body})

    # -- one client -----------------------------------------------------------------------------
    def _refuse(self, reason: str, code: str, message: str, field: str | None = None) -> Refused:
        """socket.io-client's connect_error: err.message is the code, err.data the API's error object."""
        self.metrics.rejected.labels(reason).inc()
        return Refused(code, ApiError(401, code, message, field).body()["error"])

    async def _connect(self, sid: str, environ: dict[str, Any], auth: Any) -> None:
        client = environ.get("asgi.scope", {}).get("client") or ("",)
        ip = str(client[0])
        if self._per_ip[ip] >= self.settings.ws_max_connections_per_ip:
            raise self._refuse("per_ip", "too_many_connections", "too many connections from this address")
        try:
            handshake = parse_handshake(auth, environ.get("HTTP_AUTHORIZATION"), environ.get("HTTP_COOKIE"))
        except ProtocolError as exc:
            raise self._refuse("auth", exc.code, exc.message, "auth") from None
        headers = {name.decode("latin-1").lower(): value.decode("latin-1")
                   for name, value in environ.get("asgi.scope", {}).get("headers", [])}
        try:
            age_until = self.gateway.age_of_handshake(handshake.age_token, handshake.authorization is not None,
                                                      headers)
        except ApiError as exc:
            raise self._refuse("age_token", exc.code, exc.message, exc.field) from None
        principal: Principal | None = None
        if handshake.authorization is not None or not self.settings.ws_anonymous_feed:
            try:
                principal = self.gateway.verifier.verify(handshake.authorization)
            except ApiError as exc:
                raise self._refuse("token", exc.code, exc.message, "token") from None
        session = Session(self.sio.manager.eio_sid_from_sid(sid, "/"), principal, age_until)
        self.sessions[sid] = session
        self._ip_of[sid] = ip
        self._per_ip[ip] += 1
        # Queued before python-socketio's CONNECT reply; socket.io-client holds them until connected.
        self._reply(session, self.core.handle(session, feed_subscription(handshake), time.time()))

    async def _disconnect(self, sid: str, reason: Any = None) -> None:
        session = self.sessions.pop(sid, None)
        if session is None:
            return
        self.core.disconnect(session.conn)
        ip = self._ip_of.pop(sid)
        self._per_ip[ip] -= 1
        if not self._per_ip[ip]:
            del self._per_ip[ip]

    def _client_event(self, op: str) -> Callable[[str, Any], Awaitable[list[dict[str, Any]]]]:
        async def handler(sid: str, payload: Any = None, *_more: Any) -> list[dict[str, Any]]:
            session = self.sessions.get(sid)
            if session is None:
                return []
            out = self.core.handle(session, subscribe_message(op, payload), time.time())
            self._reply(session, out)
            # Also the acknowledgement's argument, for `socket.emitWithAck('subscribe', ...)`.
            return [body for body in map(orjson.loads, out.replies) if "data" not in body]
        return handler

    async def _unknown_event(self, event: str, sid: str, *args: Any) -> None:
        session = self.sessions.get(sid)
        if session is not None:
            self._push(session.conn, reply_packet(error_frame(
                "unknown_op", f"client events are {' and '.join(CLIENT_EVENTS)}")))

    def _reply(self, session: Session[str], out: Outcome) -> None:
        for reply in out.replies:  # in order, before any live packet of the channels
            self._push(session.conn, reply_packet(reply))
        if out.recovered:
            self.metrics.recoveries.labels("hit").inc(out.recovered)
        if out.reset:
            self.metrics.recoveries.labels("miss").inc(out.reset)

    def _push(self, eio_sid: str, packet: str | eio_packet.Packet) -> bool:
        """Queue one Socket.IO packet for a client now (python-engineio's AsyncSocket.send minus its
        awaits); False if the client is gone."""
        sock = self.sio.eio.sockets.get(eio_sid)
        if sock is None or sock.closed or sock.closing:
            return False
        sock.queue.put_nowait(packet if isinstance(packet, eio_packet.Packet)
                              else eio_packet.Packet(eio_packet.MESSAGE, packet))
        return True

    # -- Kafka -> clients (called by the gateway for every publication) -------------------------
    def deliver(self, channel: str, frames: list[bytes]) -> None:
        """A channel's frames of one batch, in seq order. Every subscriber of this transport came
        level before the batch was published (all on this loop), so each gets all of them."""
        live, joined = self.core.hub.recipients(channel, self.core.history.last_seq(channel))
        if not live and not joined:
            return
        packets = [eio_packet.Packet(eio_packet.MESSAGE, event_packet(data)) for data in frames]  # once for all
        sent = 0
        for eio_sid in (*live, *joined):
            for packet in packets:
                sent += self._push(eio_sid, packet)
        self.metrics.frames_sent.inc(sent)

    async def _sweep(self) -> None:
        bound = self.settings.socketio_client_queue_frames
        while True:
            await asyncio.sleep(SWEEP_INTERVAL_S)
            for session in list(self.sessions.values()):
                sock = self.sio.eio.sockets.get(session.conn)
                if sock is not None and not sock.closing and sock.queue.qsize() > bound:
                    self._close_slow(session, sock)
            for channel, data in self.core.presence.due(self.core.hub.count, time.monotonic()):
                packet = eio_packet.Packet(eio_packet.MESSAGE, event_packet(data))
                for eio_sid in self.core.hub.members(channel):
                    self._push(eio_sid, packet)

    def _close_slow(self, session: Session[str], sock: Any) -> None:
        """Drop its unsent packets and send Engine.IO's close at once: the client reconnects and
        resumes with since, instead of reading a backlog the history still holds."""
        self.core.disconnect(session.conn)
        self.metrics.slow_closes.inc()
        with contextlib.suppress(asyncio.QueueEmpty):
            while True:
                sock.queue.get_nowait()
                sock.queue.task_done()
        task = asyncio.create_task(sock.close(wait=False))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
