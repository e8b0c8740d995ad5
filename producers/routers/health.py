"""Liveness, readiness (the broker answers) and Prometheus metrics."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from common.errors import BrokerUnavailable
from producers.deps import ServiceDep, error_response

router = APIRouter()


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(service: ServiceDep) -> JSONResponse:
    if not await asyncio.to_thread(service.producer.broker_reachable):
        return error_response(BrokerUnavailable("the broker is not reachable"))
    catalog = {"caught_up": service.catalog_feed.caught_up.is_set(), "videos": len(service.catalog)}
    if not catalog["caught_up"]:
        # This replica's catalog is still replaying the topics: its answers would be incomplete.
        return JSONResponse({"error": {"code": "catalog_catching_up", "message": "the catalog is replaying the "
                                       "lifecycle topics", "field": None}, "catalog": catalog}, status_code=503,
                            headers={"Retry-After": "1"})
    return JSONResponse({"status": "ready", "catalog": catalog})


@router.get("/metrics")
async def metrics(service: ServiceDep) -> PlainTextResponse:
    return PlainTextResponse(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)
