"""Every current schema must stay backward and forward compatible with every
released version of the same record (schemas/released/vN/).

The check really resolves data: it generates records for the writer schema,
writes them, and reads them back with the reader schema via fastavro's schema
resolution. The samples cycle through every enum symbol and union branch, so
e.g. a new enum symbol is caught as a forward incompatibility.
"""

from __future__ import annotations

import copy
import io
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from fastavro import schemaless_reader, schemaless_writer
from fastavro.read import SchemaResolutionError
from fastavro.schema import parse_schema

from schemas import EVENT_SCHEMAS, RELEASED_SCHEMAS, decode, encode
from schemas.registry import Schema

BASE_TIME = datetime(2024, 1, 1, tzinfo=timezone.utc)


def sample(schema: Any, k: int) -> Any:
    """A valid value for an expanded schema; *k* selects the variant."""
    if isinstance(schema, list):  # union
        return sample(schema[k % len(schema)], k)
    if isinstance(schema, str):
        schema = {"type": schema}
    avro_type = schema["type"]
    logical_type = schema.get("logicalType")
    if logical_type == "uuid":
        return uuid.UUID(int=k + 1)
    if logical_type == "timestamp-millis":
        return BASE_TIME + timedelta(milliseconds=1_001 * k)
    if avro_type == "record":
        return {field["name"]: sample(field["type"], k + i) for i, field in enumerate(schema["fields"])}
    if avro_type == "enum":
        return schema["symbols"][k % len(schema["symbols"])]
    if avro_type == "array":
        return [sample(schema["items"], k + i) for i in range(k % 3)]
    if avro_type == "map":
        return {f"key{i}": sample(schema["values"], k + i) for i in range(k % 3)}
    if avro_type == "fixed":
        return bytes(k % 256 for _ in range(schema["size"]))
    primitives: dict[str, Any] = {
        "null": None,
        "boolean": k % 2 == 1,
        "int": 37 * k - 5,
        "long": 3_000_000_007 * k,  # beyond the int range
        "float": k + 0.5,  # exact in 32 bits
        "double": k / 3,
        "string": f"s{k}-ü",
        "bytes": bytes(range(k % 256)),
    }
    return primitives[avro_type]


def variant_count(schema: Any) -> int:
    """How many samples are needed to use every enum symbol and union branch."""
    if isinstance(schema, list):
        return max([len(schema), *(variant_count(branch) for branch in schema)])
    if not isinstance(schema, dict):
        return 1
    nested = [field["type"] for field in schema.get("fields", [])]
    nested += [schema[key] for key in ("items", "values") if key in schema]
    own = len(schema["symbols"]) if schema["type"] == "enum" else 3  # 3: array/map lengths 0..2
    return max([own, *(variant_count(child) for child in nested)])


def resolution_problem(writer: Schema, reader: Schema, label: str) -> str | None:
    """Write samples with *writer* and read them with *reader*; describe the first failure."""
    # The expanded form (named types inlined) is only read by the generator.
    expanded = parse_schema(writer, expand=True)
    reader_fields = {field["name"] for field in reader["fields"]}
    for k in range(variant_count(expanded)):
        buf = io.BytesIO()
        schemaless_writer(buf, writer, sample(expanded, k))
        buf.seek(0)
        try:
            record = schemaless_reader(buf, writer, reader)
        except SchemaResolutionError as exc:
            return f"{label}: {exc}"
        assert set(record) == reader_fields, label
    return None


RELEASED = [(version, name) for version, schemas in RELEASED_SCHEMAS.items() for name in schemas]


def test_there_is_a_released_version() -> None:
    # Without one, the parametrized compatibility tests would silently not run.
    assert RELEASED


@pytest.mark.parametrize(("version", "name"), RELEASED)
def test_released_schema_still_exists(version: str, name: str) -> None:
    assert name in EVENT_SCHEMAS, f"{name} ({version}) was released but has no current schema"


@pytest.mark.parametrize(("version", "name"), RELEASED)
def test_current_reads_released_data(version: str, name: str) -> None:
    problem = resolution_problem(
        RELEASED_SCHEMAS[version][name],
        EVENT_SCHEMAS[name],
        f"{name}: current schema cannot read data written with {version} (not backward compatible)",
    )
    if problem:
        pytest.fail(problem)


@pytest.mark.parametrize(("version", "name"), RELEASED)
def test_released_reads_current_data(version: str, name: str) -> None:
    problem = resolution_problem(
        EVENT_SCHEMAS[name],
        RELEASED_SCHEMAS[version][name],
        f"{name}: {version} cannot read data written with the current schema (not forward compatible)",
    )
    if problem:
        pytest.fail(problem)


@pytest.mark.parametrize("name", sorted(EVENT_SCHEMAS))
def test_generated_samples_round_trip_through_codec(name: str) -> None:
    # Guards the generator (its samples must be valid) and exercises the codec
    # on every enum symbol, both branches of optional fields and empty arrays.
    expanded = parse_schema(EVENT_SCHEMAS[name], expand=True)
    for k in range(variant_count(expanded)):
        record = sample(expanded, k)
        assert decode(encode(name, record)) == (name, record)


# --- the checker itself must catch incompatible changes ---------------------------


def _modified(name: str, change: str) -> Schema:
    # Derived from the frozen v1, so these tests do not move with the current schemas.
    raw = copy.deepcopy(RELEASED_SCHEMAS["v1"][name])
    fields = raw["fields"]
    if change == "new required field":
        fields.append({"name": "referrer", "type": "string"})
    elif change == "new optional field":
        fields.append({"name": "referrer", "type": ["null", "string"], "default": None})
    elif change == "removed field without default":
        raw["fields"] = [field for field in fields if field["name"] != "session_id"]
    elif change == "new enum symbol":
        action = next(field for field in fields if field["name"] == "action")
        action["type"]["symbols"] = [*action["type"]["symbols"], "SUPERLIKE"]
    elif change == "changed type":
        next(field for field in fields if field["name"] == "user_id")["type"] = "long"
    return parse_schema({k: v for k, v in raw.items() if not k.startswith("__")}, named_schemas={})


@pytest.mark.parametrize(
    ("name", "change", "backward_ok", "forward_ok"),
    [
        ("VideoView", "new required field", False, True),
        ("VideoView", "new optional field", True, True),
        ("VideoView", "removed field without default", True, False),
        ("VideoLike", "new enum symbol", True, False),
        ("VideoView", "changed type", False, False),
    ],
)
def test_checker_detects_incompatible_changes(name: str, change: str, backward_ok: bool, forward_ok: bool) -> None:
    released = RELEASED_SCHEMAS["v1"][name]
    candidate = _modified(name, change)

    backward = resolution_problem(released, candidate, f"{name} v1 -> {change}")
    forward = resolution_problem(candidate, released, f"{name} {change} -> v1")

    assert (backward is None) == backward_ok, backward
    assert (forward is None) == forward_ok, forward
    if backward is not None:
        assert backward.startswith(f"{name} v1 -> {change}: ")
