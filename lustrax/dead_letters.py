"""`lustrax dead-letters list | replay`: what consumers parked, and putting it back once fixed.

Reads ClickHouse `dead_letters` (filled by the sink from the dead-letter topic) through the
analysts' read-only path, and replays with the acknowledged Kafka producer: the original key and
bytes go back on their source topic, with a header naming the dead letter they came from.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from common.errors import LustraxError
from common.settings import Settings
from infra.clickhouse.analyst import run_sql
from infra.kafka.producer import OutgoingMessage, produce_acknowledged
from schemas.dead_letters import REPLAY_HEADER, dead_letter_id, parse_dead_letter_id
from schemas.topics import TOPIC_BY_NAME

LIST_COLUMNS = ["id", "received_at", "consumer", "reason", "key", "bytes"]
_DURATION = re.compile(r"([1-9][0-9]{0,6})([smhd])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str, now: datetime) -> datetime:
    """`30m`, `2h`, `7d` before now, or an RFC 3339 time."""
    match = _DURATION.fullmatch(text)
    if match:
        return now - timedelta(seconds=int(match[1]) * _UNIT_S[match[2]])
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise LustraxError(f"--since takes a duration such as 30m, 2h, 7d or an RFC 3339 time, not {text!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def list_dead_letters(settings: Settings, consumer: str | None = None, since: datetime | None = None
                      ) -> tuple[list[str], list[list[Any]]]:
    sql = ("SELECT concat(topic, ':', toString(partition), ':', toString(offset)) AS id, received_at, consumer, "
           "reason, key, intDiv(length(payload), 2) AS bytes FROM {db}.dead_letters "
           "WHERE ({consumer:String} = '' OR consumer = {consumer:String}) "
           "AND received_at >= parseDateTime64BestEffort({since:String}, 3) "
           "ORDER BY received_at, id LIMIT 1000")
    parameters = {"consumer": consumer or "",
                  "since": (since or datetime.fromtimestamp(0, UTC)).astimezone(UTC).isoformat()}
    return run_sql(settings, sql, parameters)


def replay(settings: Settings, dead_letter: str | None = None, consumer: str | None = None) -> list[str]:
    """Put the originals back on their source topics; returns the ids replayed (each source position once)."""
    if (dead_letter is None) == (consumer is None):
        raise LustraxError("replay takes a dead-letter ID or --consumer, not both")
    if dead_letter is not None:
        try:
            topic, partition, offset = parse_dead_letter_id(dead_letter)
        except ValueError as exc:
            raise LustraxError(str(exc)) from None
        where = ("topic = {topic:String} AND partition = {partition:UInt32} AND offset = {offset:UInt64}",
                 {"topic": topic, "partition": str(partition), "offset": str(offset)})
    else:
        where = ("consumer = {consumer:String}", {"consumer": consumer})
    _, rows = run_sql(settings, f"SELECT topic, partition, offset, any(key), any(payload) FROM {{db}}.dead_letters "
                                f"WHERE {where[0]} GROUP BY topic, partition, offset ORDER BY topic, partition, offset",
                      where[1])
    if not rows:
        raise LustraxError(f"no dead letter {dead_letter}" if dead_letter else f"no dead letters of {consumer}")
    messages, ids = [], []
    for topic, partition, offset, key, payload in rows:
        if topic not in TOPIC_BY_NAME:  # parked with headers that name no source: nowhere to put it back
            continue
        ids.append(dead_letter_id(topic, int(partition), int(offset)))
        messages.append(OutgoingMessage(topic, key.encode(), bytes.fromhex(payload),
                                        [(REPLAY_HEADER, ids[-1].encode())]))
    produce_acknowledged(settings.kafka_bootstrap, messages)
    return ids
