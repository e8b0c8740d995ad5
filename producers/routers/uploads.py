"""POST /v1/uploads (a presigned PUT) and /v1/uploads/{video_id}/complete (checked, then VideoUploaded)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Header
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

from common.errors import ApiError
from common.tokens import Principal, authorize_user
from infra.kafka.producer import OutgoingMessage
from infra.s3.uploads import uploaded_event_id, uploaded_record
from producers.deps import JsonBody, ServiceDep, VideoIdPath, principal_of
from producers.events import PRODUCER_NAME, validation_error
from producers.openapi import bound_by_setting, operation
from producers.service import IngestService
from producers.uploads import UploadRequest
from schemas.codec import encode
from schemas.topics import TOPIC_BY_SCHEMA

router = APIRouter(prefix="/v1/uploads")
bound_by_setting("UploadRequest", "size_bytes", "maximum", "upload_max_bytes")
# Visible ASCII: what survives HTTP's trimming of a header value unchanged.
IdempotencyKey = Annotated[str | None, Header(min_length=1, max_length=128, pattern=r"^[!-~]+$",
                                              description="Same key, same upload (the same video_id and URL).")]


class UploadTicket(BaseModel):
    video_id: str
    upload_url: str
    upload_headers: dict[str, str]
    expires_at: datetime


class UploadCompleted(BaseModel):
    video_id: str
    event_id: str
    state: str


def refuse_terminated(service: IngestService, principal: Principal) -> None:
    """A terminated account (the repeat-infringer policy, docs/trust-and-safety.md) uploads nothing."""
    if service.cases.is_terminated(principal.user_id):
        raise ApiError(403, "account_terminated", "this account was terminated under the repeat-infringer policy",
                       "authorization")


@router.post("", **operation(201, UploadTicket, body=UploadRequest, errors=(403, 409, 503),
                             description="A presigned PUT of exactly the declared type and size."))
async def post_upload(service: ServiceDep, principal: Annotated[Principal, principal_of("upload")], body: JsonBody,
                      idempotency_key: IdempotencyKey = None) -> JSONResponse:
    refuse_terminated(service, principal)
    try:
        upload = UploadRequest.model_validate_json(body)
    except ValidationError as exc:
        raise validation_error(exc) from None
    key = idempotency_key
    ticket = await service.storage(service.uploads.create, upload, principal.user_id, key, datetime.now(UTC))
    return JSONResponse(ticket, status_code=201)


@router.post("/{video_id}/complete", **operation(
    202, UploadCompleted, errors=(403, 404, 409, 415, 422, 503),
    description="The uploaded file was checked and VideoUploaded is on the broker."))
async def complete_upload(video_id: VideoIdPath, service: ServiceDep,
                          principal: Annotated[Principal, principal_of("upload_complete")]) -> JSONResponse:
    refuse_terminated(service, principal)
    manifest = await service.storage(service.uploads.check_completed, video_id,
                                     lambda m: authorize_user(principal, m.uploader_id, "video_id"))
    event_id = uploaded_event_id(video_id)
    record = uploaded_record(manifest, service.uploads.bucket, PRODUCER_NAME, event_id)
    topic = TOPIC_BY_SCHEMA["VideoUploaded"].name
    await service.producer.produce_all([OutgoingMessage(topic, video_id.encode(), encode("VideoUploaded", record))])
    service.metrics.accepted.labels("video_uploaded").inc()
    return JSONResponse({"video_id": video_id, "event_id": str(event_id), "state": "uploaded"}, status_code=202)
