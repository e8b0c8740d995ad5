"""Complaints about a video (a depicted person, an underage report, ...) and the admins' queue.

POST /v1/complaints needs no account (rate-limited per client IP, like DMCA notices). A reason in
LUSTRAX_COMPLAINT_HIDE_REASONS hides the video at once (the takedown processor takes it down
pending review); every complaint is due LUSTRAX_COMPLAINT_BUSINESS_DAYS business days after it
arrived, and the queue flags those past due (also `lustrax_complaints_overdue` on /metrics).
An admin upholds (the video stays down, or is taken down) or dismisses (a hidden video is restored).
"""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from catalog.cases import Case, add_business_days, case_status, is_overdue
from catalog.fold import PUBLISHED, TAKEN_DOWN, iso_time
from common.errors import ApiError
from common.tokens import Principal
from producers.deps import JsonBody, ServiceDep, client_ip, principal_of, require_admin, set_kind
from producers.events import PRODUCER_NAME, parse_body
from producers.openapi import operation
from producers.text import DisplayText
from schemas.envelope import new_record
from schemas.registry import schema_for

router = APIRouter()
MAX_LIMIT = 200
COMPLAINT_ID_PATTERN = r"^cmp_[a-z0-9]{20}$"
REASONS = tuple(symbol.lower() for symbol in next(
    f["type"]["symbols"] for f in schema_for("ComplaintReceived")["fields"] if f["name"] == "reason"))
ComplaintIdPath = Annotated[str, Path(description="A complaint id this API issued (any other string: 404).",
                                      json_schema_extra={"pattern": COMPLAINT_ID_PATTERN})]


class ComplaintRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    video_id: Annotated[str, Field(max_length=64)]
    reason: Literal[REASONS]  # type: ignore[valid-type]
    contact: Annotated[str, DisplayText(320)]
    details: Annotated[str, DisplayText(1000)] | None = None


class ComplaintDecision(BaseModel):
    model_config = ConfigDict(extra="forbid")
    decision: Literal["uphold", "dismiss"]
    note: Annotated[str, DisplayText(500)] | None = None


class ComplaintItem(BaseModel):
    complaint_id: str
    video_id: str
    reason: str
    contact: str
    details: str | None
    status: str
    hidden: bool
    received_at: datetime
    due_at: datetime
    overdue: bool
    decided_at: datetime | None
    decided_by: str | None


class ComplaintQueue(BaseModel):
    items: list[ComplaintItem]
    overdue: int


class ComplaintAccepted(BaseModel):
    complaint_id: str
    status: str
    hidden: bool
    due_at: datetime


def complaint_view(case: Case, now: datetime) -> dict[str, Any]:
    complaint, resolution = case.complaint, case.resolution
    assert complaint is not None
    return {"complaint_id": case.case_id, "video_id": case.video_id, "reason": str(complaint["reason"]).lower(),
            "contact": complaint["contact"], "details": complaint["details"], "status": case_status(case),
            "hidden": bool(complaint["hide"]), "received_at": iso_time(complaint["occurred_at"]),
            "due_at": iso_time(complaint["due_at"]), "overdue": is_overdue(case, now),
            "decided_at": iso_time(resolution["occurred_at"]) if resolution else None,
            "decided_by": resolution["admin_id"] if resolution else None}


@router.post("/v1/complaints", summary="Report a video (depicted without consent, underage, other)",
             **operation(201, ComplaintAccepted, body=ComplaintRequest, errors=(429, 503),
                         description="Recorded; a depicted-without-consent or underage report hides the video at once "
                                     "until an admin decides. 422 names every missing field and an unknown video."))
async def post_complaint(request: Request, service: ServiceDep, body: JsonBody) -> JSONResponse:
    set_kind(request, "complaint")
    service.limit_reports(client_ip(request))
    complaint = parse_body(ComplaintRequest, body, every=True)
    record = service.catalog.get(complaint.video_id)
    if record is None or record.state not in (PUBLISHED, TAKEN_DOWN):
        raise ApiError(422, "unknown_video", "no public video with this video_id", "video_id")
    settings, now = service.settings, service.trust_now()
    complaint_id = "cmp_" + "".join(secrets.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(20))
    hide = complaint.reason in settings.complaint_hide_reason_set
    due_at = add_business_days(now, settings.complaint_business_days, settings.trust_holiday_dates)
    event = new_record("ComplaintReceived", PRODUCER_NAME, {
        "video_id": complaint.video_id, "complaint_id": complaint_id, "reason": complaint.reason.upper(),
        "contact": complaint.contact, "details": complaint.details, "uploader_id": record.uploader_id,
        "hide": hide, "due_at": due_at})
    await service.produce_records([("ComplaintReceived", event)])
    service.cases.apply("ComplaintReceived", event)
    return JSONResponse({"complaint_id": complaint_id, "status": "open", "hidden": hide, "due_at": iso_time(due_at)},
                        status_code=201)


@router.get("/v1/admin/complaints", summary="The complaint queue, oldest first",
            **operation(200, ComplaintQueue, errors=(403,),
                        description="Open complaints (or all), oldest first; `overdue` past their deadline."))
async def complaint_queue(service: ServiceDep, principal: Annotated[Principal, principal_of("complaints")],
                          status: Literal["open", "all"] = "open",
                          limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50) -> dict[str, Any]:
    require_admin(principal, "the complaint queue")
    now = service.trust_now()
    cases = [case for case in service.cases.complaints() if status == "all" or case.resolution is None]
    return {"items": [complaint_view(case, now) for case in cases[:limit]],
            "overdue": sum(is_overdue(case, now) for case in cases)}


@router.post("/v1/admin/complaints/{complaint_id}", summary="Decide a complaint",
             **operation(200, ComplaintItem, body=ComplaintDecision, errors=(403, 404, 409, 503),
                         description="`uphold` keeps (or takes) the video down; `dismiss` restores a hidden video. The "
                                     "same decision again answers the same; another one is a 409."))
async def decide_complaint(complaint_id: ComplaintIdPath, service: ServiceDep,
                           principal: Annotated[Principal, principal_of("complaints")],
                           body: JsonBody) -> dict[str, Any]:
    require_admin(principal, "deciding complaints")
    decision = parse_body(ComplaintDecision, body)
    case = service.cases.complaint(complaint_id)
    if case is None:
        raise ApiError(404, "not_found", "no complaint with this complaint_id", "complaint_id")
    outcome = "UPHELD" if decision.decision == "uphold" else "DISMISSED"
    if case.resolution is not None:
        if case.resolution["decision"] != outcome:
            raise ApiError(409, "already_decided", f"the complaint was already {case_status(case)}", "decision")
        return complaint_view(case, service.trust_now())
    event = new_record("ComplaintResolved", PRODUCER_NAME, {
        "video_id": case.video_id, "complaint_id": complaint_id, "decision": outcome, "admin_id": principal.user_id,
        "note": decision.note})
    await service.produce_records([("ComplaintResolved", event)])
    service.cases.apply("ComplaintResolved", event)
    return complaint_view(case, service.trust_now())
