"""The event envelope: the one constructor of every event record the project produces.

Every record starts with the same four fields (schemas/avro/*.avsc): `event_id` (the idempotency
key downstream deduplicates by), `occurred_at`, `producer` (which component made it) and
`schema_version` (the version of the record's schema the producer was built against: the default
of that field in the current schema file, so bumping a schema bumps every producer of it).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import cache
from typing import Any

from .errors import SchemaError
from .registry import schema_for

ENVELOPE_FIELDS = ("event_id", "occurred_at", "producer", "schema_version")


@cache
def schema_version(schema: str) -> int:
    """The version the current schema declares (its `schema_version` field's default)."""
    for field in schema_for(schema)["fields"]:
        if field["name"] == "schema_version":
            return int(field["default"])
    raise SchemaError(f"{schema} has no schema_version field: it is not an event schema")


def new_record(schema: str, producer: str, fields: Mapping[str, Any], *, event_id: uuid.UUID | None = None,
               occurred_at: datetime | None = None) -> dict[str, Any]:
    """`fields` behind a complete envelope; a new random event_id and the current time unless given."""
    clash = set(ENVELOPE_FIELDS) & set(fields)
    if clash:
        raise SchemaError(f"envelope fields are set by new_record, not by the caller: {sorted(clash)}")
    return {
        "event_id": event_id or uuid.uuid4(),
        "occurred_at": occurred_at or datetime.now(UTC),
        "producer": producer,
        "schema_version": schema_version(schema),
        **fields,
    }
