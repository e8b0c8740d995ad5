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
    return JSONResponse({"status": "ready"})


@router.get("/metrics")
async def metrics(service: ServiceDep) -> PlainTextResponse:
    return PlainTextResponse(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)
