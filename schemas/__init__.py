"""Avro schemas and single-object codec for LustraX Stream events.

The Faust integration lives in ``schemas.faust_codec`` and is not imported
here, so that using the codec does not require Faust.
"""

from .codec import decode, encode
from .errors import (
    DecodeError,
    EncodeError,
    IncompatibleSchemaError,
    NotSingleObjectError,
    SchemaError,
    UnknownFingerprintError,
    UnknownSchemaError,
)
from .registry import (
    EVENT_SCHEMAS,
    RELEASED_SCHEMAS,
    fingerprint,
    schema_for,
    writer_schema_for,
)

__all__ = [
    "EVENT_SCHEMAS",
    "RELEASED_SCHEMAS",
    "DecodeError",
    "EncodeError",
    "IncompatibleSchemaError",
    "NotSingleObjectError",
    "SchemaError",
    "UnknownFingerprintError",
    "UnknownSchemaError",
    "decode",
    "encode",
    "fingerprint",
    "schema_for",
    "writer_schema_for",
]
