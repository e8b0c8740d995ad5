"""Liveness, readiness (the broker answers) and Prometheus metrics."""

from __future__ import annotations

import asyncio

from typing import Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from pydantic import BaseModel

from common.errors import BrokerUnavailable
from producers.deps import ServiceDep, error_response
from producers.openapi import Error, operation

router = APIRouter()


class Health(BaseModel):
    status: Literal["ok"]


class CatalogStatus(BaseModel):
    caught_up: bool
    videos: int


class Ready(BaseModel):
    status: Literal["ready"]
    catalog: CatalogStatus


class NotReady(Error):
    """`broker_unavailable`, or `catalog_catching_up` with the catalog's progress."""

    catalog: CatalogStatus | None = None


@router.get("/healthz", **operation(200, Health, description="The process answers."))
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", **operation(200, Ready, errors=(503,), error_models={503: NotReady},
                                   description="The broker answers and the catalog has replayed the topics."))
async def readyz(service: ServiceDep) -> JSONResponse:
    if not await asyncio.to_thread(service.producer.broker_reachable):
        return error_response(BrokerUnavailable("the broker is not reachable"))
    caught_up = service.catalog_feed.caught_up.is_set() and service.cases_feed.caught_up.is_set()
    catalog = {"caught_up": caught_up, "videos": len(service.catalog)}
    if not catalog["caught_up"]:
        # This replica's catalog is still replaying the topics: its answers would be incomplete.
        return JSONResponse({"error": {"code": "catalog_catching_up", "message": "the catalog is replaying the "
                                       "lifecycle topics", "field": None}, "catalog": catalog}, status_code=503,
                            headers={"Retry-After": "1"})
    return JSONResponse({"status": "ready", "catalog": catalog})


@router.get("/metrics", **operation(200, media_type=CONTENT_TYPE_LATEST, description="Prometheus text exposition."))
async def metrics(service: ServiceDep) -> PlainTextResponse:
    return PlainTextResponse(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)
