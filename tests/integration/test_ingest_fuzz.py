"""Property-based fuzzing of the ingest API: whatever the payload, never a 5xx but 503, never a traceback."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from common.settings import Settings
from common.tokens import issue_token

pytestmark = pytest.mark.integration

ALLOWED = {201, 202, 400, 401, 403, 404, 409, 413, 415, 422, 429, 503}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.floats(allow_nan=False)
    | st.text(max_size=50),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=6),
    max_leaves=25,
)
field_values = st.one_of(
    json_values, st.uuids().map(str), st.sampled_from(["", "v1", "u1", "../x", "2026-11-25T08:00:00Z", "a" * 300]),
    st.integers(min_value=-1, max_value=2**63), st.just(1795593600000),
)
near_valid_events = st.fixed_dictionaries(
    {"type": st.sampled_from(["view", "like", "unlike", "watch_tick", "dislike", ""]) | json_values},
    optional={name: field_values for name in
              ("video_id", "user_id", "session_id", "position_ms", "duration_ms", "occurred_at", "event_id")},
)


def _check(response: httpx.Response) -> None:
    assert response.status_code in ALLOWED, (response.status_code, response.text)
    assert "Traceback" not in response.text
    if response.status_code >= 400:
        error = response.json()["error"]
        assert isinstance(error["code"], str) and isinstance(error["message"], str)


@pytest.fixture(scope="module")
def fuzz_client(ingest_api: str, stack: Settings) -> httpx.Client:
    token = issue_token(stack.jwt_signing_secret, "fuzzer", ("service",), 3600)
    with httpx.Client(base_url=ingest_api, timeout=20,
                      headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"}) as client:
        yield client


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(event=near_valid_events)
def test_single_events(fuzz_client: httpx.Client, event: dict[str, Any]) -> None:
    _check(fuzz_client.post("/v1/events", content=json.dumps(event)))


@settings(max_examples=75, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=st.lists(near_valid_events, max_size=8), wrapper=st.sampled_from(["events", "items"]))
def test_batches(fuzz_client: httpx.Client, events: list[dict[str, Any]], wrapper: str) -> None:
    _check(fuzz_client.post("/v1/events/batch", content=json.dumps({wrapper: events})))


@settings(max_examples=75, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode()),
       path=st.sampled_from(["/v1/events", "/v1/events/batch", "/v1/uploads", "/v1/uploads/abc/complete"]))
def test_arbitrary_bodies(fuzz_client: httpx.Client, body: bytes, path: str) -> None:
    _check(fuzz_client.post(path, content=body))
