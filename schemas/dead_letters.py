"""The dead-letter contract: what a consumer that cannot process a message parks, and how it is read.

Every consumer parks on the one topic DEAD_LETTER_TOPIC: the message's original key and value
unchanged, and in the headers why, who, and where it came from. The sink stores each dead letter
in ClickHouse `dead_letters`; `lustrax dead-letters replay` puts the original back on its source
topic, where every consumer of that topic meets it again (they are idempotent by event_id).
A dead letter's id is its source position `topic:partition:offset`: two consumers may park the
same message, and it is replayed once. Pure functions, no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from .topics import DEAD_LETTER_TOPIC, TOPIC_BY_NAME

MAX_REASON_CHARS = 1000
CONSUMER_HEADER = "lustrax-consumer"
REASON_HEADER = "lustrax-reason"
TOPIC_HEADER = "lustrax-source-topic"
PARTITION_HEADER = "lustrax-source-partition"
OFFSET_HEADER = "lustrax-source-offset"
REPLAY_HEADER = "lustrax-replay-of"  # on a replayed message: the id of the dead letter it came from
_ID = re.compile(r"(?P<topic>[A-Za-z0-9._-]{1,249}):(?P<partition>[0-9]{1,9}):(?P<offset>[0-9]{1,19})")


@dataclass(frozen=True)
class DeadLetter:
    consumer: str
    reason: str
    topic: str  # the source topic
    partition: int
    offset: int
    key: bytes
    value: bytes

    @property
    def id(self) -> str:
        return dead_letter_id(self.topic, self.partition, self.offset)

    def headers(self) -> list[tuple[str, bytes]]:
        return [(CONSUMER_HEADER, self.consumer.encode()), (REASON_HEADER, self.reason[:MAX_REASON_CHARS].encode()),
                (TOPIC_HEADER, self.topic.encode()), (PARTITION_HEADER, str(self.partition).encode()),
                (OFFSET_HEADER, str(self.offset).encode())]


def dead_letter_id(topic: str, partition: int, offset: int) -> str:
    return f"{topic}:{partition}:{offset}"


def parse_dead_letter_id(text: str) -> tuple[str, int, int]:
    """(topic, partition, offset) of an id; ValueError unless it names a position on a known topic."""
    match = _ID.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not a dead-letter id (topic:partition:offset)")
    if match["topic"] not in TOPIC_BY_NAME:
        raise ValueError(f"{match['topic']!r} is not one of the project's topics")
    return match["topic"], int(match["partition"]), int(match["offset"])


def from_message(headers: Iterable[tuple[str, bytes | None]] | None, key: bytes | None, value: bytes | None,
                 dead_letter_topic_position: tuple[int, int]) -> DeadLetter:
    """A message read from the dead-letter topic. Headers that are missing or malformed still give a
    row (it must never fail: it is the last stop), marked as coming from the dead-letter topic."""
    found = {name: (raw or b"").decode("utf-8", "replace") for name, raw in (headers or [])}
    partition, offset = found.get(PARTITION_HEADER, ""), found.get(OFFSET_HEADER, "")
    if found.get(TOPIC_HEADER) and partition.isdigit() and offset.isdigit():
        topic, position = found[TOPIC_HEADER], (int(partition), int(offset))
    else:
        topic, position = DEAD_LETTER_TOPIC.name, dead_letter_topic_position
    return DeadLetter(found.get(CONSUMER_HEADER, "unknown"), found.get(REASON_HEADER, "no reason given"),
                      topic, position[0], position[1], key or b"", value or b"")
