"""Listing cursors: opaque to clients, signed so that a forged or altered one is refused (422).

A cursor is the position after the last item of a page, `(sort time in ms, video_id)`, bound to
the listing's `state` filter, HMAC-SHA256-signed with a key derived from the token secret: every
API replica with the same secret accepts the cursors of every other one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass

from common.errors import ApiError

_TAG_BYTES = 16


@dataclass(frozen=True)
class Position:
    sort_ms: int
    video_id: str


class CursorCodec:
    def __init__(self, secret: str) -> None:
        self._key = hashlib.sha256(b"lustrax-catalog-cursor\0" + secret.encode()).digest()

    def _tag(self, body: bytes) -> bytes:
        return hmac.new(self._key, body, hashlib.sha256).digest()[:_TAG_BYTES]

    def encode(self, state: str, position: Position) -> str:
        body = json.dumps([state, position.sort_ms, position.video_id], separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(self._tag(body) + body).decode().rstrip("=")

    def decode(self, state: str, cursor: str) -> Position:
        """The position `cursor` names for a listing of `state`; 422 naming `cursor` otherwise."""
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        except (binascii.Error, ValueError):
            raise _invalid("cursor is not one this API issued") from None
        tag, body = raw[:_TAG_BYTES], raw[_TAG_BYTES:]
        if len(tag) < _TAG_BYTES or not hmac.compare_digest(tag, self._tag(body)):
            raise _invalid("cursor is not one this API issued")
        cursor_state, sort_ms, video_id = json.loads(body)  # signed by us: well-formed
        if cursor_state != state:
            raise _invalid(f"cursor belongs to a listing of state={cursor_state}, not state={state}")
        return Position(int(sort_ms), str(video_id))


def _invalid(message: str) -> ApiError:
    return ApiError(422, "invalid_cursor", message, "cursor")
