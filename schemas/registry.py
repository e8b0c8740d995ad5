"""Load the event schemas (``.avsc``) that ship with this package.

Current schemas live in ``avro/``. Every released version N is frozen under
``released/vN/``, so data written by producers built against an older version
can still be decoded, and the evolution tests can check compatibility.
Each ``.avsc`` file holds one self-contained record (envelope fields inlined),
named after the file.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from fastavro.schema import SchemaParseException, parse_schema, to_parsing_canonical_form
from fastavro.schema import fingerprint as hex_fingerprint

from .errors import SchemaError, UnknownFingerprintError, UnknownSchemaError

#: A schema as returned by ``fastavro.schema.parse_schema``.
Schema = dict[str, Any]

SCHEMA_DIR = Path(__file__).parent / "avro"
RELEASED_DIR = Path(__file__).parent / "released"
_VERSION_DIR = re.compile(r"v([1-9][0-9]*)")


def short_name(schema: Schema) -> str:
    """Record name without namespace, e.g. ``"VideoView"``."""
    return str(schema["name"]).rsplit(".", 1)[-1]


def load_schema_dir(directory: Path) -> dict[str, Schema]:
    """Parse every ``*.avsc`` in *directory*, keyed by the record's short name."""
    schemas: dict[str, Schema] = {}
    for path in sorted(directory.glob("*.avsc")):
        try:
            # A fresh named-type table per file: files are self-contained, and
            # released copies define the same names as the current ones.
            parsed = parse_schema(json.loads(path.read_text(encoding="utf-8")), named_schemas={})
        except (ValueError, SchemaParseException) as exc:  # JSONDecodeError/UnknownType are ValueErrors
            raise SchemaError(f"{path}: {exc}") from exc
        name = short_name(parsed)
        if name != path.stem:
            # The file name is how humans find a schema; keep it truthful.
            raise SchemaError(f"{path}: record is named {name!r}, expected {path.stem!r}")
        schemas[name] = parsed
    if not schemas:
        # Most likely the package was installed without its data files.
        raise SchemaError(f"no .avsc files in {directory}")
    return schemas


def load_released(root: Path) -> dict[str, dict[str, Schema]]:
    """Load ``root/vN/*.avsc`` as ``{"vN": {short name: schema}}``, oldest first."""
    versions: list[tuple[int, Path]] = []
    for directory in root.iterdir():
        match = _VERSION_DIR.fullmatch(directory.name)
        if not directory.is_dir() or match is None:
            raise SchemaError(f"{directory}: released versions must be directories named v<N>")
        versions.append((int(match.group(1)), directory))
    # Numeric order, so that v10 comes after v9.
    return {directory.name: load_schema_dir(directory) for _, directory in sorted(versions)}


def fingerprint(schema: Schema) -> bytes:
    """CRC-64-AVRO fingerprint of the schema's Parsing Canonical Form (8 bytes, little-endian)."""
    # fastavro returns the hex of the little-endian bytes (the Java byte order).
    return bytes.fromhex(hex_fingerprint(to_parsing_canonical_form(schema), "CRC-64-AVRO"))


EVENT_SCHEMAS: dict[str, Schema] = load_schema_dir(SCHEMA_DIR)
RELEASED_SCHEMAS: dict[str, dict[str, Schema]] = load_released(RELEASED_DIR)


def _writer_table() -> dict[bytes, tuple[str, Schema]]:
    table: dict[bytes, tuple[str, Schema]] = {}
    # Oldest first, current last: schemas with the same canonical form have the
    # same binary layout, and the newest one carries the current docs, defaults
    # and logical types (none of which are part of the canonical form).
    for schemas in [*RELEASED_SCHEMAS.values(), EVENT_SCHEMAS]:
        for name, schema in schemas.items():
            table[fingerprint(schema)] = (name, schema)
    return table


_WRITER_SCHEMAS = _writer_table()


def schema_for(name: str) -> Schema:
    """Current parsed schema for a record short name, e.g. ``"VideoView"``."""
    try:
        return EVENT_SCHEMAS[name]
    except KeyError:
        raise UnknownSchemaError(f"unknown schema {name!r}; known: {sorted(EVENT_SCHEMAS)}") from None


def writer_schema_for(schema_fingerprint: bytes) -> tuple[str, Schema]:
    """``(short name, schema)`` of the current or released schema with this fingerprint."""
    try:
        return _WRITER_SCHEMAS[bytes(schema_fingerprint)]
    except KeyError:
        raise UnknownFingerprintError(
            f"no current or released schema has fingerprint {bytes(schema_fingerprint).hex()}"
        ) from None
