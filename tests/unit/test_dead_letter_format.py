"""The dead-letter contract: headers round-trip, ids name only project topics, nothing fails to store."""

from __future__ import annotations

import pytest

from schemas.dead_letters import DeadLetter, from_message, parse_dead_letter_id
from schemas.topics import DEAD_LETTER_TOPIC, TOPIC_BY_SCHEMA

VIEWS = TOPIC_BY_SCHEMA["VideoView"].name


def test_headers_round_trip_to_the_same_dead_letter() -> None:
    letter = DeadLetter("heat", "x" * 5000, VIEWS, 4, 1234, b"video-1", b"\x00\xffraw")
    again = from_message(letter.headers(), letter.key, letter.value, (0, 7))
    assert again == DeadLetter("heat", "x" * 1000, VIEWS, 4, 1234, b"video-1", b"\x00\xffraw")
    assert again.id == f"{VIEWS}:4:1234" and parse_dead_letter_id(again.id) == (VIEWS, 4, 1234)


@pytest.mark.parametrize("headers", [None, [], [("lustrax-source-topic", b"t"), ("lustrax-source-offset", b"-1")],
                                     [("lustrax-source-partition", None)]])
def test_a_message_with_broken_headers_is_still_a_row(headers: list[tuple[str, bytes | None]] | None) -> None:
    letter = from_message(headers, None, None, (2, 99))
    assert (letter.topic, letter.partition, letter.offset) == (DEAD_LETTER_TOPIC.name, 2, 99)
    assert letter.consumer == "unknown" and letter.value == b""


@pytest.mark.parametrize("bad", ["", "x", f"{VIEWS}:1", f"{VIEWS}:-1:2", f"{VIEWS}:1:2:3", "evil.topic:0:0",
                                 f"{VIEWS}:1:2\n"])
def test_ids_name_a_position_on_a_project_topic(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_dead_letter_id(bad)
