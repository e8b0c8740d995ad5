"""The trust-and-safety case book: the pure fold of the DMCA, complaint and takedown events.

One case is one notice or complaint on one video (`(case_id, video_id)`); a DMCA notice naming
three videos is three cases. Both readers fold the same events with this module: the takedown
processor (processors/takedown/machine.py decides what is due from the book) and the API (the
notice view, the counter-notice checks, the complaint queue, terminated accounts).

Like catalog/fold.py the fold does not care about order or repetition: every field is set once
from the earliest event of its kind (by (occurred_at, event_id)) and strikes are a two-phase set
(recorded minus withdrawn), so replays and redeliveries are harmless and any order of the topics
gives the same book (tests/unit/test_trust_cases.py).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

TRUST_SCHEMAS = ("DmcaNoticeReceived", "DmcaCounterNoticeReceived", "CourtActionReported", "VideoTakenDown",
                 "VideoRestored", "PartyNotified", "StrikeRecorded", "StrikeWithdrawn", "AccountTerminated",
                 "ComplaintReceived", "ComplaintResolved")
DMCA, COMPLAINT = "DMCA", "COMPLAINT"
CaseKey = tuple[str, str]  # (case_id, video_id)
Event = tuple[str, Mapping[str, Any]]


def add_business_days(start: datetime, days: int, holidays: frozenset[date] = frozenset()) -> datetime:
    """`start` moved `days` business days on (Monday to Friday, not in `holidays`), same time of day."""
    moment, counted = start, 0
    while counted < days:
        moment += timedelta(days=1)
        if moment.weekday() < 5 and moment.date() not in holidays:
            counted += 1
    return moment


def _first(current: Mapping[str, Any] | None, new: Mapping[str, Any]) -> Mapping[str, Any]:
    """The earlier of two events of one kind: the one every reader keeps, whatever order it saw."""
    if current is None:
        return new
    return min(current, new, key=lambda e: (e["occurred_at"], str(e["event_id"])))


@dataclass
class Case:
    case_id: str
    video_id: str
    case_type: str
    notice: Mapping[str, Any] | None = None  # DmcaNoticeReceived
    complaint: Mapping[str, Any] | None = None  # ComplaintReceived
    counter_notice: Mapping[str, Any] | None = None
    court_action: Mapping[str, Any] | None = None
    taken_down: Mapping[str, Any] | None = None  # VideoTakenDown
    restored: Mapping[str, Any] | None = None  # VideoRestored
    resolution: Mapping[str, Any] | None = None  # ComplaintResolved
    notified: set[tuple[str, str]] = field(default_factory=set)  # (party, subject)

    @property
    def uploader_id(self) -> str | None:
        for source in (self.notice, self.complaint, self.taken_down):
            if source is not None and source.get("uploader_id"):
                return str(source["uploader_id"])
        return None

    @property
    def active(self) -> bool:
        """The case keeps the video down (or is about to)."""
        return self.taken_down is not None and self.restored is None


def restore_after(case: Case, business_days: int, holidays: frozenset[date] = frozenset()) -> datetime | None:
    """When a counter-noticed takedown is restored unless a court action is reported (None without
    a counter-notice): `business_days` business days after the counter-notice arrived."""
    if case.counter_notice is None:
        return None
    return add_business_days(case.counter_notice["occurred_at"], business_days, holidays)


def case_status(case: Case) -> str:
    """Where a case stands, in the words of the API (docs/trust-and-safety.md)."""
    if case.case_type == COMPLAINT:
        if case.resolution is not None:
            return str(case.resolution["decision"]).lower()
        return "open"
    if case.restored is not None:
        return "restored"
    if case.court_action is not None:
        return "court_action"
    if case.counter_notice is not None:
        return "counter_noticed"
    return "taken_down" if case.taken_down is not None else "received"


class CaseBook:
    """Every case, the strikes and the terminated accounts; thread-safe (a feed thread applies)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.cases: dict[CaseKey, Case] = {}
        self.by_video: dict[str, set[CaseKey]] = {}
        self.by_notice: dict[str, list[str]] = {}  # notice_id -> its video ids, as the notice named them
        self.strikes: dict[str, set[CaseKey]] = {}
        self.withdrawn: dict[str, set[CaseKey]] = {}
        self.terminated: dict[str, Mapping[str, Any]] = {}

    def __len__(self) -> int:
        return len(self.cases)

    def case(self, case_id: str, video_id: str, case_type: str | None = None) -> Case:
        """The case, made on its first event; `case_type` is given by the events that know it (a
        notification read before its complaint leaves it to the complaint)."""
        key = (case_id, video_id)
        found = self.cases.get(key)
        if found is None:
            found = self.cases[key] = Case(case_id, video_id, case_type or DMCA)
            self.by_video.setdefault(video_id, set()).add(key)
        elif case_type is not None:
            found.case_type = case_type
        return found

    def apply_all(self, events: Iterable[Event]) -> None:
        with self.lock:
            for schema, event in events:
                self.apply(schema, event)

    def apply(self, schema: str, event: Mapping[str, Any]) -> None:
        with self.lock:
            self._apply(schema, event)

    def _apply(self, schema: str, event: Mapping[str, Any]) -> None:
        video_id = str(event["video_id"])
        if schema == "DmcaNoticeReceived":
            case = self.case(event["notice_id"], video_id, DMCA)
            case.notice = _first(case.notice, event)
            self.by_notice.setdefault(event["notice_id"], list(event["video_ids"]))
        elif schema == "DmcaCounterNoticeReceived":
            case = self.case(event["notice_id"], video_id, DMCA)
            case.counter_notice = _first(case.counter_notice, event)
        elif schema == "CourtActionReported":
            case = self.case(event["notice_id"], video_id, DMCA)
            case.court_action = _first(case.court_action, event)
        elif schema in ("VideoTakenDown", "VideoRestored"):
            case = self.case(event["case_id"], video_id, str(event["case_type"]))
            if schema == "VideoTakenDown":
                case.taken_down = _first(case.taken_down, event)
            else:
                case.restored = _first(case.restored, event)
        elif schema == "PartyNotified":
            self.case(event["case_id"], video_id).notified.add((str(event["party"]), str(event["subject"])))
        elif schema in ("StrikeRecorded", "StrikeWithdrawn"):
            target = self.strikes if schema == "StrikeRecorded" else self.withdrawn
            target.setdefault(event["uploader_id"], set()).add((event["notice_id"], video_id))
        elif schema == "AccountTerminated":
            uploader = event["uploader_id"]
            self.terminated[uploader] = _first(self.terminated.get(uploader), event)
        elif schema == "ComplaintReceived":
            case = self.case(event["complaint_id"], video_id, COMPLAINT)
            case.complaint = _first(case.complaint, event)
        elif schema == "ComplaintResolved":
            case = self.case(event["complaint_id"], video_id, COMPLAINT)
            case.resolution = _first(case.resolution, event)
        else:
            raise ValueError(f"{schema} is not a trust-and-safety event")

    # -- questions ------------------------------------------------------------------------------
    def active_strikes(self, uploader_id: str) -> set[CaseKey]:
        with self.lock:
            return self.strikes.get(uploader_id, set()) - self.withdrawn.get(uploader_id, set())

    def is_terminated(self, uploader_id: str) -> bool:
        return uploader_id in self.terminated

    def cases_of_video(self, video_id: str) -> list[Case]:
        with self.lock:
            return [self.cases[key] for key in sorted(self.by_video.get(video_id, ()))]

    def notice_cases(self, notice_id: str) -> list[Case]:
        with self.lock:
            return [self.cases[(notice_id, video_id)] for video_id in self.by_notice.get(notice_id, [])
                    if (notice_id, video_id) in self.cases]

    def complaints(self) -> list[Case]:
        """Every complaint, oldest first."""
        with self.lock:
            found = [case for case in self.cases.values() if case.complaint is not None]
        return sorted(found, key=lambda c: (c.complaint["occurred_at"], c.case_id))  # type: ignore[index]

    def complaint(self, complaint_id: str) -> Case | None:
        with self.lock:
            return next((case for (case_id, _), case in self.cases.items()
                         if case_id == complaint_id and case.complaint is not None), None)


def is_overdue(case: Case, now: datetime) -> bool:
    """An open complaint past its deadline."""
    return case.complaint is not None and case.resolution is None and now > case.complaint["due_at"]
