"""Avro single-object encoding of the event records (pure functions, no I/O).

Layout (Avro spec, "Single-object encoding"): the marker ``C3 01``, the 8-byte
little-endian CRC-64-AVRO fingerprint of the writer schema, then the
schemaless Avro binary body.

Logical types
    On decode, ``timestamp-millis`` fields come out as timezone-aware
    ``datetime`` objects in UTC (millisecond precision) and ``uuid`` fields as
    ``uuid.UUID``. On encode, aware datetimes or epoch-millisecond ints, and
    ``uuid.UUID`` objects or UUID strings are accepted. Naive datetimes are
    rejected, because fastavro would silently read them as local time.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any

from fastavro import schemaless_reader, schemaless_writer
from fastavro.read import SchemaResolutionError
from fastavro.schema import parse_schema
from fastavro.validation import ValidationError, validate

from .errors import (
    DecodeError,
    EncodeError,
    IncompatibleSchemaError,
    NotSingleObjectError,
)
from .registry import EVENT_SCHEMAS, fingerprint, schema_for, writer_schema_for

MAGIC = b"\xc3\x01"
HEADER_SIZE = len(MAGIC) + 8

# Computing a fingerprint walks the canonical form; do it once per schema.
_HEADERS: dict[str, bytes] = {name: MAGIC + fingerprint(s) for name, s in EVENT_SCHEMAS.items()}


def encode(schema_name: str, record: Mapping[str, Any], *, validate_record: bool = True) -> bytes:
    """Single-object encode *record* with the current schema *schema_name*.

    Raises ``EncodeError`` (naming the offending fields) if the record does not
    match the schema, so invalid data is never written. ``validate_record=False``
    is for hot paths whose records are built from models that were validated
    already (the ingest API: a property test checks that every record it can
    build passes this validation); it skips two thirds of the cost.
    """
    schema = schema_for(schema_name)
    if not validate_record:
        return _write(schema_name, schema, record)
    try:
        validate(record, schema, raise_errors=True)
    except ValidationError as exc:
        fields = tuple(dict.fromkeys(err.field for err in exc.errors if err.field))
        details = "; ".join(str(err) for err in exc.errors)
        raise EncodeError(f"invalid {schema_name} record: {details}", fields) from exc

    # fastavro's validation lets these through, but they would be lost or
    # corrupted on the way (dropped fields, local-time shift, undecodable uuid).
    # "__named_schemas" is where fastavro keeps a parsed schema's named types.
    problems = dict(_extra_checks(record, schema, schema["__named_schemas"], str(schema["name"])))
    if problems:
        details = "; ".join(f"{path}: {msg}" for path, msg in problems.items())
        raise EncodeError(f"invalid {schema_name} record: {details}", tuple(problems))

    return _write(schema_name, schema, record)


def _write(schema_name: str, schema: Any, record: Mapping[str, Any]) -> bytes:
    buf = io.BytesIO()
    buf.write(_HEADERS[schema_name])
    schemaless_writer(buf, schema, record)
    return buf.getvalue()


def decode(data: bytes, reader_schema_name: str | None = None, *,
           logical_types: bool = True) -> tuple[str, dict[str, Any]]:
    """Decode single-object encoded *data* into ``(schema short name, record)``.

    The writer schema is found by fingerprint among the current and released
    schemas. With *reader_schema_name*, the record is resolved (Avro schema
    resolution) to that current schema and its name is returned; otherwise the
    record is returned as written, with the writer schema's name.
    ``logical_types=False`` leaves ``timestamp-millis`` fields as epoch
    milliseconds and ``uuid`` fields as strings: for hot paths that need
    neither (the heat worker), it skips a third of the cost.
    """
    if len(data) < HEADER_SIZE or data[: len(MAGIC)] != MAGIC:
        raise NotSingleObjectError(
            f"expected the {MAGIC.hex()} marker and an 8-byte fingerprint, got {bytes(data[:HEADER_SIZE]).hex()!r}"
        )
    writer_name, writer = writer_schema_for(data[len(MAGIC) : HEADER_SIZE])
    reader = schema_for(reader_schema_name) if reader_schema_name is not None else None
    if not logical_types:
        writer, reader = _plain(writer), None if reader is None else _plain(reader)

    buf = io.BytesIO(data)
    buf.seek(HEADER_SIZE)
    try:
        record = schemaless_reader(buf, writer, reader)
    except SchemaResolutionError as exc:
        raise IncompatibleSchemaError(f"cannot read {writer_name} data as {reader_schema_name}: {exc}") from exc
    # What fastavro raises on truncated or garbled bodies (ValueError covers
    # bad UTF-8 and malformed UUIDs).
    except (EOFError, IndexError, ValueError, OverflowError) as exc:
        raise DecodeError(f"corrupt {writer_name} body: {exc!r}") from exc
    if buf.tell() != len(data):
        raise DecodeError(f"{len(data) - buf.tell()} trailing bytes after the {writer_name} body")
    return reader_schema_name or writer_name, record


# Parsed schemas live as long as the process, so their id() is a stable cache key.
_PLAIN_SCHEMAS: dict[int, Any] = {}


def _plain(schema: Any) -> Any:
    """The parsed schema without its logical types (same binary layout)."""
    plain = _PLAIN_SCHEMAS.get(id(schema))
    if plain is None:
        plain = _PLAIN_SCHEMAS[id(schema)] = parse_schema(_strip_logical(schema), named_schemas={})
    return plain


def _strip_logical(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {k: _strip_logical(v) for k, v in schema.items() if k != "logicalType" and not k.startswith("__")}
    if isinstance(schema, list):
        return [_strip_logical(item) for item in schema]
    return schema


_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
# Parsed schemas live as long as the process, so their id() is a stable cache key.
_RECORD_PLANS: dict[int, tuple[frozenset[str], tuple[tuple[str, Any], ...]]] = {}


def _record_plan(schema: dict[str, Any]) -> tuple[frozenset[str], tuple[tuple[str, Any], ...]]:
    """A record's field names, and the fields worth descending into (not plain primitives).

    Computed once per schema: encode() sits on the ingest hot path.
    """
    plan = _RECORD_PLANS.get(id(schema))
    if plan is None:
        fields = schema["fields"]
        deep = tuple((f["name"], f["type"]) for f in fields
                     if not (isinstance(f["type"], str) and f["type"] in _PRIMITIVES))
        plan = _RECORD_PLANS[id(schema)] = (frozenset(f["name"] for f in fields), deep)
    return plan


def _extra_checks(datum: Any, schema: Any, named: dict[str, Any], path: str) -> Iterator[tuple[str, str]]:
    """Yield ``(field path, problem)`` for what fastavro's validation misses.

    Runs after ``validate``, so *datum* already has the right shape.
    """
    if isinstance(schema, str):
        if schema not in named:
            return  # a primitive type
        schema = named[schema]
    if isinstance(schema, list):
        branches = [branch for branch in schema if branch != "null"]
        # Only optional unions (["null", X]) are descended into: with several
        # non-null branches, which one fastavro writes is ambiguous.
        if datum is not None and len(branches) == 1:
            yield from _extra_checks(datum, branches[0], named, path)
        return

    logical_type = schema.get("logicalType")
    if logical_type == "timestamp-millis" and isinstance(datum, datetime) and datum.utcoffset() is None:
        yield path, "naive datetime; give a timezone-aware one"
    elif logical_type == "uuid" and isinstance(datum, str):
        try:
            uuid.UUID(datum)
        except ValueError:
            yield path, f"{datum!r} is not a UUID"

    avro_type = schema["type"]
    if avro_type == "record":
        names, deep = _record_plan(schema)
        for key in sorted(datum.keys() - names, key=str):
            yield f"{path}.{key}", "not a field of the schema"
        for name, field_type in deep:
            if name in datum:
                yield from _extra_checks(datum[name], field_type, named, f"{path}.{name}")
    elif avro_type == "array":
        for index, item in enumerate(datum):
            yield from _extra_checks(item, schema["items"], named, f"{path}[{index}]")
    elif avro_type == "map":
        for key, value in datum.items():
            yield from _extra_checks(value, schema["values"], named, f"{path}[{key!r}]")
