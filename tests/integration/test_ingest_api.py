"""The ingest API over real HTTP against the real broker: round trips, auth, validation, limits."""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from confluent_kafka import Consumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from common.settings import Settings
from common.tokens import issue_token
from producers.events import MAX_BATCH_EVENTS
from schemas.codec import decode
from schemas.errors import SchemaError
from schemas.topics import TOPIC_BY_SCHEMA

pytestmark = pytest.mark.integration

TOPIC_OF_TYPE = {"view": "VideoView", "like": "VideoLike", "unlike": "VideoLike", "watch_tick": "WatchTick"}


def token(settings: Settings, user: str, roles: tuple[str, ...] = (), ttl_s: int = 600) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_token(settings.jwt_signing_secret, user, roles, ttl_s)}"}


def consume_ids(settings: Settings, topic: str, event_ids: Iterable[str], timeout_s: float = 15
                ) -> dict[str, list[tuple[bytes, dict[str, Any]]]]:
    """Messages on `topic` whose decoded event_id is wanted: event_id -> every (key, record) seen."""
    wanted = set(event_ids)
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": f"t-{uuid.uuid4().hex}",
                         "enable.auto.commit": False})
    metadata = consumer.list_topics(topic, timeout=10).topics[topic]
    consumer.assign([TopicPartition(topic, p, 0) for p in metadata.partitions])  # from the beginning
    found: dict[str, list[tuple[bytes, dict[str, Any]]]] = {}
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            msg = consumer.poll(0.3)
            if msg is None:
                if wanted <= set(found):
                    break  # everything seen and the topic is drained
                continue
            if msg.error():
                continue
            try:
                _, record = decode(msg.value())
            except SchemaError:
                continue  # other tests put undecodable bytes on some topics on purpose
            event_id = str(record["event_id"])
            if event_id in wanted:
                found.setdefault(event_id, []).append((msg.key(), record))
    finally:
        consumer.close()
    return found


@pytest.fixture()
def api(ingest_api: str) -> httpx.Client:
    with httpx.Client(base_url=ingest_api, timeout=20) as client:
        yield client


def _events(user: str, video: str) -> list[dict[str, Any]]:
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=30)
    return [
        {"type": "view", "video_id": video, "user_id": user, "session_id": "s1",
         "occurred_at": at.isoformat().replace("+00:00", "Z"), "event_id": str(uuid.uuid4())},
        {"type": "like", "video_id": video, "user_id": user, "occurred_at": int(at.timestamp() * 1000),
         "event_id": str(uuid.uuid4())},
        {"type": "unlike", "video_id": video, "user_id": user, "event_id": str(uuid.uuid4())},
        {"type": "watch_tick", "video_id": video, "user_id": user, "session_id": "s1", "position_ms": 5000,
         "duration_ms": 60000, "event_id": str(uuid.uuid4())},
    ]


def _assert_record_matches(event: dict[str, Any], key: bytes, record: dict[str, Any]) -> None:
    assert key == event["video_id"].encode()
    assert str(record["event_id"]) == event["event_id"]
    assert record["producer"] == "ingest-api"
    for field in ("video_id", "user_id", "session_id", "position_ms", "duration_ms"):
        if field in event:
            assert record[field] == event[field], field
    if event["type"] in ("like", "unlike"):
        assert record["action"] == event["type"].upper()
    if isinstance(event.get("occurred_at"), str):
        assert record["occurred_at"] == datetime.fromisoformat(event["occurred_at"].replace("Z", "+00:00"))
    elif isinstance(event.get("occurred_at"), int):
        assert int(record["occurred_at"].timestamp() * 1000) == event["occurred_at"]
    else:
        assert abs(record["occurred_at"] - datetime.now(UTC)) < timedelta(minutes=1)


def test_every_event_type_round_trips_through_kafka(api: httpx.Client, stack: Settings) -> None:
    user, video = f"u-{uuid.uuid4().hex[:8]}", f"v-{uuid.uuid4().hex[:8]}"
    events = _events(user, video)
    for event in events:
        response = api.post("/v1/events", json=event, headers=token(stack, user))
        assert response.status_code == 202, response.text
        assert response.json() == {"event_id": event["event_id"]}
    for event in events:
        topic = TOPIC_BY_SCHEMA[TOPIC_OF_TYPE[event["type"]]].name
        [(key, record)] = consume_ids(stack, topic, [event["event_id"]])[event["event_id"]]
        _assert_record_matches(event, key, record)


def test_a_batch_is_acknowledged_with_every_event_on_its_topic(api: httpx.Client, stack: Settings) -> None:
    user = f"u-{uuid.uuid4().hex[:8]}"
    events = [e for i in range(5) for e in _events(user, f"v-{i}-{uuid.uuid4().hex[:6]}") if e["type"] != "like"]
    for event in events:
        event.pop("event_id")  # the server assigns them
    response = api.post("/v1/events/batch", json={"events": events}, headers=token(stack, user))
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["accepted"] == len(events) and len(set(body["event_ids"])) == len(events)
    for event, event_id in zip(events, body["event_ids"], strict=True):
        event["event_id"] = event_id
        topic = TOPIC_BY_SCHEMA[TOPIC_OF_TYPE[event["type"]]].name
        [(key, record)] = consume_ids(stack, topic, [event_id])[event_id]
        _assert_record_matches(event, key, record)


def test_a_repeated_event_id_is_written_once(api: httpx.Client, stack: Settings) -> None:
    user = f"u-{uuid.uuid4().hex[:8]}"
    event = _events(user, f"v-{uuid.uuid4().hex[:8]}")[0]
    for _ in range(3):
        assert api.post("/v1/events", json=event, headers=token(stack, user)).status_code == 202
    found = consume_ids(stack, TOPIC_BY_SCHEMA["VideoView"].name, [event["event_id"]])
    assert len(found[event["event_id"]]) == 1


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "unauthenticated"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "unauthenticated"),
        ({"Authorization": "Bearer not-a-jwt"}, "invalid_token"),
    ],
)
def test_requests_without_a_valid_token_get_401(api: httpx.Client, headers: dict[str, str], code: str) -> None:
    response = api.post("/v1/events", json=_events("u", "v")[0], headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == code


def test_expired_and_foreign_tokens_get_401(api: httpx.Client, stack: Settings) -> None:
    expired = {"Authorization": f"Bearer {issue_token(stack.jwt_signing_secret, 'u', (), -10)}"}
    assert api.post("/v1/events", json=_events("u", "v")[0], headers=expired).json()["error"]["code"] == \
        "token_expired"
    forged = {"Authorization": f"Bearer {issue_token('another-secret-of-sufficient-length', 'u')}"}
    assert api.post("/v1/events", json=_events("u", "v")[0], headers=forged).status_code == 401


def test_events_for_another_user_get_403_unless_the_token_is_a_service(api: httpx.Client, stack: Settings) -> None:
    event = _events("alice", "v")[0]
    response = api.post("/v1/events", json=event, headers=token(stack, "mallory"))
    assert response.status_code == 403 and response.json()["error"]["field"] == "user_id"
    assert api.post("/v1/events", json=event, headers=token(stack, "simulator", ("service",))).status_code == 202


def _post_raw(api: httpx.Client, stack: Settings, path: str, body: bytes,
              content_type: str = "application/json") -> httpx.Response:
    return api.post(path, content=body, headers={**token(stack, "u"), "Content-Type": content_type})


@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        (b'{"type": "view", ', 400, "invalid_json", None),
        (b'{"type": "dislike", "video_id": "v", "user_id": "u"}', 422, "unknown_type", "type"),
        (b'{"type": "view", "video_id": "v", "user_id": "u"}', 422, "missing_field", "session_id"),
        (b'{"type": "watch_tick", "video_id": "v", "user_id": "u", "session_id": "s", "position_ms": "10",'
         b' "duration_ms": 100}', 422, "invalid_field", "position_ms"),
        (b'{"type": "watch_tick", "video_id": "v", "user_id": "u", "session_id": "s", "position_ms": 200,'
         b' "duration_ms": 100}', 422, "invalid_field", "position_ms"),
        (json.dumps({"type": "like", "video_id": "v" * 129, "user_id": "u"}).encode(), 422, "invalid_value",
         "video_id"),
        (b'{"type": "like", "video_id": "../../etc", "user_id": "u"}', 422, "invalid_value", "video_id"),
        (b'{"type": "like", "video_id": "v", "user_id": "u", "admin": true}', 422, "unknown_field", "admin"),
        (b'{"type": "like", "video_id": "v", "user_id": "u", "occurred_at": "2999-01-01T00:00:00Z"}', 422,
         "invalid_value", "occurred_at"),
        (b'{"type": "like", "video_id": "v", "user_id": "u", "event_id": "not-a-uuid"}', 422, "invalid_field",
         "event_id"),
    ],
)
def test_bad_events_get_a_4xx_naming_the_field(api: httpx.Client, stack: Settings, body: bytes, status: int,
                                                code: str, field: str | None) -> None:
    response = _post_raw(api, stack, "/v1/events", body)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["field"] == field


def test_size_and_media_type_limits(api: httpx.Client, stack: Settings) -> None:
    huge = json.dumps({"type": "view", "video_id": "v", "user_id": "u", "session_id": "s" * (2 * 1024 * 1024)})
    assert _post_raw(api, stack, "/v1/events", huge.encode()).status_code == 413
    too_many = {"events": [_events("u", "v")[2] | {"event_id": str(uuid.uuid4())}
                           for _ in range(MAX_BATCH_EVENTS + 1)]}
    response = _post_raw(api, stack, "/v1/events/batch", json.dumps(too_many).encode())
    assert response.status_code == 413 and response.json()["error"]["code"] == "batch_too_large"
    assert _post_raw(api, stack, "/v1/events", b"type=view", "application/x-www-form-urlencoded").status_code == 415


def test_a_batch_with_one_bad_event_writes_nothing(api: httpx.Client, stack: Settings) -> None:
    user = f"u-{uuid.uuid4().hex[:8]}"
    events = _events(user, f"v-{uuid.uuid4().hex[:8]}")
    bad = dict(events[0])
    del bad["session_id"]
    response = api.post("/v1/events/batch", json={"events": [*events, bad]}, headers=token(stack, user))
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "events[4].session_id"
    foreign = api.post("/v1/events/batch", json={"events": [*events, _events("someone-else", "v")[0]]},
                       headers=token(stack, user))
    assert foreign.status_code == 403 and foreign.json()["error"]["field"] == "events[4].user_id"
    view_topic = TOPIC_BY_SCHEMA["VideoView"].name
    assert consume_ids(stack, view_topic, [events[0]["event_id"]], timeout_s=4) == {}


def test_likes_are_rate_limited_per_user(api: httpx.Client, stack: Settings) -> None:
    user = f"u-{uuid.uuid4().hex[:8]}"
    like = {"type": "like", "video_id": "v", "user_id": user}
    burst = [like] * stack.ingest_like_burst
    assert api.post("/v1/events/batch", json={"events": burst}, headers=token(stack, user)).status_code == 202
    response = api.post("/v1/events", json=like, headers=token(stack, user))
    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) >= 1
    other = {"type": "like", "video_id": "v", "user_id": f"{user}-other"}
    assert api.post("/v1/events", json=other, headers=token(stack, other["user_id"])).status_code == 202
    # Views are not rate limited.
    assert api.post("/v1/events", json=_events(user, "v")[0], headers=token(stack, user)).status_code == 202


def test_health_readiness_metrics_and_openapi(api: httpx.Client, stack: Settings) -> None:
    assert api.get("/healthz").json() == {"status": "ok"}
    assert api.get("/readyz").status_code == 200
    api.post("/v1/events", json=_events("u", "v")[0], headers=token(stack, "u"))
    api.post("/v1/events", content=b"{", headers={**token(stack, "u"), "Content-Type": "application/json"})
    metrics = api.get("/metrics").text
    assert 'lustrax_ingest_events_accepted_total{type="view"}' in metrics
    assert 'reason="invalid_json"' in metrics
    assert "lustrax_ingest_produce_latency_seconds_bucket" in metrics
    spec = api.get("/openapi.json").json()
    assert {"/v1/events", "/v1/events/batch", "/v1/uploads", "/v1/uploads/{video_id}/complete"} <= set(spec["paths"])
    body_ref = spec["paths"]["/v1/events"]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    body_schema = spec["components"]["schemas"][body_ref.rsplit("/", 1)[1]]
    assert body_schema["discriminator"]["propertyName"] == "type" and len(body_schema["oneOf"]) == 3


def test_a_batch_over_the_like_burst_is_refused_for_good_and_takes_nothing(api: httpx.Client,
                                                                           stack: Settings) -> None:
    user = f"u-{uuid.uuid4().hex[:8]}"
    like = {"type": "like", "video_id": "v", "user_id": user}
    too_many = {"events": [like] * (stack.ingest_like_burst + 1)}
    response = api.post("/v1/events/batch", json=too_many, headers=token(stack, user))
    assert response.status_code == 422 and "Retry-After" not in response.headers
    error = response.json()["error"]
    assert (error["code"], error["field"]) == ("too_many_likes", "events")
    assert f"at most {stack.ingest_like_burst} likes" in error["message"]
    # The refusal took no tokens: a full burst still goes through.
    burst = {"events": [like] * stack.ingest_like_burst}
    assert api.post("/v1/events/batch", json=burst, headers=token(stack, user)).status_code == 202


def test_tokens_living_longer_than_the_maximum_get_401(api: httpx.Client, stack: Settings) -> None:
    long_lived = token(stack, "u", ttl_s=stack.jwt_max_ttl_s + 1)
    response = api.post("/v1/events", json=_events("u", "v")[0], headers=long_lived)
    assert response.status_code == 401
    assert response.json()["error"] == {"code": "token_lifetime_too_long", "field": "authorization",
                                         "message": response.json()["error"]["message"]}
    assert str(stack.jwt_max_ttl_s) in response.json()["error"]["message"]
    assert api.post("/v1/events", json=_events("u", "v")[0],
                    headers=token(stack, "u", ttl_s=stack.jwt_max_ttl_s)).status_code == 202


def _rejections(api: httpx.Client) -> Counter[tuple[str, str]]:
    counts: Counter[tuple[str, str]] = Counter()
    for family in text_string_to_metric_families(api.get("/metrics").text):
        for sample in family.samples:
            if sample.name == "lustrax_ingest_requests_rejected_total":
                counts[(sample.labels["type"], sample.labels["reason"])] += int(sample.value)
    return counts


def test_rejections_are_counted_under_the_request_kind_once_authenticated(api: httpx.Client,
                                                                          stack: Settings) -> None:
    before = _rejections(api)
    upload = {"title": "t", "content_type": "video/mp4", "size_bytes": 10}
    assert api.post("/v1/uploads", json=upload).status_code == 401
    assert _post_raw(api, stack, "/v1/uploads", b"title=t", "text/plain").status_code == 415
    assert _post_raw(api, stack, "/v1/events/batch", b"{").status_code == 400
    foreign = {"events": [_events("someone-else", "v")[0]]}
    assert api.post("/v1/events/batch", json=foreign, headers=token(stack, "u")).status_code == 403
    assert api.post("/v1/uploads/aaaaaaaaaaaaaaaaaaaaaaaa/complete", headers=token(stack, "u")).status_code == 404
    counted = _rejections(api) - before
    assert counted == Counter({("unknown", "unauthenticated"): 1, ("upload", "unsupported_media_type"): 1,
                               ("unknown", "invalid_json"): 1, ("batch", "forbidden"): 1,
                               ("upload_complete", "not_found"): 1})
