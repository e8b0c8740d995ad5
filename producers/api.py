"""The ingest API (API.md, "Ingest API"): JSON in, Avro on Kafka, 202 only once the broker acked.

Batch semantics: all or nothing at validation. Every event of a batch is validated, authorized and
rate-checked before anything is produced; one bad event rejects the whole batch with an error
naming it (`events[3].user_id`) and nothing is written. Once valid, the events are produced and
the answer is 202 only when the broker has acknowledged every one of them. If the broker fails
part-way, the answer is 503 and some events may have been written: the client retries the same
batch with the same event_ids (our client assigns them before the first attempt), and downstream
deduplication by event_id counts each once.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import math
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import uvicorn
from botocore.exceptions import BotoCoreError, ClientError
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from prometheus_client import CollectorRegistry, Counter as MetricCounter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from pydantic import TypeAdapter, ValidationError

from infra.s3.buckets import s3_client
from common.settings import Settings
from common.tokens import Principal, TokenVerifier, authorize_user
from common.errors import ApiError, BrokerUnavailable
from producers.events import (BATCH_ADAPTER, EVENT_ADAPTER, PRODUCER_NAME, LikeEvent, check_event_time,
                              parse_batch, parse_event, to_avro, validation_error)
from infra.kafka.producer import AsyncProducer, OutgoingMessage, producer_config
from producers.limits import RecentIds, TokenBucketLimiter
from infra.s3.uploads import uploaded_event_id, uploaded_record
from producers.uploads import UploadRequest, UploadService
from schemas.codec import encode
from schemas.topics import TOPIC_BY_SCHEMA

log = logging.getLogger(__name__)
JSON_TYPES = ("application/json",)


class IngestMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.accepted = MetricCounter("lustrax_ingest_events_accepted", "Events acknowledged by the broker",
                                      ["type"], registry=self.registry)
        self.rejected = MetricCounter("lustrax_ingest_requests_rejected", "Requests refused, by event type and reason",
                                      ["type", "reason"], registry=self.registry)
        self.produce_latency = Histogram(
            "lustrax_ingest_produce_latency_seconds", "From produce to broker acknowledgement of a request's events",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10), registry=self.registry)


class IngestService:
    """Everything a request needs; one per process (the composition root of the API)."""

    def __init__(self, settings: Settings, producer: AsyncProducer, uploads: UploadService) -> None:
        self.settings = settings
        self.producer = producer
        self.uploads = uploads
        self.metrics = IngestMetrics()
        self.like_limiter = TokenBucketLimiter(settings.ingest_like_burst, settings.ingest_like_rate_per_min / 60)
        self.recent = RecentIds()
        self.tokens = TokenVerifier(settings.jwt_signing_secret)

    def principal(self, request: Request) -> Principal:
        return self.tokens.verify(request.headers.get("authorization"))

    async def read_json_body(self, request: Request) -> bytes:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type not in JSON_TYPES:
            raise ApiError(415, "unsupported_media_type", "the body must be application/json", "content-type")
        limit = self.settings.ingest_max_body_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise ApiError(413, "body_too_large", f"the body may hold at most {limit} bytes", None)
        size, chunks = 0, []
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ApiError(413, "body_too_large", f"the body may hold at most {limit} bytes", None)
            chunks.append(chunk)
        return b"".join(chunks)

    async def accept(self, principal: Principal, events: list[Any], prefix: str | None) -> list[str]:
        """Authorize, rate-limit, encode and produce; returns event ids once all are acknowledged."""
        now = datetime.now(UTC)
        for index, event in enumerate(events):
            where = f"{prefix}[{index}]." if prefix else ""
            check_event_time(event, now, f"{where}occurred_at")
            authorize_user(principal, event.user_id, f"{where}user_id")
        likes = Counter(e.user_id for e in events if isinstance(e, LikeEvent))
        if likes:
            wait_s = self.like_limiter.try_acquire(dict(likes), time.monotonic())
            if wait_s > 0:
                raise ApiError(429, "rate_limited", "too many likes; slow down", "type",
                               retry_after_s=max(1, math.ceil(min(wait_s, 3600))))
        messages, event_ids = [], []
        for event in events:
            schema, topic, record = to_avro(event, now)
            event_id = str(record["event_id"])
            event_ids.append(event_id)
            if self.recent.contains_fresh(event_id, time.monotonic()):
                continue  # acknowledged before: a retry whose answer the client lost
            # The models validated every field; tests/unit/test_ingest_events.py proves each record
            # they can produce passes the codec's own validation.
            value = encode(schema, record, validate_record=False)
            messages.append(OutgoingMessage(topic, event.video_id.encode(), value))
        started = time.perf_counter()
        await self.producer.produce_all(messages)
        self.metrics.produce_latency.observe(time.perf_counter() - started)
        self.recent.add_all(event_ids, time.monotonic())
        for event_type, count in Counter(event.type for event in events).items():
            self.metrics.accepted.labels(event_type).inc(count)
        return event_ids

    async def storage(self, call: Any, *args: Any) -> Any:
        """A blocking S3 call off the event loop; S3 trouble is a 503, not a 500."""
        try:
            return await asyncio.to_thread(call, *args)
        except (ClientError, BotoCoreError) as exc:
            raise ApiError(503, "storage_unavailable", f"object storage failed: {exc}", None, retry_after_s=5) \
                from None


def _error_response(error: ApiError) -> JSONResponse:
    headers = {"Retry-After": str(error.retry_after_s)} if error.retry_after_s else None
    return JSONResponse(error.body(), status_code=error.status, headers=headers)


def _request_body_schema(adapter: TypeAdapter[Any], defs: dict[str, Any]) -> dict[str, Any]:
    schema = adapter.json_schema(ref_template="#/components/schemas/{model}")
    defs.update(schema.pop("$defs", {}))
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def create_app(settings: Settings, producer: AsyncProducer | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own_producer = producer is None
        service = IngestService(
            settings,
            producer or AsyncProducer(producer_config(settings.kafka_bootstrap, settings.ingest_delivery_timeout_ms)),
            UploadService(s3_client(settings), settings.s3_uploads_bucket, settings.upload_max_bytes,
                          settings.upload_url_ttl_s),
        )
        app.state.service = service
        yield
        if own_producer:
            service.producer.close()

    app = FastAPI(title="LustraX ingest API", version="1.0.0", lifespan=lifespan,
                  description=__doc__, docs_url="/docs", redoc_url=None)
    defs: dict[str, Any] = {}
    event_body = _request_body_schema(EVENT_ADAPTER, defs)
    batch_body = _request_body_schema(BATCH_ADAPTER, defs)
    upload_body = _request_body_schema(TypeAdapter(UploadRequest), defs)

    def service_of(request: Request) -> IngestService:
        return request.app.state.service  # type: ignore[no-any-return]

    @app.exception_handler(ApiError)
    async def on_api_error(request: Request, exc: ApiError) -> JSONResponse:
        reason = exc.code
        service_of(request).metrics.rejected.labels(request.scope.get("lustrax_type", "unknown"), reason).inc()
        return _error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body", "path", "query")) or None
        return _error_response(ApiError(422, "invalid_field", str(first.get("msg")), field))

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _error_response(ApiError(exc.status_code, code, str(exc.detail), None))

    @app.exception_handler(Exception)
    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return _error_response(ApiError(500, "internal_error", "an unexpected error occurred", None))

    @app.post("/v1/events", status_code=202, openapi_extra={"requestBody": event_body})
    async def post_event(request: Request) -> JSONResponse:
        service = service_of(request)
        principal = service.principal(request)
        event = parse_event(await service.read_json_body(request))
        request.scope["lustrax_type"] = event.type
        event_ids = await service.accept(principal, [event], None)
        return JSONResponse({"event_id": event_ids[0]}, status_code=202)

    @app.post("/v1/events/batch", status_code=202, openapi_extra={"requestBody": batch_body})
    async def post_batch(request: Request) -> JSONResponse:
        service = service_of(request)
        principal = service.principal(request)
        events = parse_batch(await service.read_json_body(request))
        request.scope["lustrax_type"] = "batch"
        event_ids = await service.accept(principal, events, "events")
        return JSONResponse({"accepted": len(event_ids), "event_ids": event_ids}, status_code=202)

    @app.post("/v1/uploads", status_code=201, openapi_extra={"requestBody": upload_body})
    async def post_upload(request: Request) -> JSONResponse:
        service = service_of(request)
        principal = service.principal(request)
        request.scope["lustrax_type"] = "upload"
        body = await service.read_json_body(request)
        try:
            upload = UploadRequest.model_validate_json(body)
        except ValidationError as exc:
            raise validation_error(exc) from None
        key = request.headers.get("idempotency-key")
        if key is not None and not (1 <= len(key) <= 128):
            raise ApiError(422, "invalid_value", "Idempotency-Key must be 1 to 128 characters", "idempotency-key")
        ticket = await service.storage(service.uploads.create, upload, principal.user_id, key, datetime.now(UTC))
        return JSONResponse(ticket, status_code=201)

    @app.post("/v1/uploads/{video_id}/complete", status_code=202)
    async def complete_upload(video_id: str, request: Request) -> JSONResponse:
        service = service_of(request)
        principal = service.principal(request)
        request.scope["lustrax_type"] = "upload_complete"
        manifest = await service.storage(service.uploads.check_completed, video_id,
                                         lambda m: authorize_user(principal, m.uploader_id, "video_id"))
        record = uploaded_record(manifest, service.uploads.bucket, PRODUCER_NAME, uploaded_event_id(video_id))
        event_id = record["event_id"]
        topic = TOPIC_BY_SCHEMA["VideoUploaded"].name
        await service.producer.produce_all([OutgoingMessage(topic, video_id.encode(), encode("VideoUploaded", record))])
        service.metrics.accepted.labels("video_uploaded").inc()
        return JSONResponse({"video_id": video_id, "event_id": str(event_id), "state": "uploaded"}, status_code=202)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz(request: Request) -> JSONResponse:
        reachable = await asyncio.to_thread(service_of(request).producer.broker_reachable)
        if not reachable:
            return _error_response(BrokerUnavailable("the broker is not reachable"))
        return JSONResponse({"status": "ready"})

    @app.get("/metrics")
    async def metrics(request: Request) -> PlainTextResponse:
        return PlainTextResponse(generate_latest(service_of(request).metrics.registry),
                                 media_type=CONTENT_TYPE_LATEST)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description,
                                 routes=app.routes)
            schema.setdefault("components", {}).setdefault("schemas", {}).update(defs)
            schema["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer",
                                                                  "bearerFormat": "JWT"}}
            schema["security"] = [{"bearer": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def serve(settings: Settings) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(settings)
    # Latency: start-up objects never become garbage, so keep them out of every collection; and
    # hand the GIL between the event loop and the producer's poll thread every 1 ms, not 5 ms.
    gc.freeze()
    sys.setswitchinterval(0.001)
    uvicorn.run(app, host=settings.ingest_host, port=settings.ingest_port, access_log=False,
                log_level="warning", loop="uvloop", http="httptools", server_header=False)
