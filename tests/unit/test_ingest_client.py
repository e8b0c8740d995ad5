"""Retry and error behaviour of producers/client.py against httpx.MockTransport (no network)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from producers.client import (BACKOFF_BASE_S, MAX_BATCH_EVENTS, AsyncIngestClient, IngestClientError,
                              UploadTicket)

T = TypeVar("T")
Handler = Callable[[httpx.Request], httpx.Response]
VIEW = {"type": "view", "video_id": "v1", "user_id": "u1", "session_id": "s1"}
LIKE = {"type": "like", "video_id": "v1", "user_id": "u1", "occurred_at": 1_767_225_600_000}


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


class Recorder:
    """Answers requests from a script of responses and remembers the requests and the sleeps."""

    def __init__(self, *answers: httpx.Response | Exception | Handler) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []
        self.sleeps: list[float] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        request.read()  # streamed bodies are consumed here, as a server would
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer(request) if callable(answer) else answer

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    def client(self, max_retries: int = 3, **options: Any) -> AsyncIngestClient:
        return AsyncIngestClient("http://ingest.test", "tok", max_retries=max_retries,
                                 transport=httpx.MockTransport(self.handle), sleep=self.sleep, **options)

    def bodies(self) -> list[Any]:
        return [json.loads(request.content) for request in self.requests]


def error(status: int, code: str, field: str | None = None, retry_after: str | None = None) -> httpx.Response:
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    return httpx.Response(status, headers=headers, json={"error": {"code": code, "message": f"{code}!", "field": field}})


def accepted_batch(request: httpx.Request) -> httpx.Response:
    events = json.loads(request.content)["events"]
    return httpx.Response(202, json={"accepted": len(events), "event_ids": [event["event_id"] for event in events]})


def accepted_event(request: httpx.Request) -> httpx.Response:
    return httpx.Response(202, json={"event_id": json.loads(request.content)["event_id"]})


async def _send_event(recorder: Recorder, event: dict[str, Any], **options: Any) -> str:
    async with recorder.client(**options) as client:
        return await client.send_event(event)


async def _send_batch(recorder: Recorder, events: list[dict[str, Any]], **options: Any) -> list[str]:
    async with recorder.client(**options) as client:
        return await client.send_batch(events)


def test_a_503_with_retry_after_is_resent_once_with_the_same_event_id() -> None:
    recorder = Recorder(error(503, "broker_unavailable", retry_after="2"), accepted_event)
    event = dict(VIEW)
    event_id = run(_send_event(recorder, event))
    first, second = recorder.bodies()
    assert len(recorder.requests) == 2
    assert first == second and first["event_id"] == event_id
    assert uuid.UUID(event_id).version == 4
    assert event == VIEW  # the caller's dict is left alone
    assert recorder.requests[0].url.path == "/v1/events"
    assert recorder.requests[0].headers["Authorization"] == "Bearer tok"
    # Honours Retry-After: not sooner than asked, plus a little jitter.
    assert recorder.sleeps == [pytest.approx(2 + BACKOFF_BASE_S / 2, abs=BACKOFF_BASE_S / 2)]


def test_a_batch_is_resent_after_429_with_the_same_event_ids_and_given_ids_kept() -> None:
    recorder = Recorder(error(429, "rate_limited", retry_after="1"), accepted_batch)
    given = str(uuid.uuid4())
    event_ids = run(_send_batch(recorder, [VIEW, {**LIKE, "event_id": given}]))
    first, second = recorder.bodies()
    assert first == second
    assert [event["event_id"] for event in first["events"]] == event_ids
    assert event_ids[1] == given and event_ids[0] != given
    assert recorder.requests[1].url.path == "/v1/events/batch"
    assert len(recorder.sleeps) == 1 and recorder.sleeps[0] >= 1


def test_a_connection_error_is_retried_with_the_same_event_id() -> None:
    recorder = Recorder(httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), accepted_event)
    event_id = run(_send_event(recorder, LIKE))
    assert [body["event_id"] for body in recorder.bodies()] == [event_id] * 3
    # Without Retry-After: jittered exponential backoff.
    assert BACKOFF_BASE_S / 2 <= recorder.sleeps[0] <= BACKOFF_BASE_S
    assert BACKOFF_BASE_S <= recorder.sleeps[1] <= 2 * BACKOFF_BASE_S


def test_a_422_raises_with_the_field_and_is_not_retried() -> None:
    recorder = Recorder(error(422, "missing_field", field="events[3].user_id"))
    with pytest.raises(IngestClientError) as raised:
        run(_send_batch(recorder, [VIEW] * 5))
    assert (raised.value.status, raised.value.code, raised.value.field) == (422, "missing_field", "events[3].user_id")
    assert raised.value.message == "missing_field!"
    assert len(recorder.requests) == 1 and recorder.sleeps == []


@pytest.mark.parametrize("max_retries", [0, 1, 3])
def test_retries_stop_after_max_retries(max_retries: int) -> None:
    recorder = Recorder(error(503, "broker_unavailable", retry_after="1"))
    with pytest.raises(IngestClientError) as raised:
        run(_send_event(recorder, VIEW, max_retries=max_retries))
    assert (raised.value.status, raised.value.code) == (503, "broker_unavailable")
    assert len(recorder.requests) == max_retries + 1
    assert len(recorder.sleeps) == max_retries
    assert len({body["event_id"] for body in recorder.bodies()}) == 1


def test_connection_errors_stop_after_max_retries_with_no_status() -> None:
    recorder = Recorder(httpx.ConnectError("refused"))
    with pytest.raises(IngestClientError) as raised:
        run(_send_event(recorder, VIEW, max_retries=2))
    assert raised.value.status is None and raised.value.code == "unreachable"
    assert len(recorder.requests) == 3


def test_a_long_retry_after_is_capped() -> None:
    recorder = Recorder(error(503, "broker_unavailable", retry_after="3600"), accepted_event)
    run(_send_event(recorder, VIEW, max_retry_after_s=5.0))
    assert 5.0 <= recorder.sleeps[0] <= 5.0 + BACKOFF_BASE_S


def test_an_error_that_is_not_the_api_shape_still_raises_with_the_status() -> None:
    recorder = Recorder(httpx.Response(502, text="<html>bad gateway</html>"))
    with pytest.raises(IngestClientError) as raised:
        run(_send_event(recorder, VIEW))
    assert (raised.value.status, raised.value.code) == (502, "http_502")
    assert "bad gateway" in raised.value.message


def test_an_oversize_batch_fails_before_any_request_and_an_empty_one_sends_nothing() -> None:
    recorder = Recorder(accepted_batch)
    with pytest.raises(ValueError):
        run(_send_batch(recorder, [VIEW] * (MAX_BATCH_EVENTS + 1)))
    assert run(_send_batch(recorder, [])) == []
    assert recorder.requests == []


def test_the_upload_flow_and_its_presigned_put(tmp_path: Path) -> None:
    ticket_body = {"video_id": "vid 1", "upload_url": "http://s3.test/lustrax-uploads/vid1?X-Amz-Signature=abc",
                   "upload_headers": {"Content-Type": "video/mp4"}, "expires_at": "2026-01-01T00:15:00Z"}

    def server(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/uploads":
            return httpx.Response(201, json=ticket_body)
        if request.method == "PUT":
            return httpx.Response(200)
        return httpx.Response(202, json={"video_id": "vid 1", "event_id": "e-1", "state": "uploaded"})

    video = tmp_path / "clip.mp4"
    video.write_bytes(b"x" * 3_000_000)
    recorder = Recorder(server)

    async def flow() -> tuple[UploadTicket, str]:
        async with recorder.client() as client:
            ticket = await client.create_upload("Clip", "video/mp4", 3_000_000, premium=True, tags=("a",))
            await client.put_upload(ticket, video)
            await client.put_upload(ticket, b"small")
            return ticket, await client.complete_upload(ticket.video_id)

    ticket, event_id = run(flow())
    assert ticket == UploadTicket("vid 1", ticket_body["upload_url"], {"Content-Type": "video/mp4"},
                                  "2026-01-01T00:15:00Z")
    assert event_id == "e-1"
    create, put_file, put_bytes, complete = recorder.requests
    assert json.loads(create.content) == {"title": "Clip", "content_type": "video/mp4", "size_bytes": 3_000_000,
                                          "premium": True, "tags": ["a"]}
    assert put_file.url == httpx.URL(ticket_body["upload_url"])
    assert "Authorization" not in put_file.headers  # the URL's signature is the only credential
    assert put_file.headers["Content-Type"] == "video/mp4"
    assert put_file.headers["Content-Length"] == "3000000" and put_file.content == video.read_bytes()
    assert put_bytes.content == b"small"
    assert complete.url.raw_path == b"/v1/uploads/vid%201/complete"


def test_a_put_from_a_file_is_resent_whole_after_a_503(tmp_path: Path) -> None:
    video = tmp_path / "clip.mp4"
    video.write_bytes(bytes(range(256)) * 5000)
    recorder = Recorder(httpx.Response(503, text="<Error><Code>SlowDown</Code></Error>"), httpx.Response(200))
    ticket = UploadTicket("v", "http://s3.test/u/v", {}, "2026-01-01T00:15:00Z")

    async def put() -> None:
        async with recorder.client() as client:
            await client.put_upload(ticket, video)

    run(put())
    assert [request.content for request in recorder.requests] == [video.read_bytes()] * 2


def test_creating_an_upload_is_not_repeated_when_the_request_may_have_arrived() -> None:
    recorder = Recorder(httpx.ReadTimeout("no answer"), httpx.Response(201))

    async def create() -> UploadTicket:
        async with recorder.client() as client:
            return await client.create_upload("t", "video/mp4", 1)

    with pytest.raises(IngestClientError) as raised:
        run(create())
    assert raised.value.status is None and len(recorder.requests) == 1
