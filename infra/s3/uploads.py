"""An upload's manifest in the uploads bucket, and the VideoUploaded event made from it.

The manifest is what the uploader declared when asking for the presigned PUT; it is the state
between `POST /v1/uploads` and `.../complete` (the API keeps none), and what `lustrax retranscode`
announces again. VideoUploaded is built here only, for both.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict, dataclass
from typing import Any

from infra.s3.buckets import read_object
from infra.s3.layout import manifest_key, source_key
from schemas.envelope import new_record

# The same VideoUploaded event_id on every completion retry: downstream counts it once.
UPLOADED_EVENT_NAMESPACE = uuid.UUID("6f1d3a5e-5c0b-4c89-9a57-3f5f0f1f7a11")


@dataclass(frozen=True)
class UploadManifest:
    video_id: str
    uploader_id: str
    title: str
    content_type: str
    size_bytes: int
    premium: bool
    tags: list[str]
    created_at: str


def uploaded_event_id(video_id: str) -> uuid.UUID:
    return uuid.uuid5(UPLOADED_EVENT_NAMESPACE, f"uploaded:{video_id}")


def uploaded_record(manifest: UploadManifest, bucket: str, producer: str,
                    event_id: uuid.UUID | None = None) -> dict[str, Any]:
    """The VideoUploaded record of a checked upload; its source is the immutable `sources/{id}`."""
    return new_record("VideoUploaded", producer, {
        "video_id": manifest.video_id, "uploader_id": manifest.uploader_id, "title": manifest.title,
        "content_type": manifest.content_type, "size_bytes": manifest.size_bytes,
        "source_bucket": bucket, "source_key": source_key(manifest.video_id),
        "premium": manifest.premium, "tags": list(manifest.tags),
    }, event_id=event_id)


def write_manifest(s3: Any, bucket: str, manifest: UploadManifest) -> None:
    s3.put_object(Bucket=bucket, Key=manifest_key(manifest.video_id), Body=json.dumps(asdict(manifest)).encode(),
                  ContentType="application/json")


def read_manifest(s3: Any, bucket: str, video_id: str) -> UploadManifest | None:
    """The manifest of an upload, None if there is none."""
    body = read_object(s3, bucket, manifest_key(video_id))
    return None if body is None else UploadManifest(**json.loads(body))
