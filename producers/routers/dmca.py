"""DMCA notices, counter-notices and court actions (docs/trust-and-safety.md), and the notice form.

POST /v1/dmca/notices needs no account (rate-limited per client IP): every element of 17 U.S.C.
512(c)(3)(A) is checked and a 422 names each one missing or false at once (`fields`); each
infringing URL must name a public video (a video id or its public URL). The notice becomes one
DmcaNoticeReceived per video, folded into this replica's case book at once; the takedown processor
(processors/takedown) does the rest. A counter-notice (512(g)(3)) comes from the video's uploader
only; an admin records the claimant's court action, which stops the restore.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Request
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from catalog.cases import Case, case_status, restore_after
from catalog.fold import PUBLISHED, TAKEN_DOWN, iso_time
from common.errors import ApiError
from common.tokens import Principal
from infra.s3.layout import video_id_named_by
from producers.deps import JsonBody, ServiceDep, client_ip, principal_of, require_admin, set_kind
from producers.events import PRODUCER_NAME, parse_body, problems_error, problems_of, validation_error
from producers.openapi import operation
from producers.routers.page import SECURITY_HEADERS, STATIC_DIR
from producers.service import IngestService
from producers.text import DisplayText
from schemas.envelope import new_record

router = APIRouter()
MAX_URLS = 50
MAX_URL_LENGTH = 2048
NOTICE_ID_PATTERN = r"^dmca_[a-z0-9]{20}$"
# Like VideoIdPath: any other string names no notice (404), so the pattern is documented, not validated.
NoticeIdPath = Annotated[str, Path(description="A notice id this API issued.",
                                   json_schema_extra={"pattern": NOTICE_ID_PATTERN})]
# No `\s`: what it matches differs between the validator's regex engine and ECMA-262 (the schema's
# dialect: U+0085), so a client could build an address the document allows and the API refuses.
_EMAIL_PART = r"[^@\x00-\x20\x7f-\x9f]+"  # no @, space, or control character
Email = Annotated[str, Field(min_length=3, max_length=254, pattern=f"^{_EMAIL_PART}@{_EMAIL_PART}\\.{_EMAIL_PART}$")]
# The statutory elements, for the 422's message: what each field stands for.
NOTICE_ELEMENTS = {
    "signature": "a physical or electronic signature, 512(c)(3)(A)(i)",
    "copyrighted_work": "the copyrighted work claimed to be infringed, 512(c)(3)(A)(ii)",
    "infringing_urls": "the infringing material: video URLs or ids, 512(c)(3)(A)(iii)",
    "complainant": "contact information, 512(c)(3)(A)(iv)",
    "complainant.name": "the complaining party's name, 512(c)(3)(A)(iv)",
    "complainant.email": "the complaining party's e-mail address, 512(c)(3)(A)(iv)",
    "good_faith_statement": "must be true: the good-faith belief statement, 512(c)(3)(A)(v)",
    "accuracy_statement": "must be true: accurate and, under penalty of perjury, authorized, 512(c)(3)(A)(vi)",
}
COUNTER_ELEMENTS = {
    "signature": "a physical or electronic signature, 512(g)(3)(A)",
    "notice_id": "the notice whose takedown is disputed, 512(g)(3)(B)",
    "video_id": "the material removed, 512(g)(3)(B)",
    "good_faith_mistake_statement": "must be true: removed by mistake or misidentification, under penalty of "
                                    "perjury, 512(g)(3)(C)",
    "consent_to_jurisdiction": "must be true: consent to the Federal District Court's jurisdiction and to accept "
                               "service, 512(g)(3)(D)",
    "name": "the subscriber's name, 512(g)(3)(D)",
    "address": "the subscriber's address, 512(g)(3)(D)",
}


class Complainant(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Annotated[str, DisplayText(200)]
    email: Email
    address: Annotated[str, DisplayText(500)] | None = None
    phone: Annotated[str, DisplayText(50)] | None = None


class DmcaNotice(BaseModel):
    """A notice of claimed infringement (API.md "DMCA and complaints")."""

    model_config = ConfigDict(extra="forbid")
    copyrighted_work: Annotated[str, DisplayText(1000)]
    infringing_urls: list[Annotated[str, Field(min_length=1, max_length=MAX_URL_LENGTH)]] = Field(min_length=1,
                                                                                         max_length=MAX_URLS)
    complainant: Complainant
    good_faith_statement: Literal[True]
    accuracy_statement: Literal[True]
    signature: Annotated[str, DisplayText(200)]


class NoticeAccepted(BaseModel):
    notice_id: str
    status: str
    video_ids: list[str]


class CounterNotice(BaseModel):
    """A counter-notice (17 U.S.C. 512(g)(3)) from the uploader of the video."""

    model_config = ConfigDict(extra="forbid")
    notice_id: Annotated[str, Field(max_length=64)]
    video_id: Annotated[str, Field(max_length=64)]
    good_faith_mistake_statement: Literal[True]
    consent_to_jurisdiction: Literal[True]
    name: Annotated[str, DisplayText(200)]
    address: Annotated[str, DisplayText(500)]
    signature: Annotated[str, DisplayText(200)]
    phone: Annotated[str, DisplayText(50)] | None = None
    email: Email | None = None


class CourtAction(BaseModel):
    model_config = ConfigDict(extra="forbid")
    video_id: Annotated[str, Field(max_length=64)] | None = None
    note: Annotated[str, DisplayText(500)] | None = None


class NoticeVideo(BaseModel):
    video_id: str
    infringing_url: str | None
    status: str
    taken_down_at: datetime | None
    counter_notice_at: datetime | None
    restore_after: datetime | None
    court_action_at: datetime | None
    restored_at: datetime | None


class NoticeView(BaseModel):
    notice_id: str
    status: str
    received_at: datetime | None
    copyrighted_work: str | None
    complainant: dict[str, str | None]
    video_ids: list[str]
    videos: list[NoticeVideo]


class CounterNoticeAccepted(BaseModel):
    counter_notice_id: str
    notice_id: str
    video_id: str
    status: str
    restore_after: datetime | None


def _new_id(prefix: str) -> str:
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    return prefix + "".join(secrets.choice(alphabet) for _ in range(20))


def _at(event: Any) -> datetime | None:
    return None if event is None else event["occurred_at"]


def public_video_of(service: IngestService) -> Callable[[str], str | None]:
    """The video id a URL (or id) names when it is public or already taken down, else None."""

    def lookup(url: str) -> str | None:
        video_id = video_id_named_by(url, service.settings.public_base_url)
        record = None if video_id is None else service.catalog.get(video_id)
        return video_id if record is not None and record.state in (PUBLISHED, TAKEN_DOWN) else None

    return lookup


def check_notice(body: bytes, public_video: Callable[[str], str | None]) -> tuple[DmcaNotice, list[tuple[str, str]]]:
    """The notice and its (video id, url) pairs, each video once; else one 422 naming every missing or
    false element and every URL that names no public video (pure but for `public_video`)."""
    problems: dict[str, str] = {}
    notice: DmcaNotice | None = None
    try:
        notice = DmcaNotice.model_validate_json(body)
    except ValidationError as exc:
        if exc.errors()[0]["type"] == "json_invalid":
            raise validation_error(exc) from None
        problems = problems_of(exc, NOTICE_ELEMENTS)
    try:
        raw = json.loads(body)  # JSON to pydantic; the URLs are read again here to name each bad one
    except ValueError:
        raw = None
    urls = raw.get("infringing_urls") if isinstance(raw, dict) else None
    found: dict[str, str] = {}
    for index, url in enumerate(urls[:MAX_URLS] if isinstance(urls, list) else []):
        video_id = public_video(url) if isinstance(url, str) and len(url) <= MAX_URL_LENGTH else None
        if video_id is None:
            problems.setdefault(f"infringing_urls[{index}]",
                                "names no public video of this service (a video id or its public URL)")
        else:
            found.setdefault(video_id, url)
    if problems or notice is None:
        raise problems_error(problems, "invalid_notice")
    return notice, list(found.items())


@router.post("/v1/dmca/notices", summary="Send a DMCA notice of claimed infringement",
             **operation(201, NoticeAccepted, body=DmcaNotice, errors=(429, 503),
                         description="The notice is recorded; the named videos are taken down expeditiously. 422 "
                                     "names every missing or false element (`fields`) and every URL that names no "
                                     "public video."))
async def post_notice(request: Request, service: ServiceDep, body: JsonBody) -> JSONResponse:
    set_kind(request, "dmca_notice")
    service.limit_reports(client_ip(request))
    notice, found = check_notice(body, public_video_of(service))
    notice_id = _new_id("dmca_")
    video_ids = [video_id for video_id, _ in found]
    events = []
    for video_id, url in found:
        record = service.catalog.get(video_id)
        events.append(("DmcaNoticeReceived", new_record("DmcaNoticeReceived", PRODUCER_NAME, {
            "video_id": video_id, "notice_id": notice_id, "infringing_url": url, "video_ids": video_ids,
            "uploader_id": record.uploader_id if record else None, "copyrighted_work": notice.copyrighted_work,
            "complainant_name": notice.complainant.name, "complainant_email": notice.complainant.email,
            "complainant_address": notice.complainant.address, "complainant_phone": notice.complainant.phone,
            "good_faith_statement": True, "accuracy_statement": True, "signature": notice.signature})))
    await service.produce_records(events)
    service.cases.apply_all(events)
    return JSONResponse({"notice_id": notice_id, "status": "received", "video_ids": video_ids}, status_code=201)


def _notice_cases(service: IngestService, notice_id: str) -> list[Case]:
    cases = service.cases.notice_cases(notice_id)
    if not cases or cases[0].notice is None:
        raise ApiError(404, "not_found", "no notice with this notice_id", "notice_id")
    return cases


def _video_view(service: IngestService, case: Case) -> dict[str, Any]:
    settings = service.settings
    return {"video_id": case.video_id, "infringing_url": case.notice["infringing_url"] if case.notice else None,
            "status": case_status(case), "taken_down_at": iso_time(_at(case.taken_down)),
            "counter_notice_at": iso_time(_at(case.counter_notice)),
            "restore_after": iso_time(restore_after(case, settings.dmca_restore_business_days,
                                                settings.trust_holiday_dates)),
            "court_action_at": iso_time(_at(case.court_action)), "restored_at": iso_time(_at(case.restored))}


def notice_view(service: IngestService, notice_id: str) -> dict[str, Any]:
    cases = _notice_cases(service, notice_id)
    notice = cases[0].notice
    assert notice is not None
    statuses = {case_status(case) for case in cases}
    return {"notice_id": notice_id, "status": statuses.pop() if len(statuses) == 1 else "mixed",
            "received_at": iso_time(notice["occurred_at"]), "copyrighted_work": notice["copyrighted_work"],
            "complainant": {"name": notice["complainant_name"], "email": notice["complainant_email"],
                            "address": notice["complainant_address"], "phone": notice["complainant_phone"]},
            "video_ids": list(notice["video_ids"]), "videos": [_video_view(service, case) for case in cases]}


@router.get("/v1/dmca/notices/{notice_id}", summary="A DMCA notice and where each of its videos stands",
            **operation(200, NoticeView, errors=(403, 404), description="The notice (admins)."))
async def get_notice(notice_id: NoticeIdPath, service: ServiceDep,
                     principal: Annotated[Principal, principal_of("dmca_notice")]) -> dict[str, Any]:
    require_admin(principal, "reading DMCA notices")
    return notice_view(service, notice_id)


@router.post("/v1/dmca/counter-notices", summary="Send a counter-notice against a takedown of your video",
             **operation(201, CounterNoticeAccepted, body=CounterNotice, errors=(403, 404, 409, 503),
                         description="Recorded and forwarded to the claimant; the video is restored after the "
                                     "business days of LUSTRAX_DMCA_RESTORE_BUSINESS_DAYS unless the claimant reports "
                                     "a court action. Only the video's uploader may send it."))
async def post_counter_notice(request: Request, service: ServiceDep,
                              principal: Annotated[Principal, principal_of("dmca_counter_notice")],
                              body: JsonBody) -> JSONResponse:
    counter = parse_body(CounterNotice, body, every=True, describe=COUNTER_ELEMENTS)
    case = service.cases.cases.get((counter.notice_id, counter.video_id))
    if case is None or case.notice is None:
        raise ApiError(404, "not_found", "this notice does not name this video", "video_id")
    if principal.user_id != case.uploader_id:
        raise ApiError(403, "forbidden", "only the video's uploader may send a counter-notice", "video_id")
    if case.restored is not None or case.taken_down is None:
        raise ApiError(409, "not_taken_down", "the video is not taken down under this notice", "video_id")
    if case.counter_notice is not None:
        raise ApiError(409, "counter_notice_exists", "a counter-notice was already received for this takedown",
                       "notice_id")
    counter_id = _new_id("cn_")
    event = new_record("DmcaCounterNoticeReceived", PRODUCER_NAME, {
        "video_id": counter.video_id, "notice_id": counter.notice_id, "counter_notice_id": counter_id,
        "uploader_id": principal.user_id, "name": counter.name, "address": counter.address, "phone": counter.phone,
        "email": counter.email, "good_faith_mistake_statement": True, "consent_to_jurisdiction": True,
        "signature": counter.signature})
    await service.produce_records([("DmcaCounterNoticeReceived", event)])
    service.cases.apply("DmcaCounterNoticeReceived", event)
    settings = service.settings
    restore_at = restore_after(case, settings.dmca_restore_business_days, settings.trust_holiday_dates)
    return JSONResponse({"counter_notice_id": counter_id, "notice_id": counter.notice_id, "video_id": counter.video_id,
                         "status": case_status(case), "restore_after": iso_time(restore_at)}, status_code=201)


@router.post("/v1/admin/dmca/notices/{notice_id}/court-action",
             summary="Record that the claimant filed a court action: the restore is stopped",
             **operation(200, NoticeView, body=CourtAction, errors=(403, 404, 409, 503),
                         description="The notice with the court action recorded (admins); 409 when every named "
                                     "video was already restored."))
async def post_court_action(notice_id: NoticeIdPath, service: ServiceDep,
                            principal: Annotated[Principal, principal_of("dmca_court_action")],
                            body: JsonBody) -> dict[str, Any]:
    require_admin(principal, "recording court actions")
    action = parse_body(CourtAction, body)
    cases = _notice_cases(service, notice_id)
    if action.video_id is not None:
        cases = [case for case in cases if case.video_id == action.video_id]
        if not cases:
            raise ApiError(404, "not_found", "this notice does not name this video", "video_id")
    open_cases = [case for case in cases if case.restored is None]
    if not open_cases:
        raise ApiError(409, "already_restored", "the video was already restored: a court action no longer stops it",
                       "video_id")
    events = [("CourtActionReported", new_record("CourtActionReported", PRODUCER_NAME, {
        "video_id": case.video_id, "notice_id": notice_id, "reported_by": principal.user_id, "note": action.note}))
        for case in open_cases if case.court_action is None]
    await service.produce_records(events)
    service.cases.apply_all(events)
    return notice_view(service, notice_id)


@router.get("/dmca", summary="The DMCA notice form",
            **operation(200, media_type="text/html", description="A form that posts to POST /v1/dmca/notices."))
async def dmca_form(request: Request) -> HTMLResponse:
    set_kind(request, "dmca_form")
    headers = {**SECURITY_HEADERS, "Cache-Control": "no-store", "Content-Security-Policy": "; ".join([
        "default-src 'none'", "script-src 'self'", "style-src 'self'", "connect-src 'self'", "base-uri 'none'",
        "form-action 'none'", "frame-ancestors 'none'"])}
    return HTMLResponse((STATIC_DIR / "dmca.html").read_text(), headers=headers)
