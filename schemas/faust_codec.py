"""Faust codecs that (de)serialize event dicts with the Avro single-object codec.

Faust is imported only here, so the rest of the package works without it.
"""

from __future__ import annotations

from typing import Any

from faust.serializers import codecs

from .codec import decode, encode
from .registry import EVENT_SCHEMAS


class AvroSingleObjectCodec(codecs.Codec):
    """Encode dicts with the current schema *schema_name*; decode any known
    writer version resolved to that schema."""

    # Faust's ``clone`` (used by ``codec | other``) calls
    # ``type(self)(children=..., **self.kwargs)``, so the schema name must be a kwarg.
    def __init__(self, schema_name: str, children: tuple[codecs.CodecT, ...] | None = None) -> None:
        super().__init__(children=children, schema_name=schema_name)
        self.schema_name = schema_name

    def _dumps(self, obj: Any) -> bytes:
        # faust.Record.to_representation() adds this metadata key; it is not an
        # event field, and the codec rejects unknown fields.
        record = {key: value for key, value in obj.items() if key != "__faust"}
        return encode(self.schema_name, record)

    def _loads(self, s: bytes) -> dict[str, Any]:
        _, record = decode(s, reader_schema_name=self.schema_name)
        return record


def register_faust_codecs() -> None:
    """Register ``avro-<SchemaName>`` codecs for every schema with Faust.

    Idempotent: registering again just replaces each entry with an equal codec.
    """
    for name in EVENT_SCHEMAS:
        codecs.register(f"avro-{name}", AvroSingleObjectCodec(name))
