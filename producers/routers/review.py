"""The human review queue (admins): GET /v1/admin/review and POST /v1/admin/review/{video_id}.

The queue is the catalog's `in_review` videos, oldest request first. A decision runs the moderation
step the composition root injected (IngestService.reviewer: processors/moderation/review.py
`human_decision`, which records it and, on approval, publishes the ladder), then this API produces
the events it returns and folds them into its own projection, so the answer and this replica's
next read already show the new state.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict

from catalog.fold import TAKEN_DOWN, public_view, review_view
from common.errors import ApiError
from common.tokens import Principal
from producers.deps import JsonBody, ServiceDep, VideoIdPath, principal_of, require_admin
from producers.events import parse_body
from producers.openapi import operation
from producers.routers.catalog import Video
from producers.text import DisplayText

router = APIRouter(prefix="/v1/admin/review")
MAX_LIMIT = 200


class ReviewDecision(BaseModel):
    # A rejection needs a reason: checked by hand (422 naming `reason`), stated to the document here.
    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "if": {"properties": {"decision": {"const": "reject"}}, "required": ["decision"]},
        "then": {"required": ["reason"], "properties": {"reason": {"type": "string"}}}})
    decision: Literal["approve", "reject"]
    reason: Annotated[str, DisplayText(500)] | None = None


class Label(BaseModel):
    name: str
    confidence: float


class ReviewItem(BaseModel):
    video_id: str
    title: str | None
    uploader_id: str | None
    queued_at: datetime | None
    priority: str
    reasons: list[str]
    premium: bool
    labels: list[Label]


class ReviewQueue(BaseModel):
    items: list[ReviewItem]


def _admin(principal: Principal) -> Principal:
    return require_admin(principal, "the review queue")


@router.get("", **operation(200, ReviewQueue, errors=(403,), description="The queue, oldest request first."))
async def review_queue(service: ServiceDep, principal: Annotated[Principal, principal_of("review")],
                       limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50) -> dict[str, Any]:
    _admin(principal)
    return {"items": [review_view(record) for record in service.catalog.review_queue(limit)]}


@router.post("/{video_id}", **operation(200, Video, body=ReviewDecision, errors=(403, 404, 409, 503),
                                         description="The decision is recorded: the video's new record."))
async def decide(video_id: VideoIdPath, service: ServiceDep, principal: Annotated[Principal, principal_of("review")],
                 body: JsonBody) -> dict[str, Any]:
    _admin(principal)
    decision = parse_body(ReviewDecision, body)
    if decision.decision == "reject" and decision.reason is None:
        raise ApiError(422, "missing_field", "a rejection needs a reason", "reason")
    current = service.catalog.get(video_id)
    if current is None:
        raise ApiError(404, "not_found", "no video with this video_id", "video_id")
    if current.state == TAKEN_DOWN:  # an approval would copy it to the public bucket while a case keeps it down
        raise ApiError(409, "taken_down", "the video is taken down (docs/trust-and-safety.md)", "video_id")
    if service.reviewer is None:
        raise ApiError(503, "review_unavailable", "this API process makes no review decisions", None)
    # Blocking S3 work (the decision record, the ladder copies): off the loop; S3 trouble is a 503.
    events = await service.storage(service.reviewer, video_id, decision.decision == "approve",
                                   principal.user_id, decision.reason)
    await service.produce_records(events)
    service.catalog.apply_all(events)
    record = service.catalog.get(video_id)
    assert record is not None
    return public_view(record)
