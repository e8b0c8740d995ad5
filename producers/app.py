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

import gc
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from common.errors import ApiError
from common.settings import Settings
from infra.kafka.producer import AsyncProducer, producer_config
from infra.s3.buckets import s3_client
from producers.deps import KIND_KEY, error_response, reject_unknown_query_parameters, service_of
from producers.openapi import openapi_document
from producers.playback import CatalogPlayback, PlaybackSigner
from producers.age_providers import configured_providers
from producers.analytics import AnalyticsReader
from producers.routers import age_gate, catalog, complaints, dmca, events, health, page, playback, reels, review, uploads
from producers.service import HumanReviewer, IngestService
from producers.uploads import UploadService

log = logging.getLogger(__name__)


def create_app(settings: Settings, producer: AsyncProducer | None = None,
               reviewer: HumanReviewer | None = None) -> FastAPI:
    """The ingest API: its routers, error handlers and the service built at start-up (`producer`
    is given by tests; otherwise the app makes one and closes it at shutdown). `reviewer` makes
    human review decisions (lustrax/review.py builds it); without it review decisions answer 503."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own_producer = producer is None
        s3 = s3_client(settings)
        service = IngestService(
            settings,
            producer or AsyncProducer(producer_config(settings.kafka_bootstrap, settings.ingest_delivery_timeout_ms)),
            UploadService(s3, settings.s3_uploads_bucket, settings.upload_max_bytes, settings.upload_url_ttl_s),
            reviewer,
        )
        app.state.service = service
        app.state.playback_catalog = CatalogPlayback(service.catalog)
        app.state.playback_signer = PlaybackSigner(settings)
        app.state.trending = AnalyticsReader(settings, settings.trending_cache_s)
        app.state.reels = reels.ReelsReader(settings, AnalyticsReader(settings, settings.recs_cache_s), service.catalog)
        app.state.age_gate = age_gate.AgeGate(settings, configured_providers(settings))
        service.start()
        yield
        app.state.reels.close()
        await app.state.age_gate.close()
        service.close(own_producer)

    app = FastAPI(title="LustraX ingest API", version="1.0.0", lifespan=lifespan,
                  description=__doc__, docs_url="/docs", redoc_url=None,
                  dependencies=[Depends(reject_unknown_query_parameters)])
    for router in (events.router, uploads.router, catalog.router, review.router, playback.router, health.router,
                   page.router, age_gate.router, reels.router, dmca.router, complaints.router):
        app.include_router(router)
    app.mount("/static", page.static_files(), name="static")

    @app.exception_handler(ApiError)
    async def on_api_error(request: Request, exc: ApiError) -> JSONResponse:
        service_of(request).metrics.rejected.labels(request.scope.get(KIND_KEY, "unknown"), exc.code).inc()
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body", "path", "query", "header")) or None
        return error_response(ApiError(422, "invalid_field", str(first.get("msg")), field))

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        # A 405 keeps Starlette's Allow header (RFC 9110).
        return error_response(ApiError(exc.status_code, code, str(exc.detail), None), exc.headers)

    @app.exception_handler(Exception)
    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error_response(ApiError(500, "internal_error", "an unexpected error occurred", None))

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = openapi_document(app, settings)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def serve(settings: Settings, reviewer: HumanReviewer | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(settings, reviewer=reviewer)
    # Latency: start-up objects never become garbage, so keep them out of every collection; and
    # hand the GIL between the event loop and the producer's poll thread every 1 ms, not 5 ms.
    gc.freeze()
    sys.setswitchinterval(0.001)
    uvicorn.run(app, host=settings.ingest_host, port=settings.ingest_port, access_log=False,
                log_level="warning", loop="uvloop", http="httptools", server_header=False)
