"""The gateway's frames as Socket.IO packets, and the Socket.IO handshake's auth (sans I/O).

A frame of the core (gateways/ws/protocol.py) becomes one Socket.IO EVENT packet on the default
namespace, named by the frame's `type`:

- an event frame `{"type": T, "channel": C, "seq": N, "data": D}` -> `2["T",D,{"channel":C,"seq":N}]`:
  the seed's handler `(data) => data.title` reads D; the second argument says where to resume;
- any other frame `{"type": T, ...rest}` (subscribed, reset, error, unsubscribed) -> `2["T",rest]`.

Event frames are spliced from the bytes the core serialized once for every transport, so a live
event costs no second JSON encoding. The splice relies on the layout of `protocol.frame()`
(`type, channel, seq, data`, data last); tests/unit/test_socketio_packets.py checks it against a
JSON decode for every kind of frame the core makes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from common.tokens import AGE_COOKIE
from gateways.ws.protocol import FEED, ProtocolError, cookie_value

EVENT = "2"  # the Socket.IO packet type; the default namespace "/" is left out
_DATA = b',"data":'
_CHANNEL = b'"channel":'


def event_packet(frame: bytes) -> str:
    """An event frame (data last, as protocol.frame() writes it) as a Socket.IO EVENT packet."""
    head, sep, data = frame.partition(_DATA)
    if not sep or not head.startswith(b'{"type":"'):
        raise ValueError("not an event frame")
    type_end = head.index(b'"', 9)
    meta = head[head.index(_CHANNEL, type_end):]  # "channel":C,"seq":N
    return f'{EVENT}["{head[9:type_end].decode()}",{data[:-1].decode()},{{{meta.decode()}}}]'


def reply_packet(frame: bytes) -> str:
    """Any frame of the core (the replies to a client's own messages: not the hot path)."""
    body = orjson.loads(frame)
    if "data" in body:
        return event_packet(frame)
    type_ = body.pop("type")
    return EVENT + orjson.dumps([type_, body]).decode()


def subscribe_message(op: str, payload: Any) -> bytes:
    """A Socket.IO `subscribe`/`unsubscribe` event's argument as the core's client message."""
    if not isinstance(payload, dict):
        return b"[]"  # the core answers bad_message
    return orjson.dumps({**payload, "op": op})


@dataclass(frozen=True)
class Handshake:
    """What `io(url, {auth: {token, since, age_token}})` brought: a bearer value, the feed's resume
    point and the age token (docs/trust-and-safety.md)."""

    authorization: str | None
    since: Any = None  # checked by the core like a subscribe's since: SEQ or {seq, epoch}
    age_token: str | None = None


def parse_handshake(auth: Any, authorization_header: str | None, cookie_header: str | None = None) -> Handshake:
    """The Socket.IO CONNECT payload (`auth`), else the HTTP Authorization header (and for the age
    token the lustrax_age cookie) of the handshake."""
    if auth is None:
        auth = {}
    if not isinstance(auth, dict):
        raise ProtocolError("bad_message", "auth must be an object {token, since, age_token}")
    for name in ("token", "age_token"):
        value = auth.get(name)
        if value is not None and (not isinstance(value, str) or not value):
            raise ProtocolError("bad_message", f"auth.{name} must be a non-empty string")
    token = auth.get("token")
    return Handshake(f"Bearer {token}" if token else authorization_header, auth.get("since"),
                     auth.get("age_token") or cookie_value(cookie_header, AGE_COOKIE))


def feed_subscription(handshake: Handshake) -> bytes:
    """The subscription every Socket.IO client gets on connecting (the seed's `new_video` needs no
    subscribe), resumed after `auth.since` when given."""
    since = {} if handshake.since is None else {"since": {FEED: handshake.since}}
    return orjson.dumps({"op": "subscribe", "channels": [FEED], **since})
