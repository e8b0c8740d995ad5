"""The ingest API's pure parts: event models -> Avro records, errors, limits, tokens, upload keys."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings, strategies as st

from common.tokens import Principal, TokenVerifier, authorize_user, issue_token
from common.errors import ApiError
from producers.events import check_event_time, parse_batch, parse_event, parse_occurred_at, to_avro
from producers.limits import RecentIds, TokenBucketLimiter
from producers.uploads import matches_container
from schemas.codec import decode, encode

NOW = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)
identifiers = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABC0123456789._:@-", min_size=1, max_size=128)
times = st.integers(min_value=int((NOW - timedelta(days=6)).timestamp() * 1000),
                    max_value=int(NOW.timestamp() * 1000))


@st.composite
def valid_events(draw: st.DrawFn) -> dict[str, object]:
    kind = draw(st.sampled_from(["view", "like", "unlike", "watch_tick"]))
    event: dict[str, object] = {"type": kind, "video_id": draw(identifiers), "user_id": draw(identifiers)}
    if draw(st.booleans()):
        event["event_id"] = str(draw(st.uuids()))
    if draw(st.booleans()):
        at = draw(times)
        event["occurred_at"] = at if draw(st.booleans()) else \
            datetime.fromtimestamp(at / 1000, UTC).isoformat().replace("+00:00", "Z")
    if kind in ("view", "watch_tick"):
        event["session_id"] = draw(identifiers)
    if kind == "watch_tick":
        duration = draw(st.integers(min_value=1, max_value=24 * 3600 * 1000))
        event.update(duration_ms=duration, position_ms=draw(st.integers(min_value=0, max_value=duration)))
    return event


@settings(max_examples=300)
@given(event=valid_events())
def test_every_record_the_models_can_build_passes_the_codecs_validation(event: dict[str, object]) -> None:
    parsed = parse_event(json.dumps(event).encode())
    schema, _, record = to_avro(parsed, NOW)
    fast = encode(schema, record, validate_record=False)
    assert encode(schema, record) == fast  # validates, and writes the same bytes
    name, decoded = decode(fast)
    assert name == schema
    assert decoded["video_id"] == event["video_id"] and decoded["user_id"] == event["user_id"]
    if "event_id" in event:
        assert str(decoded["event_id"]) == event["event_id"]


def test_occurred_at_accepts_rfc3339_and_epoch_millis_only() -> None:
    assert parse_occurred_at("2026-11-25T08:00:00Z") == NOW
    assert parse_occurred_at("2026-11-25T09:00:00+01:00") == NOW
    assert parse_occurred_at(int(NOW.timestamp() * 1000)) == NOW
    for bad in ("2026-11-25T08:00:00", "yesterday", True, 1.5, None, 10**20):
        with pytest.raises(ValueError):
            parse_occurred_at(bad)


def test_event_time_must_be_recent_and_not_in_the_future() -> None:
    event = parse_event(b'{"type": "like", "video_id": "v", "user_id": "u", "occurred_at": "2026-11-25T08:00:00Z"}')
    check_event_time(event, NOW)
    with pytest.raises(ApiError, match="future"):
        check_event_time(event, NOW - timedelta(hours=1))
    with pytest.raises(ApiError, match="older"):
        check_event_time(event, NOW + timedelta(days=8))


def test_missing_ids_and_times_are_assigned_by_the_server() -> None:
    _, topic, record = to_avro(parse_event(b'{"type": "unlike", "video_id": "v", "user_id": "u"}'), NOW)
    assert topic == "lustrax.engagement.likes"
    assert record["action"] == "UNLIKE" and record["occurred_at"] == NOW
    assert isinstance(record["event_id"], uuid.UUID)


def test_batch_errors_name_the_event() -> None:
    with pytest.raises(ApiError) as raised:
        parse_batch(b'{"events": [{"type": "like", "video_id": "v", "user_id": "u"}, {"type": "like"}]}')
    assert (raised.value.status, raised.value.field) == (422, "events[1].video_id")


def test_like_limiter_is_all_or_nothing_and_refills() -> None:
    limiter = TokenBucketLimiter(capacity=3, rate_per_s=1.0)
    assert limiter.try_acquire({"a": 2, "b": 1}, now=0.0) == 0
    assert limiter.try_acquire({"a": 2, "b": 1}, now=0.0) == pytest.approx(1.0)  # a has 1 left
    assert limiter.try_acquire({"b": 2}, now=0.0) == 0  # the refused demand took nothing from b
    assert limiter.try_acquire({"a": 2}, now=1.0) == 0
    assert limiter.try_acquire({"a": 4}, now=100.0) == float("inf")  # more than a burst: never


def test_limiter_memory_is_bounded() -> None:
    limiter = TokenBucketLimiter(capacity=1, rate_per_s=0.001, max_keys=2)
    for key in ("a", "b", "c"):
        assert limiter.try_acquire({key: 1}, now=0.0) == 0
    assert limiter.try_acquire({"a": 1}, now=0.0) == 0  # forgotten, so granted again


def test_recent_ids_expire_and_are_bounded() -> None:
    recent = RecentIds(ttl_s=10, max_ids=2)
    recent.add_all(["a", "b"], now=0)
    assert recent.contains_fresh("a", now=5) and not recent.contains_fresh("a", now=11)
    recent.add_all(["c"], now=1)
    assert not recent.contains_fresh("a", now=1) and recent.contains_fresh("c", now=1)


def test_token_verifier_remembers_valid_tokens_until_they_expire() -> None:
    secret = "s" * 40
    verifier = TokenVerifier(secret)
    token = issue_token(secret, "alice", ("service",), ttl_s=60, now=1000)
    header = f"Bearer {token}"
    principal = verifier.verify(header, now=1001)
    assert principal == Principal("alice", frozenset({"service"}), 1060.0)
    assert verifier.verify(header, now=1059) is principal
    with pytest.raises(ApiError) as raised:
        verifier.verify(header, now=1061)
    assert raised.value.status == 401


def test_only_privileged_tokens_act_for_others() -> None:
    authorize_user(Principal("a", frozenset()), "a")
    authorize_user(Principal("svc", frozenset({"service"})), "a")
    with pytest.raises(ApiError) as raised:
        authorize_user(Principal("b", frozenset({"viewer"})), "a", "events[2].user_id")
    assert (raised.value.status, raised.value.field) == (403, "events[2].user_id")


def test_container_magic_bytes() -> None:
    assert matches_container("video/mp4", b"\x00\x00\x00\x20ftypisom" + b"\x00" * 8)
    assert matches_container("video/webm", b"\x1a\x45\xdf\xa3" + b"\x00" * 8)
    assert not matches_container("video/mp4", b"<html><body>hello</body>")
    assert not matches_container("video/webm", b"\x00\x00\x00\x20ftypisom")


@pytest.mark.parametrize(("position", "accepted"), [(9469.0, True), (9469, True), (9469.5, False), ("9469", False),
                                                    (True, False)])
def test_integers_are_json_integers(position: object, accepted: bool) -> None:
    """JSON Schema's `integer` holds 9469.0 (the OpenAPI document says integer): so does the API."""
    body = json.dumps({"type": "watch_tick", "video_id": "v", "user_id": "u", "session_id": "s",
                       "position_ms": position, "duration_ms": 10_000.0}).encode()
    if accepted:
        event = parse_event(body)
        assert (event.position_ms, type(event.position_ms)) == (9469, int)
    else:
        with pytest.raises(ApiError) as refused:
            parse_event(body)
        assert refused.value.field == "position_ms"
