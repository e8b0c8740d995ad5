"""POST /v1/uploads (a presigned PUT) and /v1/uploads/{video_id}/complete (checked, then VideoUploaded)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import TypeAdapter, ValidationError

from common.errors import ApiError
from common.tokens import Principal, authorize_user
from infra.kafka.producer import OutgoingMessage
from infra.s3.uploads import uploaded_event_id, uploaded_record
from producers.deps import JsonBody, ServiceDep, principal_of
from producers.events import PRODUCER_NAME, validation_error
from producers.openapi import request_body
from producers.uploads import UploadRequest
from schemas.codec import encode
from schemas.topics import TOPIC_BY_SCHEMA

router = APIRouter(prefix="/v1/uploads")


@router.post("", status_code=201, openapi_extra={"requestBody": request_body(TypeAdapter(UploadRequest))})
async def post_upload(request: Request, service: ServiceDep,
                      principal: Annotated[Principal, principal_of("upload")], body: JsonBody) -> JSONResponse:
    try:
        upload = UploadRequest.model_validate_json(body)
    except ValidationError as exc:
        raise validation_error(exc) from None
    key = request.headers.get("idempotency-key")
    if key is not None and not (1 <= len(key) <= 128):
        raise ApiError(422, "invalid_value", "Idempotency-Key must be 1 to 128 characters", "idempotency-key")
    ticket = await service.storage(service.uploads.create, upload, principal.user_id, key, datetime.now(UTC))
    return JSONResponse(ticket, status_code=201)


@router.post("/{video_id}/complete", status_code=202)
async def complete_upload(video_id: str, service: ServiceDep,
                          principal: Annotated[Principal, principal_of("upload_complete")]) -> JSONResponse:
    manifest = await service.storage(service.uploads.check_completed, video_id,
                                     lambda m: authorize_user(principal, m.uploader_id, "video_id"))
    event_id = uploaded_event_id(video_id)
    record = uploaded_record(manifest, service.uploads.bucket, PRODUCER_NAME, event_id)
    topic = TOPIC_BY_SCHEMA["VideoUploaded"].name
    await service.producer.produce_all([OutgoingMessage(topic, video_id.encode(), encode("VideoUploaded", record))])
    service.metrics.accepted.labels("video_uploaded").inc()
    return JSONResponse({"video_id": video_id, "event_id": str(event_id), "state": "uploaded"}, status_code=202)
