"""POST /v1/events and /v1/events/batch: JSON in, Avro on Kafka, 202 once the broker acknowledged."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from producers.deps import JsonBody, PrincipalDep, ServiceDep, set_kind
from producers.events import BATCH_ADAPTER, EVENT_ADAPTER, parse_batch, parse_event
from producers.openapi import request_body

router = APIRouter(prefix="/v1/events")


@router.post("", status_code=202, openapi_extra={"requestBody": request_body(EVENT_ADAPTER)})
async def post_event(request: Request, service: ServiceDep, principal: PrincipalDep, body: JsonBody) -> JSONResponse:
    event = parse_event(body)
    set_kind(request, event.type)
    event_ids = await service.accept(principal, [event], None)
    return JSONResponse({"event_id": event_ids[0]}, status_code=202)


@router.post("/batch", status_code=202, openapi_extra={"requestBody": request_body(BATCH_ADAPTER)})
async def post_batch(request: Request, service: ServiceDep, principal: PrincipalDep, body: JsonBody) -> JSONResponse:
    events = parse_batch(body)
    set_kind(request, "batch")
    event_ids = await service.accept(principal, events, "events")
    return JSONResponse({"accepted": len(event_ids), "event_ids": event_ids}, status_code=202)
