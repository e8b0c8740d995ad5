"""An asyncio client of the ingest API (API.md): events, batches and the upload flow.

Retries are safe because every event carries a client-chosen `event_id` (the idempotency key)
from before the first attempt: a resend after a lost answer is recognised downstream as the same
event instead of being counted twice. Only answers that say "not done, try later" (429, 503) and
transport failures are retried; anything else is the caller's problem and raises at once.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx

# The contract's batch limit, checked here so an oversize batch fails before any I/O.
MAX_BATCH_EVENTS = 500
RETRYABLE_STATUSES = frozenset({429, 503})
BACKOFF_BASE_S = 0.5
BACKOFF_MAX_S = 30.0
DEFAULT_MAX_RETRY_AFTER_S = 60.0
UPLOAD_CHUNK_BYTES = 1 << 20
# Failures before the request left this machine: retrying cannot duplicate anything.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)

# Bytes are resent as they are; a stream cannot be rewound, so it comes as a factory called per attempt.
Body = bytes | Callable[[], AsyncIterator[bytes]]


class IngestClientError(Exception):
    """An error answer of the API (or of the upload URL), or no answer at all (`status` None)."""

    def __init__(self, status: int | None, code: str, message: str, field: str | None = None,
                 retry_after_s: float | None = None) -> None:
        super().__init__(f"{status or 'no answer'} {code}: {message}" + (f" (field {field})" if field else ""))
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.retry_after_s = retry_after_s  # the answer's Retry-After, when it had one


@dataclass(frozen=True)
class UploadTicket:
    """Where and how to PUT the file of a new video (a presigned URL, valid until `expires_at`)."""

    video_id: str
    upload_url: str
    upload_headers: dict[str, str]
    expires_at: str  # RFC 3339, as the API sent it


def with_event_id(event: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of `event` that surely has an event_id (a new uuid4 unless it had one)."""
    return dict(event) if event.get("event_id") else {**event, "event_id": str(uuid.uuid4())}


def _retry_after_s(response: httpx.Response) -> float | None:
    """Retry-After in seconds (the contract's form); None when absent or not a number."""
    try:
        return max(0.0, float(response.headers["retry-after"]))
    except (KeyError, ValueError):
        return None


def _error_of(response: httpx.Response) -> IngestClientError:
    status = response.status_code
    try:
        error = response.json()["error"]
        return IngestClientError(status, str(error["code"]), str(error["message"]), error.get("field"),
                                 _retry_after_s(response))
    except (ValueError, KeyError, TypeError):
        # Not the API's error shape: a proxy's page or the S3 server's XML behind a presigned URL.
        return IngestClientError(status, f"http_{status}", response.text[:500] or response.reason_phrase)


def _json_object(response: httpx.Response, *keys: str) -> dict[str, Any]:
    """The answer's JSON object, checked to carry `keys`."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or any(key not in body for key in keys):
        raise IngestClientError(response.status_code, "invalid_response",
                                f"expected a JSON object with {', '.join(keys)}, got {response.text[:200]!r}")
    return body


async def _file_chunks(path: Path) -> AsyncIterator[bytes]:
    # Streamed so a large video is never held in memory; each read is short enough for the loop.
    with path.open("rb") as file:
        while chunk := await asyncio.to_thread(file.read, UPLOAD_CHUNK_BYTES):
            yield chunk


class AsyncIngestClient:
    """`async with AsyncIngestClient(url, token) as client: await client.send_batch(events)`.

    `max_retries` counts resends after the first attempt. `transport` and `sleep` are seams for
    tests (an `httpx.MockTransport`, a recording sleep).
    """

    def __init__(self, base_url: str, token: str, timeout_s: float = 10, max_retries: int = 3, *,
                 max_retry_after_s: float = DEFAULT_MAX_RETRY_AFTER_S,
                 transport: httpx.AsyncBaseTransport | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        self.max_retries = max_retries
        self.max_retry_after_s = max_retry_after_s
        self._auth = {"Authorization": f"Bearer {token}"}
        self._sleep = sleep
        self._http = httpx.AsyncClient(base_url=base_url, timeout=timeout_s, transport=transport)

    async def __aenter__(self) -> AsyncIngestClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        traceback: TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def send_event(self, event: Mapping[str, Any]) -> str:
        """Send one event (the caller's dict is not modified); its event_id once the broker has it."""
        response = await self._request("POST", "/v1/events", json=with_event_id(event))
        return str(_json_object(response, "event_id")["event_id"])

    async def send_batch(self, events: Sequence[Mapping[str, Any]]) -> list[str]:
        """Send events all-or-nothing; their event_ids in order. An invalid event rejects the batch."""
        if not events:
            return []
        if len(events) > MAX_BATCH_EVENTS:
            raise ValueError(f"a batch holds at most {MAX_BATCH_EVENTS} events, got {len(events)}")
        body = {"events": [with_event_id(event) for event in events]}
        response = await self._request("POST", "/v1/events/batch", json=body)
        event_ids = _json_object(response, "event_ids")["event_ids"]
        if not isinstance(event_ids, list) or len(event_ids) != len(events):
            raise IngestClientError(response.status_code, "invalid_response",
                                    f"expected {len(events)} event_ids, got {event_ids!r:.200}")
        return [str(event_id) for event_id in event_ids]

    async def create_upload(self, title: str, content_type: str, size_bytes: int, premium: bool = False,
                            tags: Sequence[str] = ()) -> UploadTicket:
        body = {"title": title, "content_type": content_type, "size_bytes": size_bytes, "premium": premium,
                "tags": list(tags)}
        # Not idempotent (each call reserves a new video): resent only when the server surely did nothing.
        response = await self._request("POST", "/v1/uploads", json=body, idempotent=False)
        answer = _json_object(response, "video_id", "upload_url", "expires_at")
        headers = answer.get("upload_headers") or {}
        return UploadTicket(str(answer["video_id"]), str(answer["upload_url"]),
                            {str(name): str(value) for name, value in headers.items()}, str(answer["expires_at"]))

    async def put_upload(self, ticket: UploadTicket, data: bytes | Path) -> None:
        """PUT the file to the ticket's presigned URL (a PUT of the same bytes may be repeated)."""
        headers = dict(ticket.upload_headers)
        body: Body = data if isinstance(data, bytes) else partial(_file_chunks, data)
        if isinstance(data, Path):
            # A known length keeps httpx from sending it chunked, which presigned S3 PUTs refuse.
            headers["Content-Length"] = str(data.stat().st_size)
        # The URL carries its own signature: a second auth mechanism (our bearer) would be refused.
        await self._request("PUT", ticket.upload_url, body=body, headers=headers, authenticated=False)

    async def complete_upload(self, video_id: str) -> str:
        """Tell the API the file is in place; the event_id of the VideoUploaded event."""
        response = await self._request("POST", f"/v1/uploads/{quote(video_id, safe='')}/complete",
                                       idempotent=False)
        return str(_json_object(response, "event_id")["event_id"])

    def _delay_s(self, attempt: int, retry_after_s: float | None) -> float:
        if retry_after_s is not None:
            # Never sooner than the server asked (capped, so a bogus header cannot stall us); the
            # jitter on top keeps clients told the same time from returning in lockstep.
            return min(retry_after_s, self.max_retry_after_s) + random.uniform(0, BACKOFF_BASE_S)
        backoff = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2 ** attempt)
        return random.uniform(backoff / 2, backoff)

    async def _request(self, method: str, url: str, *, json: object = None, body: Body | None = None,
                       headers: Mapping[str, str] | None = None, authenticated: bool = True,
                       idempotent: bool = True) -> httpx.Response:
        """The successful response; retries 429/503 and transport failures up to max_retries times.

        `json` is serialised once per attempt from the same object, so a resend carries exactly the
        same event_ids.
        """
        all_headers = {**(self._auth if authenticated else {}), **(headers or {})}
        attempt = 0
        while True:
            last = attempt == self.max_retries
            try:
                response = await self._http.request(method, url, json=json, headers=all_headers,
                                                    content=body() if callable(body) else body)
            except httpx.TransportError as exc:
                # A request that may have reached the server is only repeated when repeating is harmless.
                if last or not (idempotent or isinstance(exc, _NOT_SENT)):
                    raise IngestClientError(None, "unreachable", f"{method} {url}: {exc!r}") from exc
                await self._sleep(self._delay_s(attempt, None))
            else:
                if response.is_success:
                    return response
                if response.status_code not in RETRYABLE_STATUSES or last:
                    raise _error_of(response)
                await self._sleep(self._delay_s(attempt, _retry_after_s(response)))
            attempt += 1
