"""The gateway frames a broadcast frame once (gateways/ws/server.py text_frame): what websockets'
own frame parser reads back, for every length encoding, also two frames written in one piece."""

from __future__ import annotations

from collections.abc import Generator

import pytest
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from gateways.ws.server import text_frame


def _parse_all(wire: bytes) -> list[Frame]:
    reader = StreamReader()
    reader.feed_data(wire)
    reader.feed_eof()
    frames = []
    while reader.buffer:
        parser: Generator[None, None, Frame] = Frame.parse(reader.read_exact, mask=False)
        try:
            next(parser)
        except StopIteration as done:
            frames.append(done.value)
            continue
        raise AssertionError("an incomplete frame")
    return frames


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536])
def test_a_text_frame_framed_once_is_what_the_client_reads(size: int) -> None:
    data = b'{"pad":"' + b"x" * size + b'"}'
    frames = _parse_all(text_frame(data) + text_frame(b'{"n":2}'))
    assert [(f.opcode, f.fin, f.data) for f in frames] == [(Opcode.TEXT, True, data), (Opcode.TEXT, True, b'{"n":2}')]
