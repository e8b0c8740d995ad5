"""The takedown state machine and the case book (processors/takedown/machine.py, catalog/cases.py),
driven by an explicit clock: the whole notice -> takedown -> counter-notice -> restore timeline,
court actions, strikes and termination, complaints, in any order and after any redelivery."""

from __future__ import annotations

import json
import random
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from catalog.cases import TRUST_SCHEMAS, CaseBook, add_business_days, case_status, is_overdue
from common.errors import ConfigError
from common.settings import load_settings
from infra.s3.layout import new_video_id
from processors.sink.rows import MAPPING_BY_TABLE, TABLE_OF_SCHEMA
from processors.takedown.machine import REMOVE, REPUBLISH, Effect, Policy, due
from schemas.codec import encode
from schemas.envelope import new_record
from tests.unit.test_avro_codec import SAMPLES

MONDAY = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)  # a Monday
POLICY = Policy(restore_business_days=10, strike_threshold=3)
Event = tuple[str, dict[str, Any]]


def notice(video_id: str, notice_id: str, uploader: str = "bob", at: datetime = MONDAY) -> Event:
    return "DmcaNoticeReceived", new_record("DmcaNoticeReceived", "ingest-api", {
        "video_id": video_id, "notice_id": notice_id, "infringing_url": video_id, "video_ids": [video_id],
        "uploader_id": uploader, "copyrighted_work": "A film", "complainant_name": "Ana",
        "complainant_email": "ana@example.com", "complainant_address": None, "complainant_phone": None,
        "good_faith_statement": True, "accuracy_statement": True, "signature": "Ana"}, occurred_at=at)


def counter(video_id: str, notice_id: str, at: datetime, uploader: str = "bob") -> Event:
    return "DmcaCounterNoticeReceived", new_record("DmcaCounterNoticeReceived", "ingest-api", {
        "video_id": video_id, "notice_id": notice_id, "counter_notice_id": "cn_" + uuid.uuid4().hex[:20],
        "uploader_id": uploader, "name": "Bo", "address": "1 Main St", "phone": None, "email": None,
        "good_faith_mistake_statement": True, "consent_to_jurisdiction": True, "signature": "Bo"}, occurred_at=at)


def court(video_id: str, notice_id: str, at: datetime) -> Event:
    return "CourtActionReported", new_record("CourtActionReported", "ingest-api", {
        "video_id": video_id, "notice_id": notice_id, "reported_by": "admin", "note": None}, occurred_at=at)


def complaint(video_id: str, complaint_id: str, reason: str, hide: bool, at: datetime = MONDAY) -> Event:
    return "ComplaintReceived", new_record("ComplaintReceived", "ingest-api", {
        "video_id": video_id, "complaint_id": complaint_id, "reason": reason, "contact": "me@example.com",
        "details": None, "uploader_id": "bob", "hide": hide, "due_at": add_business_days(at, 7)}, occurred_at=at)


def resolved(video_id: str, complaint_id: str, decision: str, at: datetime) -> Event:
    return "ComplaintResolved", new_record("ComplaintResolved", "ingest-api", {
        "video_id": video_id, "complaint_id": complaint_id, "decision": decision, "admin_id": "admin",
        "note": None}, occurred_at=at)


def settle(book: CaseBook, now: datetime, policy: Policy = POLICY) -> list[Effect]:
    """Perform (fold) what is due at `now`, one effect at a time, as the agent does."""
    performed: list[Effect] = []
    while effects := due(book, policy, now):
        assert len(performed) < 100, "the machine does not settle"
        effect = effects[0]
        for schema, record in effect.events:
            encode(schema, record)  # every event the machine makes is valid Avro
        book.apply_all(effect.events)
        performed.append(effect)
    return performed


def schemas(effects: list[Effect]) -> list[str]:
    return [schema if schema != "PartyNotified" else f"{schema}:{record['subject']}"
            for effect in effects for schema, record in effect.events]


def test_business_days_skip_weekends_and_holidays() -> None:
    assert add_business_days(MONDAY, 10) == MONDAY + timedelta(days=14)  # two weeks later, same time
    assert add_business_days(MONDAY + timedelta(days=4), 1) == MONDAY + timedelta(days=7)  # Friday -> Monday
    holiday = frozenset({date(2026, 11, 11)})
    assert add_business_days(MONDAY, 10, holiday) == MONDAY + timedelta(days=15)
    assert add_business_days(MONDAY + timedelta(days=5), 1) == MONDAY + timedelta(days=7)  # from a Saturday


def test_the_whole_timeline_notice_takedown_counter_notice_restore() -> None:
    video, book = new_video_id(), CaseBook()
    book.apply_all([notice(video, "dmca_1")])
    first = settle(book, MONDAY)
    assert first[0].action == REMOVE and first[0].video_id == video
    assert schemas(first) == ["VideoTakenDown", "PartyNotified:TAKEN_DOWN", "StrikeRecorded",
                              "PartyNotified:STRIKE_RECORDED"]
    [case] = book.cases_of_video(video)
    assert case_status(case) == "taken_down" and book.active_strikes("bob") == {("dmca_1", video)}
    assert settle(book, MONDAY + timedelta(days=365)) == []  # without a counter-notice it stays down

    received = MONDAY + timedelta(hours=1)
    book.apply_all([counter(video, "dmca_1", received)])
    forwarded = settle(book, received)
    assert schemas(forwarded) == ["PartyNotified:COUNTER_NOTICE_FORWARDED"]
    restore_at = received + timedelta(days=14)
    assert forwarded[0].events[0][1]["restore_after"] == restore_at
    assert forwarded[0].events[0][1]["recipient"] == "ana@example.com"
    assert settle(book, restore_at - timedelta(seconds=1)) == []  # not before the tenth business day

    restored = settle(book, restore_at)
    assert restored[0].action == REPUBLISH
    assert schemas(restored) == ["VideoRestored", "PartyNotified:RESTORED", "StrikeWithdrawn",
                                 "PartyNotified:STRIKE_WITHDRAWN"]
    assert restored[0].events[0][1]["republished"] is True
    assert case_status(case) == "restored" and book.active_strikes("bob") == set()
    assert settle(book, restore_at + timedelta(days=30)) == []


def test_a_court_action_stops_the_restore() -> None:
    video, book = new_video_id(), CaseBook()
    book.apply_all([notice(video, "dmca_1"), counter(video, "dmca_1", MONDAY)])
    settle(book, MONDAY)
    book.apply_all([court(video, "dmca_1", MONDAY + timedelta(days=3))])
    assert schemas(settle(book, MONDAY + timedelta(days=3))) == ["PartyNotified:RESTORE_STOPPED"]
    assert settle(book, MONDAY + timedelta(days=60)) == []
    [case] = book.cases_of_video(video)
    assert case_status(case) == "court_action" and book.active_strikes("bob") == {("dmca_1", video)}


def test_the_restore_waits_for_holidays_and_the_setting() -> None:
    video, book = new_video_id(), CaseBook()
    policy = Policy(restore_business_days=14, holidays=frozenset({date(2026, 11, 11)}))
    book.apply_all([notice(video, "dmca_1"), counter(video, "dmca_1", MONDAY)])
    settle(book, MONDAY, policy)
    deadline = MONDAY + timedelta(days=21)  # 14 business days, a weekend more for Veterans Day: Monday 23rd
    assert settle(book, deadline - timedelta(minutes=1), policy) == []
    assert "VideoRestored" in schemas(settle(book, deadline, policy))


def test_strikes_terminate_a_repeat_infringer_once_and_a_withdrawal_does_not_reinstate() -> None:
    book = CaseBook()
    videos = [new_video_id() for _ in range(4)]
    for n, video in enumerate(videos[:2]):
        book.apply_all([notice(video, f"dmca_{n}")])
    assert "AccountTerminated" not in schemas(settle(book, MONDAY))
    assert len(book.active_strikes("bob")) == 2
    book.apply_all([notice(videos[2], "dmca_2")])
    third = settle(book, MONDAY)
    assert schemas(third)[-2:] == ["AccountTerminated", "PartyNotified:ACCOUNT_TERMINATED"]
    terminated = [record for effect in third for schema, record in effect.events if schema == "AccountTerminated"]
    assert terminated[0]["active_strikes"] == 3 and book.is_terminated("bob")
    book.apply_all([notice(videos[3], "dmca_3")])
    assert "AccountTerminated" not in schemas(settle(book, MONDAY))  # once
    book.apply_all([counter(videos[0], "dmca_0", MONDAY)])
    settle(book, MONDAY + timedelta(days=30))
    assert len(book.active_strikes("bob")) == 3 and book.is_terminated("bob")
    assert not book.is_terminated("carol")


def test_a_strike_counts_per_uploader() -> None:
    book = CaseBook()
    for n in range(3):
        book.apply_all([notice(new_video_id(), f"dmca_{n}", uploader=f"user{n}")])
    assert "AccountTerminated" not in schemas(settle(book, MONDAY))


def test_a_depicted_person_complaint_hides_at_once_and_a_dismissal_restores() -> None:
    video, book = new_video_id(), CaseBook()
    book.apply_all([complaint(video, "cmp_1", "DEPICTED_WITHOUT_CONSENT", hide=True)])
    hidden = settle(book, MONDAY)
    assert hidden[0].action == REMOVE
    assert schemas(hidden) == ["VideoTakenDown", "PartyNotified:HIDDEN_PENDING_REVIEW"]  # no strike
    assert hidden[0].events[0][1]["case_type"] == "COMPLAINT"
    [case] = book.cases_of_video(video)
    assert is_overdue(case, MONDAY + timedelta(days=9, seconds=1)) and not is_overdue(case, MONDAY + timedelta(days=8))
    book.apply_all([resolved(video, "cmp_1", "DISMISSED", MONDAY + timedelta(days=1))])
    back = settle(book, MONDAY + timedelta(days=1))
    assert back[0].action == REPUBLISH and schemas(back) == ["VideoRestored", "PartyNotified:RESTORED"]
    assert not is_overdue(case, MONDAY + timedelta(days=30)) and case_status(case) == "dismissed"


def test_an_upheld_complaint_stays_down_and_one_that_did_not_hide_is_taken_down_when_upheld() -> None:
    hidden_video, other_video, book = new_video_id(), new_video_id(), CaseBook()
    book.apply_all([complaint(hidden_video, "cmp_1", "UNDERAGE", hide=True),
                    complaint(other_video, "cmp_2", "SPAM", hide=False)])
    assert [effect.video_id for effect in settle(book, MONDAY)] == [hidden_video]
    book.apply_all([resolved(hidden_video, "cmp_1", "UPHELD", MONDAY), resolved(other_video, "cmp_2", "UPHELD", MONDAY)])
    upheld = settle(book, MONDAY)
    assert [(effect.video_id, effect.action) for effect in upheld] == [(other_video, REMOVE)]
    assert settle(book, MONDAY + timedelta(days=90)) == []


def test_a_restore_republishes_only_when_no_other_case_keeps_the_video_down() -> None:
    video, book = new_video_id(), CaseBook()
    book.apply_all([notice(video, "dmca_1"), complaint(video, "cmp_1", "DEPICTED_WITHOUT_CONSENT", hide=True),
                    counter(video, "dmca_1", MONDAY)])
    settle(book, MONDAY)
    restored = settle(book, MONDAY + timedelta(days=14))
    assert restored[0].action is None and restored[0].events[0][1]["republished"] is False
    book.apply_all([resolved(video, "cmp_1", "DISMISSED", MONDAY + timedelta(days=15))])
    assert settle(book, MONDAY + timedelta(days=15))[0].action == REPUBLISH


def test_any_order_and_redelivery_of_the_events_give_the_same_book_and_nothing_due_twice() -> None:
    video, book = new_video_id(), CaseBook()
    inputs = [notice(video, "dmca_1"), counter(video, "dmca_1", MONDAY + timedelta(hours=2))]
    book.apply_all(inputs)
    effects = settle(book, MONDAY + timedelta(days=20))
    every = inputs + [event for effect in effects for event in effect.events]
    rng = random.Random(3)
    for _ in range(20):
        replay = every + rng.choices(every, k=len(every))
        rng.shuffle(replay)
        again = CaseBook()
        again.apply_all(replay)
        assert due(again, POLICY, MONDAY + timedelta(days=40)) == []  # a restarted processor does nothing twice
        [case] = again.cases_of_video(video)
        assert case_status(case) == "restored" and again.active_strikes("bob") == set()


def test_effect_event_ids_are_derived_from_the_case_and_the_step() -> None:
    video = new_video_id()
    ids = []
    for _ in range(2):
        book = CaseBook()
        book.apply_all([notice(video, "dmca_1")])
        ids.append([str(record["event_id"]) for effect in settle(book, MONDAY) for _, record in effect.events])
    assert ids[0] == ids[1]


def test_an_unknown_event_is_refused() -> None:
    with pytest.raises(ValueError):
        CaseBook().apply("VideoView", {"video_id": "v"})


def test_a_case_of_something_that_is_no_video_id_is_never_acted_on() -> None:
    book = CaseBook()
    book.apply_all([notice("../../etc", "dmca_1"), complaint("poison-1", "cmp_1", "UNDERAGE", hide=True)])
    assert due(book, POLICY, MONDAY) == []


def test_every_trust_event_is_one_audit_row_with_the_whole_event() -> None:
    columns = MAPPING_BY_TABLE["trust_events"].columns
    for schema in TRUST_SCHEMAS:
        mapping = TABLE_OF_SCHEMA[schema]
        row = dict(zip(columns, mapping.row(SAMPLES[schema])))
        assert mapping.table == "trust_events" and mapping.columns == columns
        assert row["event_type"] == schema and row["video_id"] == SAMPLES[schema]["video_id"]
        payload = json.loads(row["payload"])
        assert set(payload) == set(SAMPLES[schema]) - {"event_id", "occurred_at", "producer"}
        assert bool(row["case_id"]) == (schema != "AccountTerminated"), schema  # no case: the account's


def test_a_notification_read_before_its_complaint_leaves_the_case_a_complaint() -> None:
    video, book = new_video_id(), CaseBook()
    book.apply_all([complaint(video, "cmp_1", "UNDERAGE", hide=True)])
    effects = settle(book, MONDAY)
    replay = CaseBook()
    replay.apply_all([event for effect in reversed(effects) for event in reversed(effect.events)])
    replay.apply_all([complaint(video, "cmp_1", "UNDERAGE", hide=True)])
    [case] = replay.cases_of_video(video)
    assert case.case_type == "COMPLAINT" and due(replay, POLICY, MONDAY) == []


@pytest.mark.parametrize(("setting", "value"), [("dmca_restore_business_days", 9), ("dmca_restore_business_days", 15),
                                                ("trust_holidays", "2026-13-01"), ("repeat_infringer_strikes", 0)])
def test_trust_settings_outside_what_the_statute_and_sense_allow_are_refused(setting: str, value: object) -> None:
    with pytest.raises(ConfigError, match=setting.upper()):
        load_settings(**{setting: value})


def test_the_policy_comes_from_the_settings() -> None:
    from processors.takedown.agent import policy_of

    policy = policy_of(load_settings(trust_holidays="2026-12-25, 2027-01-01", dmca_restore_business_days=14,
                                     complaint_hide_reasons="underage"))
    assert policy.holidays == {date(2026, 12, 25), date(2027, 1, 1)}
    assert (policy.restore_business_days, policy.hide_reasons) == (14, frozenset({"underage"}))
