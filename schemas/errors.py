"""Exceptions raised by the schemas package; all derive from SchemaError."""

from __future__ import annotations


class SchemaError(Exception):
    """Base class, so callers can catch every schema/codec failure at once."""


class UnknownSchemaError(SchemaError):
    """No current schema has the requested short name."""


class UnknownFingerprintError(SchemaError):
    """The writer-schema fingerprint is neither a current nor a released schema."""


class NotSingleObjectError(SchemaError):
    """The bytes are not Avro single-object encoded (bad marker or too short)."""


class EncodeError(SchemaError):
    """A record does not match its schema, so it was not encoded."""

    def __init__(self, message: str, fields: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        # Dotted paths (e.g. "dev.lustrax.events.VideoView.user_id") of the offending fields.
        self.fields = fields


class DecodeError(SchemaError):
    """The body after a valid header is corrupt or truncated."""


class IncompatibleSchemaError(SchemaError):
    """Data written with the writer schema cannot be resolved to the reader schema."""
