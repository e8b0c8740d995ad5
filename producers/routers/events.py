"""POST /v1/events and /v1/events/batch: JSON in, Avro on Kafka, 202 once the broker acknowledged."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from producers.deps import JsonBody, PrincipalDep, ServiceDep, set_kind
from producers.events import EVENT_ADAPTER, EventBatch, parse_batch, parse_event
from producers.openapi import operation

router = APIRouter(prefix="/v1/events")
# What a schema cannot say, said once for both operations.
RULES = ("`occurred_at` lies between 7 days ago and 5 minutes ahead of the server's clock; a watch tick's "
         "`position_ms` is at most its `duration_ms`; `user_id` is the token's `sub` unless the token has the "
         "`admin` or `service` role (403); likes and unlikes are rate limited per user (429, and 422 "
         "`too_many_likes` for one batch holding more of one user than the burst).")


class EventAccepted(BaseModel):
    event_id: uuid.UUID


class BatchAccepted(BaseModel):
    accepted: int
    event_ids: list[uuid.UUID]


@router.post("", **operation(202, EventAccepted, body=("Event", EVENT_ADAPTER), errors=(403, 429, 503),
                             description="The broker acknowledged the event."), description=RULES)
async def post_event(request: Request, service: ServiceDep, principal: PrincipalDep, body: JsonBody) -> JSONResponse:
    event = parse_event(body)
    set_kind(request, event.type)
    event_ids = await service.accept(principal, [event], None)
    return JSONResponse({"event_id": event_ids[0]}, status_code=202)


@router.post("/batch", **operation(202, BatchAccepted, body=EventBatch, errors=(403, 429, 503),
                                   description="The broker acknowledged every event, ids in the order sent."),
             description="All or nothing at validation (docs/ingest.md). " + RULES)
async def post_batch(request: Request, service: ServiceDep, principal: PrincipalDep, body: JsonBody) -> JSONResponse:
    events = parse_batch(body)
    set_kind(request, "batch")
    event_ids = await service.accept(principal, events, "events")
    return JSONResponse({"accepted": len(event_ids), "event_ids": event_ids}, status_code=202)
