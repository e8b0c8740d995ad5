"""Exact deduplication by event_id before the sink inserts a batch.

A client retrying an event without occurred_at gets a new timestamp from the ingest API, which may
fall into another hour: another sorting key, so ReplacingMergeTree never collapses the two rows,
and the rollups count both. The sink therefore drops an event whose event_id is already stored.
The ledger `event_ids` (migration 0005) holds every stored id with the insert token it came with,
written by materialized views in the same insert as the row, and kept 8 days.

Crash safety: ids stored under one of the batch's own insert tokens do not count as seen. A batch
retried after a failed or half-done insert thus sends exactly the blocks of its first attempt, and
insert deduplication drops those already stored (in the tables and in the rollups). A batch that
is re-read after a restart with other offsets has other tokens: what its first version stored is
seen and dropped.

Events of one video go to one Kafka partition, so only one sink consumer ever sees an id and its
retries: one lookup per batch is exact.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from clickhouse_connect.driver.client import Client

EVENT_ID = 0  # every event table's rows start with the envelope: event_id first (rows.ENVELOPE)


def batch_event_ids(rows_by_table: dict[str, list[list[Any]]]) -> list[uuid.UUID]:
    return [_as_uuid(row[EVENT_ID]) for rows in rows_by_table.values() for row in rows]


def drop_seen(rows_by_table: dict[str, list[list[Any]]], seen: set[uuid.UUID]) -> dict[str, list[list[Any]]]:
    """The rows whose event_id is not in `seen`, each id once (its first row in the batch);
    deterministic, so a retried batch yields the same rows."""
    kept: dict[str, list[list[Any]]] = {}
    taken = set(seen)
    for table, rows in rows_by_table.items():
        fresh = []
        for row in rows:
            event_id = _as_uuid(row[EVENT_ID])
            if event_id not in taken:
                taken.add(event_id)
                fresh.append(row)
        kept[table] = fresh
    return kept


def stored_event_ids(client: Client, database: str, event_ids: Iterable[uuid.UUID],
                     own_tokens: Iterable[str]) -> set[uuid.UUID]:
    """The ids among `event_ids` already stored by an insert other than the batch's own."""
    ids = sorted(set(event_ids))
    if not ids:
        return set()
    rows = client.query(
        f"SELECT DISTINCT event_id FROM `{database}`.event_ids"
        " WHERE event_id IN {ids:Array(UUID)} AND insert_token NOT IN {tokens:Array(String)}",
        parameters={"ids": ids, "tokens": sorted(set(own_tokens))},
    ).result_rows
    return {_as_uuid(row[0]) for row in rows}


def _as_uuid(value: Any) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
