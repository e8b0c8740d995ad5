"""The takedown state machine (pure: the case book and a clock in, effects out; no I/O).

Level-triggered: `due(book, policy, now)` looks at every case and returns what should have happened
by `now` and has not (a takedown not yet done, a strike not yet recorded, a restore whose deadline
passed). The agent performs each effect (its S3 action first, then its events, acknowledged), folds
the events back into the book, and asks again until nothing is due. Each event's id is derived
from the case and the step, so a crash between the action and the events, or two processors,
repeat an effect with the same ids: the catalog, the book and the sink count it once.

The rules, per case (docs/trust-and-safety.md):
- a DMCA notice, or a complaint whose reason hides at once, or a complaint an admin upheld: take
  the video down (VideoTakenDown) and tell the uploader;
- a DMCA takedown of a known uploader: one strike; active strikes at the threshold: the account is
  terminated (once; a later withdrawal does not reinstate it: that is the operator's call);
- a counter-notice: forwarded to the claimant with the restore date; restored once that date
  passed (`dmca_restore_business_days` business days after it arrived) unless the claimant reported
  a court action; the strike of a restored takedown is withdrawn;
- a hidden complaint an admin dismissed: restored.
A restore republishes the ladder only when no other case keeps the video down.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from catalog.cases import COMPLAINT, DMCA, Case, CaseBook, restore_after
from infra.s3.layout import is_video_id
from schemas.envelope import new_record

PRODUCER_NAME = "takedown"
NAMESPACE = uuid.UUID("6f1c0d2e-3b4a-4c5d-8e9f-a0b1c2d3e4f5")
REMOVE, REPUBLISH = "remove", "republish"


@dataclass(frozen=True)
class Policy:
    restore_business_days: int = 10
    holidays: frozenset[date] = frozenset()
    strike_threshold: int = 3
    hide_reasons: frozenset[str] = frozenset({"depicted_without_consent", "underage", "non_consensual"})


@dataclass(frozen=True)
class Effect:
    video_id: str
    action: str | None  # REMOVE (public objects), REPUBLISH (staging -> public) or nothing
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


def _restore_after(case: Case, policy: Policy) -> datetime | None:
    return restore_after(case, policy.restore_business_days, policy.holidays)


def _event(schema: str, step: str, now: datetime, fields: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return schema, new_record(schema, PRODUCER_NAME, fields, event_id=uuid.uuid5(NAMESPACE, f"{schema}:{step}"),
                              occurred_at=now)


def _notify(case: Case, party: str, recipient: str, subject: str, message: str, now: datetime,
            restore_at: datetime | None = None) -> tuple[str, dict[str, Any]]:
    return _event("PartyNotified", f"{case.case_id}:{case.video_id}:{party}:{subject}", now, {
        "video_id": case.video_id, "party": party, "recipient": recipient, "case_id": case.case_id,
        "subject": subject, "message": message, "restore_after": restore_at})


def _should_be_down(case: Case, policy: Policy) -> bool:
    if case.case_type == DMCA:
        return case.notice is not None
    if case.complaint is None:
        return False
    decision = None if case.resolution is None else case.resolution["decision"]
    return decision == "UPHELD" or (decision is None and str(case.complaint["reason"]).lower() in policy.hide_reasons)


def _takedown(case: Case, policy: Policy, now: datetime) -> Effect | None:
    if case.taken_down is not None or case.restored is not None or not _should_be_down(case, policy):
        return None
    hidden = case.case_type == COMPLAINT and case.resolution is None
    reason = ("hidden pending review of a complaint" if hidden else
              "removed after a DMCA notice" if case.case_type == DMCA else "removed after a complaint")
    events = [_event("VideoTakenDown", f"{case.case_id}:{case.video_id}", now, {
        "video_id": case.video_id, "case_id": case.case_id, "case_type": case.case_type,
        "uploader_id": case.uploader_id, "reason": reason, "removed_objects": 0})]
    if case.uploader_id:
        subject = "HIDDEN_PENDING_REVIEW" if hidden else "TAKEN_DOWN"
        events.append(_notify(case, "UPLOADER", case.uploader_id, subject,
                              f"Your video {case.video_id} was {reason} ({case.case_id}).", now))
    return Effect(case.video_id, REMOVE, events)


def _strike(book: CaseBook, case: Case, now: datetime) -> Effect | None:
    uploader = case.uploader_id
    if case.case_type != DMCA or case.taken_down is None or case.restored is not None or not uploader:
        return None
    if (case.case_id, case.video_id) in book.strikes.get(uploader, set()):
        return None
    active = len(book.active_strikes(uploader)) + 1
    return Effect(case.video_id, None, [
        _event("StrikeRecorded", f"{case.case_id}:{case.video_id}", now, {
            "video_id": case.video_id, "uploader_id": uploader, "notice_id": case.case_id, "active_strikes": active}),
        _notify(case, "UPLOADER", uploader, "STRIKE_RECORDED",
                f"A copyright strike was recorded against your account ({active} active).", now)])


def _termination(book: CaseBook, case: Case, policy: Policy, now: datetime) -> Effect | None:
    uploader = case.uploader_id
    if case.case_type != DMCA or not uploader or book.is_terminated(uploader):
        return None
    if (case.case_id, case.video_id) not in book.active_strikes(uploader):
        return None
    active = len(book.active_strikes(uploader))
    if active < policy.strike_threshold:
        return None
    return Effect(case.video_id, None, [
        _event("AccountTerminated", f"{uploader}", now, {
            "video_id": case.video_id, "uploader_id": uploader, "active_strikes": active,
            "reason": f"repeat infringer: {active} active strikes (threshold {policy.strike_threshold})"}),
        _notify(case, "UPLOADER", uploader, "ACCOUNT_TERMINATED",
                "Your account was terminated under the repeat-infringer policy.", now)])


def _forward_counter_notice(case: Case, policy: Policy, now: datetime) -> Effect | None:
    if case.counter_notice is None or case.notice is None or ("CLAIMANT", "COUNTER_NOTICE_FORWARDED") in case.notified:
        return None
    restore_at = _restore_after(case, policy)
    return Effect(case.video_id, None, [_notify(
        case, "CLAIMANT", str(case.notice["complainant_email"]), "COUNTER_NOTICE_FORWARDED",
        f"A counter-notice was received for {case.video_id} under notice {case.case_id}. The video will be "
        f"restored after {restore_at:%Y-%m-%d %H:%M} UTC unless you report a court action.", now, restore_at)])


def _court_action_noticed(case: Case, now: datetime) -> Effect | None:
    if case.court_action is None or case.restored is not None or not case.uploader_id \
            or ("UPLOADER", "RESTORE_STOPPED") in case.notified:
        return None
    return Effect(case.video_id, None, [_notify(
        case, "UPLOADER", case.uploader_id, "RESTORE_STOPPED",
        f"The claimant reported a court action: {case.video_id} stays down.", now)])


def _restore(book: CaseBook, case: Case, policy: Policy, now: datetime) -> Effect | None:
    if case.taken_down is None or case.restored is not None:
        return None
    if case.case_type == DMCA:
        deadline = _restore_after(case, policy)
        if deadline is None or case.court_action is not None or now < deadline:
            return None
        reason = "counter-notice period passed without a court action"
    else:
        if case.resolution is None or case.resolution["decision"] != "DISMISSED":
            return None
        reason = "complaint dismissed"
    others = [other for other in book.cases_of_video(case.video_id) if other is not case]
    republish = not any(other.active or (other.taken_down is None and other.restored is None
                                         and _should_be_down(other, policy)) for other in others)
    events = [_event("VideoRestored", f"{case.case_id}:{case.video_id}", now, {
        "video_id": case.video_id, "case_id": case.case_id, "case_type": case.case_type, "reason": reason,
        "republished": republish})]
    if case.uploader_id:
        events.append(_notify(case, "UPLOADER", case.uploader_id, "RESTORED",
                              f"Your video {case.video_id} was restored: {reason}.", now))
    return Effect(case.video_id, REPUBLISH if republish else None, events)


def _withdraw_strike(book: CaseBook, case: Case, now: datetime) -> Effect | None:
    uploader = case.uploader_id
    key = (case.case_id, case.video_id)
    if case.restored is None or not uploader or key not in book.active_strikes(uploader):
        return None
    active = len(book.active_strikes(uploader)) - 1
    return Effect(case.video_id, None, [
        _event("StrikeWithdrawn", f"{case.case_id}:{case.video_id}", now, {
            "video_id": case.video_id, "uploader_id": uploader, "notice_id": case.case_id, "active_strikes": active}),
        _notify(case, "UPLOADER", uploader, "STRIKE_WITHDRAWN",
                f"The strike of notice {case.case_id} was withdrawn ({active} active).", now)])


def due(book: CaseBook, policy: Policy, now: datetime) -> list[Effect]:
    """Every effect due at `now`, at most one per case (the next step; ask again after applying)."""
    with book.lock:
        return list(_due(book, policy, now))


def _due(book: CaseBook, policy: Policy, now: datetime) -> Iterator[Effect]:
    for case in list(book.cases.values()):
        if not is_video_id(case.video_id):
            continue  # not a video this service made (a forged event): nothing to take down or restore
        for step in (lambda: _takedown(case, policy, now), lambda: _strike(book, case, now),
                     lambda: _termination(book, case, policy, now), lambda: _forward_counter_notice(case, policy, now),
                     lambda: _court_action_noticed(case, now), lambda: _restore(book, case, policy, now),
                     lambda: _withdraw_strike(book, case, now)):
            effect = step()
            if effect is not None:
                yield effect
                break
