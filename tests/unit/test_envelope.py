"""The one record constructor: every produced event has a complete envelope."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from schemas.codec import decode, encode
from schemas.envelope import ENVELOPE_FIELDS, new_record, schema_version
from schemas.errors import SchemaError
from schemas.registry import EVENT_SCHEMAS


@pytest.mark.parametrize("schema", sorted(EVENT_SCHEMAS))
def test_every_event_schema_has_the_envelope_and_a_version(schema: str) -> None:
    names = [field["name"] for field in EVENT_SCHEMAS[schema]["fields"]]
    assert names[:4] == list(ENVELOPE_FIELDS)
    assert schema_version(schema) >= 1


def test_new_record_fills_the_envelope_and_keeps_given_ids() -> None:
    record = new_record("LikeUpdate", "heat-score", {"video_id": "v", "like_count": 3, "delta": 1})
    assert isinstance(record["event_id"], uuid.UUID) and record["occurred_at"].tzinfo is not None
    assert (record["producer"], record["schema_version"]) == ("heat-score", schema_version("LikeUpdate"))
    assert decode(encode("LikeUpdate", record))[1]["like_count"] == 3

    fixed, at = uuid.uuid4(), datetime(2026, 1, 1, tzinfo=UTC)
    again = new_record("LikeUpdate", "x", {"video_id": "v", "like_count": 3, "delta": 1}, event_id=fixed,
                       occurred_at=at)
    assert (again["event_id"], again["occurred_at"]) == (fixed, at)
    assert new_record("LikeUpdate", "x", {"video_id": "v", "like_count": 1, "delta": 1})["event_id"] != fixed


def test_callers_cannot_forge_the_envelope() -> None:
    with pytest.raises(SchemaError, match="envelope"):
        new_record("LikeUpdate", "x", {"video_id": "v", "like_count": 1, "delta": 1, "schema_version": 9})
