"""Dependencies of the ingest API's routes: the service, the principal, the JSON body.

Every dependency is `async def`: FastAPI runs a plain `def` dependency in a worker thread, a cost
the ingest hot path should not pay. None depends on another (FastAPI 0.165 takes ~15 µs to solve
each dependency of each request): they take the service from the request themselves. Errors are
ApiErrors, rendered by producers/app.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import Depends, Path, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.responses import JSONResponse

from catalog.access import is_admin
from common.errors import ApiError
from common.tokens import AGE_COOKIE, AgeGrant, Principal
from infra.s3.layout import VIDEO_ID_PATTERN, is_video_id
from producers.service import IngestService

JSON_TYPES = ("application/json",)


async def known_video_id(video_id: Annotated[str, Path(
        description="A server-made video id.", json_schema_extra={"pattern": f"^{VIDEO_ID_PATTERN.pattern}$"})]) -> str:
    """A video id is made by the server (infra/s3/layout.py); any other string names no video: 404, as
    an unknown id (not 422), before a route can hand it to the S3 layout or the catalog."""
    if not is_video_id(video_id):
        raise ApiError(404, "not_found", "no such video", "video_id")
    return video_id


VideoIdPath = Annotated[str, Depends(known_video_id)]
# The request's kind in lustrax_ingest_requests_rejected_total{type}; "unknown" until a route sets it.
KIND_KEY = "lustrax_type"


def set_kind(request: Request, kind: str) -> None:
    request.scope[KIND_KEY] = kind


def error_response(error: ApiError, headers: dict[str, str] | None = None) -> JSONResponse:
    headers = dict(headers or {})
    if error.retry_after_s:
        headers["Retry-After"] = str(error.retry_after_s)
    if error.status == 401:
        headers["WWW-Authenticate"] = "Bearer"  # RFC 9110: a 401 names the scheme it wants
    return JSONResponse(error.body(), status_code=error.status, headers=headers or None)


def service_of(request: Request) -> IngestService:
    return request.app.state.service  # type: ignore[no-any-return]


async def get_service(request: Request) -> IngestService:
    return service_of(request)


ServiceDep = Annotated[IngestService, Depends(get_service)]


async def get_principal(request: Request) -> Principal:
    """The bearer token's principal (401 otherwise); TokenVerifier remembers tokens already checked."""
    return service_of(request).tokens.verify(request.headers.get("authorization"))


PrincipalDep = Annotated[Principal, Depends(get_principal)]


async def optional_principal(request: Request) -> Principal | None:
    """The caller, or None without an Authorization header (a bad token is still a 401)."""
    header = request.headers.get("authorization")
    return None if header is None else service_of(request).tokens.verify(header)


# The age gate (API.md "Age gate", docs/trust-and-safety.md): the token as a header or the cookie.
AGE_HEADER = "x-age-token"


def age_token_of(request: Request) -> str | None:
    return request.headers.get(AGE_HEADER) or request.cookies.get(AGE_COOKIE)


async def age_verified(request: Request) -> AgeGrant:
    """Nothing adult before the gate: an age token whose method the request's jurisdiction accepts
    (common/age_policy.py), else 401 age_verification_required. Every adult route depends on it."""
    return service_of(request).age_verifier.verify(age_token_of(request), request.headers)


AgeVerifiedDep = Annotated[AgeGrant, Depends(age_verified)]


def require_admin(principal: Principal, what: str) -> Principal:
    """403 unless the token carries the admin role; `what` says what is for admins."""
    if not is_admin(principal):
        raise ApiError(403, "forbidden", f"{what} is for admins", "authorization")
    return principal


def client_ip(request: Request) -> str:
    """The peer's address (what per-IP limits count; behind a proxy, its uvicorn --proxy-headers)."""
    return request.client.host if request.client else "unknown"


def principal_of(kind: str) -> Any:
    """The principal, then the request's kind: errors after authentication are counted under `kind`."""

    async def dependency(request: Request, principal: PrincipalDep) -> Principal:
        set_kind(request, kind)
        return principal

    return Depends(dependency)


def optional_principal_of(kind: str) -> Any:
    """principal_of for routes anyone may call: the principal or None, then the request's kind."""

    async def dependency(request: Request,
                         principal: Annotated[Principal | None, Depends(optional_principal)]) -> Principal | None:
        set_kind(request, kind)
        return principal

    return Depends(dependency)


async def read_json_body(request: Request) -> bytes:
    """The raw body (parsed by the route, so that errors name the field as API.md says): 415 unless
    JSON, 413 beyond LUSTRAX_INGEST_MAX_BODY_BYTES, counted as it streams in."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in JSON_TYPES:
        raise ApiError(415, "unsupported_media_type", "the body must be application/json", "content-type")
    limit = service_of(request).settings.ingest_max_body_bytes
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


JsonBody = Annotated[bytes, Depends(read_json_body)]


def dependants(dependant: Dependant) -> Iterator[Dependant]:
    """A route's dependency tree, itself first."""
    yield dependant
    for dependency in dependant.dependencies:
        yield from dependants(dependency)


DECLARED_QUERY_ATTR = "lustrax_declared_query"


def _declared_query(route: APIRoute) -> frozenset[str]:
    """Once per route, kept on it, not per request: a route's dependency tree does not change."""
    declared: frozenset[str] | None = getattr(route, DECLARED_QUERY_ATTR, None)
    if declared is None:
        declared = frozenset(p.alias for d in dependants(route.dependant) for p in d.query_params)
        setattr(route, DECLARED_QUERY_ATTR, declared)
    return declared


def reject_unknown_query_parameters(request: Request) -> None:
    """A route's query parameters are its contract: an unknown one (a typo such as `limt`) is a 422
    naming it, never silently ignored. Routes that take no query parameters ignore the query string."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    declared = _declared_query(route)
    if not declared:
        return
    for name in request.query_params:
        if name not in declared:
            raise ApiError(422, "unknown_field", f"unknown query parameter; known: {', '.join(sorted(declared))}",
                           name[:64])
