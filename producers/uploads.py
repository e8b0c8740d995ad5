"""The upload flow: a presigned PUT into the uploads bucket, then a checked completion.

State between the two calls is the upload's manifest in the uploads bucket (infra/s3/uploads.py),
so the API keeps no local state and any replica can complete an upload. Keys are made by the
server only (infra/s3/layout.py): nothing a client sends reaches a key.

The bytes a transcode reads are the bytes completion checked: the PUT lands in `incoming/{id}`;
completion checks that object at one ETag and copies exactly that version (CopySourceIfMatch) to
`sources/{id}`, which no presigned URL names. A later PUT with the still-valid URL changes only
`incoming/{id}`, which nothing reads again.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from botocore.exceptions import ClientError
from pydantic import BaseModel, ConfigDict, Field

from common.errors import ApiError
from infra.s3.buckets import head_object
from infra.s3.layout import incoming_key, is_video_id, new_video_id, source_key
from infra.s3.uploads import UploadManifest, read_manifest, write_manifest
from producers.events import JsonInteger
from producers.text import DisplayText

# Containers ffmpeg reads well and that browsers upload; the magic bytes are checked on completion.
ALLOWED_CONTENT_TYPES = ("video/mp4", "video/quicktime", "video/webm", "video/x-matroska")

Tag = Annotated[str, DisplayText(40, charset=r"\w\-")]


class UploadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: Annotated[str, DisplayText(200)]
    # Checked by UploadService.validate (415 rather than 422), so only documented as an enum here.
    content_type: str = Field(json_schema_extra={"enum": list(ALLOWED_CONTENT_TYPES)})
    # Its maximum is LUSTRAX_UPLOAD_MAX_BYTES (413): producers/routers/uploads.py documents it.
    size_bytes: JsonInteger = Field(gt=0, strict=True)
    premium: bool = Field(default=False, strict=True)  # `0` is no boolean
    tags: list[Tag] = Field(default_factory=list, max_length=20)


def matches_container(content_type: str, head: bytes) -> bool:
    """Magic bytes of the declared container (ISO BMFF `ftyp` box, or the EBML header)."""
    if content_type in ("video/mp4", "video/quicktime"):
        return len(head) >= 12 and head[4:8] in (b"ftyp", b"moov", b"mdat", b"wide", b"free")
    if content_type in ("video/webm", "video/x-matroska"):
        return head[:4] == b"\x1a\x45\xdf\xa3"
    return False


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
            write_manifest(self.s3, self.bucket, manifest)
        # Content-Type and Content-Length are signed: the PUT must send exactly the declared ones.
        url = self.s3.generate_presigned_url(
            "put_object",
            Params={"Bucket": self.bucket, "Key": incoming_key(video_id), "ContentType": request.content_type,
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
        """The manifest of an upload whose checked source is in place at `sources/{id}`.

        `authorize` runs before the object is looked at, so others learn nothing about it. A retry
        after success finds the source in place and answers the same (nothing is copied again).
        """
        manifest = self._manifest(video_id) if is_video_id(video_id) else None
        if manifest is None:
            raise ApiError(404, "not_found", "no upload with this video_id", "video_id")
        authorize(manifest)
        if head_object(self.s3, self.bucket, source_key(video_id)) is not None:
            return manifest  # completed before: sources/{id} holds the bytes checked then
        head = head_object(self.s3, self.bucket, incoming_key(video_id))
        if head is None:
            raise ApiError(409, "upload_missing", "the file has not been uploaded yet", "video_id")
        etag = head["ETag"]
        if head["ContentLength"] != manifest.size_bytes:
            raise ApiError(422, "size_mismatch",
                           f"uploaded {head['ContentLength']} bytes, declared {manifest.size_bytes}", "size_bytes")
        try:
            first_bytes = self.s3.get_object(Bucket=self.bucket, Key=incoming_key(video_id), Range="bytes=0-63",
                                             IfMatch=etag)["Body"].read()
            if not matches_container(manifest.content_type, first_bytes):
                raise ApiError(415, "unsupported_media_type",
                               f"the uploaded file is not a {manifest.content_type} container", "content_type")
            # Exactly the version checked above, or nothing.
            self.s3.copy_object(Bucket=self.bucket, Key=source_key(video_id), CopySourceIfMatch=etag,
                                CopySource={"Bucket": self.bucket, "Key": incoming_key(video_id)},
                                ContentType=manifest.content_type, MetadataDirective="REPLACE")
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("PreconditionFailed", "412"):
                raise ApiError(409, "upload_changed", "the file was replaced while it was checked; complete again",
                               "video_id") from None
            raise
        self.s3.delete_object(Bucket=self.bucket, Key=incoming_key(video_id))  # space; the URL may still PUT
        return manifest
