"""The upload flow: a presigned PUT into the uploads bucket, then a checked completion.

State between the two calls is a manifest object next to the source in the uploads bucket, so the
API keeps no local state and any replica can complete an upload. Keys are made by the server only
(`sources/{video_id}`, `manifests/{video_id}.json`): nothing a client sends reaches a key.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from botocore.exceptions import ClientError
from pydantic import BaseModel, ConfigDict, Field

from common.errors import ApiError
from producers.text import DisplayText

VIDEO_ID_PATTERN = re.compile(r"^[a-z2-7]{24}$")
# Containers ffmpeg reads well and that browsers upload; the magic bytes are checked on completion.
ALLOWED_CONTENT_TYPES = ("video/mp4", "video/quicktime", "video/webm", "video/x-matroska")
UPLOADED_EVENT_NAMESPACE = uuid.UUID("6f1d3a5e-5c0b-4c89-9a57-3f5f0f1f7a11")

Tag = Annotated[str, DisplayText(40, pattern=r"^[\w\- ]+$")]


class UploadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: Annotated[str, DisplayText(200)]
    content_type: str
    size_bytes: int = Field(gt=0, strict=True)
    premium: bool = False
    tags: list[Tag] = Field(default_factory=list, max_length=20)


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


def new_video_id(uploader_id: str | None = None, idempotency_key: str | None = None) -> str:
    """24 lowercase base32 characters: random, or derived from (uploader, Idempotency-Key) for retries."""
    if idempotency_key is not None and uploader_id is not None:
        raw = hashlib.sha256(f"{uploader_id}\x00{idempotency_key}".encode()).digest()[:15]
    else:
        raw = secrets.token_bytes(15)
    return base64.b32encode(raw).decode().lower()


def source_key(video_id: str) -> str:
    return f"sources/{video_id}"


def manifest_key(video_id: str) -> str:
    return f"manifests/{video_id}.json"


def uploaded_event_id(video_id: str) -> uuid.UUID:
    """The same VideoUploaded event_id on every completion retry: downstream counts it once."""
    return uuid.uuid5(UPLOADED_EVENT_NAMESPACE, f"uploaded:{video_id}")


def matches_container(content_type: str, head: bytes) -> bool:
    """Magic bytes of the declared container (ISO BMFF `ftyp` box, or the EBML header)."""
    if content_type in ("video/mp4", "video/quicktime"):
        return len(head) >= 12 and head[4:8] in (b"ftyp", b"moov", b"mdat", b"wide", b"free")
    if content_type in ("video/webm", "video/x-matroska"):
        return head[:4] == b"\x1a\x45\xdf\xa3"
    return False


def read_manifest(s3: Any, bucket: str, video_id: str) -> UploadManifest | None:
    """The manifest of an upload, None if there is none (the API and `lustrax retranscode`)."""
    try:
        body = s3.get_object(Bucket=bucket, Key=manifest_key(video_id))["Body"].read()
    except ClientError as exc:
        if exc.response["Error"]["Code"] in ("NoSuchKey", "404"):
            return None
        raise
    return UploadManifest(**json.loads(body))


class UploadService:
    """S3 side of the flow (blocking boto3 calls: the API runs them in a thread)."""

    def __init__(self, s3: Any, bucket: str, max_bytes: int, url_ttl_s: int) -> None:
        self.s3 = s3
        self.bucket = bucket
        self.max_bytes = max_bytes
        self.url_ttl_s = url_ttl_s

    def validate(self, request: UploadRequest) -> None:
        if request.content_type not in ALLOWED_CONTENT_TYPES:
            raise ApiError(415, "unsupported_media_type",
                           f"content_type must be one of {', '.join(ALLOWED_CONTENT_TYPES)}", "content_type")
        if request.size_bytes > self.max_bytes:
            raise ApiError(413, "upload_too_large", f"size_bytes must be at most {self.max_bytes}", "size_bytes")

    def create(self, request: UploadRequest, uploader_id: str, idempotency_key: str | None,
               now: datetime) -> dict[str, Any]:
        self.validate(request)
        video_id = new_video_id(uploader_id, idempotency_key)
        existing = self._manifest(video_id)
        if existing is not None and (existing.uploader_id != uploader_id or existing.size_bytes != request.size_bytes
                                     or existing.content_type != request.content_type):
            raise ApiError(409, "idempotency_conflict", "this Idempotency-Key was used for a different upload",
                           "idempotency-key")
        if existing is None:
            manifest = UploadManifest(video_id, uploader_id, request.title, request.content_type, request.size_bytes,
                                      request.premium, list(request.tags), now.isoformat())
            self.s3.put_object(Bucket=self.bucket, Key=manifest_key(video_id),
                               Body=json.dumps(asdict(manifest)).encode(), ContentType="application/json")
        # Content-Type and Content-Length are signed: the PUT must send exactly the declared ones.
        url = self.s3.generate_presigned_url(
            "put_object",
            Params={"Bucket": self.bucket, "Key": source_key(video_id), "ContentType": request.content_type,
                    "ContentLength": request.size_bytes},
            ExpiresIn=self.url_ttl_s,
        )
        return {
            "video_id": video_id,
            "upload_url": url,
            "upload_headers": {"Content-Type": request.content_type},
            "expires_at": (now + timedelta(seconds=self.url_ttl_s)).astimezone(UTC).isoformat().replace("+00:00", "Z"),
        }

    def _manifest(self, video_id: str) -> UploadManifest | None:
        return read_manifest(self.s3, self.bucket, video_id)

    def check_completed(self, video_id: str, authorize: Callable[[UploadManifest], None]) -> UploadManifest:
        """The manifest of an upload whose object is there and is what was declared.

        `authorize` runs before the object is looked at, so others learn nothing about it.
        """
        manifest = self._manifest(video_id) if VIDEO_ID_PATTERN.match(video_id) else None
        if manifest is None:
            raise ApiError(404, "not_found", "no upload with this video_id", "video_id")
        authorize(manifest)
        try:
            head = self.s3.head_object(Bucket=self.bucket, Key=source_key(video_id))
        except ClientError as exc:
            if exc.response["Error"]["Code"] in ("NoSuchKey", "404", "NotFound"):
                raise ApiError(409, "upload_missing", "the file has not been uploaded yet", "video_id") from None
            raise
        if head["ContentLength"] != manifest.size_bytes:
            raise ApiError(422, "size_mismatch",
                           f"uploaded {head['ContentLength']} bytes, declared {manifest.size_bytes}", "size_bytes")
        first_bytes = self.s3.get_object(Bucket=self.bucket, Key=source_key(video_id), Range="bytes=0-63")["Body"].read()
        if not matches_container(manifest.content_type, first_bytes):
            raise ApiError(415, "unsupported_media_type",
                           f"the uploaded file is not a {manifest.content_type} container", "content_type")
        return manifest
