"""The local edge: what CloudFront does in production, in front of the public bucket.

GET and HEAD of `/{key}` are proxied anonymously to the public bucket (the CDN origin), Range and
conditional requests included, with Content-Type, Cache-Control, ETag and the range headers passed
back. Keys under `premium/` answer only with valid CloudFront signed cookies (infra/edge/cloudfront.py),
checked against the URL the viewer asked for (`{scheme}://{Host}{path}`, as CloudFront matches a
policy's Resource); otherwise 403. Nothing is listed, no query string reaches the origin (S3 would
read `?list-type`, `?acl`...), and only plain keys are forwarded, so no path climbs out of the bucket.

CORS: the page (producers/routers/page.py) plays from another origin than the edge's, so answers to
an allowed `Origin` (LUSTRAX_EDGE_ALLOWED_ORIGINS) carry `Access-Control-Allow-Origin: <that origin>`
with credentials (premium cookies), and OPTIONS answers the preflight of a Range request; other
origins get no CORS headers, so their scripts cannot read what the edge serves.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import uvicorn
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from common.settings import Settings
from infra.edge.cloudfront import CookieRefused, load_private_key, verify_cookies
from infra.s3.layout import PREMIUM_ROOT

log = logging.getLogger(__name__)

# Keys the project publishes: `videos/{id}/720p/seg_00001.ts` and the like. Anything else (percent
# escapes, `.`/`..` segments, empty segments) is refused before it can reach the origin.
SAFE_KEY = re.compile(r"[A-Za-z0-9_~-][A-Za-z0-9._~-]*(/[A-Za-z0-9_~-][A-Za-z0-9._~-]*)*")
FORWARDED_REQUEST_HEADERS = ("range", "if-none-match", "if-modified-since", "if-match", "if-range")
FORWARDED_RESPONSE_HEADERS = ("content-type", "content-length", "content-range", "accept-ranges", "etag",
                              "last-modified", "cache-control", "content-encoding", "expires")
PASSED_STATUSES = frozenset({200, 206, 304, 404, 412, 416})
CORS_ALLOWED_HEADERS = "Range, If-None-Match, If-Modified-Since, If-Match, If-Range"
CORS_EXPOSED_HEADERS = "Content-Length, Content-Range, Accept-Ranges, ETag, Last-Modified"
CORS_MAX_AGE_S = 600


def cors_headers(origin: str | None, allowed: frozenset[str], preflight: bool = False) -> dict[str, str]:
    """The CORS headers of an answer to a request from `origin` (pure). `Vary: Origin` always:
    a cache must not hand one origin's answer to another."""
    headers = {"Vary": "Origin"}
    if origin is None or origin not in allowed:
        return headers
    headers.update({"Access-Control-Allow-Origin": origin, "Access-Control-Allow-Credentials": "true"})
    if preflight:
        headers.update({"Access-Control-Allow-Methods": "GET, HEAD", "Access-Control-Allow-Headers": CORS_ALLOWED_HEADERS,
                        "Access-Control-Max-Age": str(CORS_MAX_AGE_S)})
    else:
        headers["Access-Control-Expose-Headers"] = CORS_EXPOSED_HEADERS
    return headers


def origin_key(raw_path: bytes) -> str | None:
    """The object key a request path names, or None when it is not a plain published key."""
    path = raw_path.decode("latin-1")
    key = path[1:] if path.startswith("/") else None
    return key if key is not None and SAFE_KEY.fullmatch(key) else None


def edge_keys(settings: Settings) -> dict[str, rsa.RSAPublicKey]:
    """The trusted key group: key pair id -> public key (here: the one the API signs with)."""
    return {settings.cloudfront_key_id: load_private_key(settings.cloudfront_private_key_pem).public_key()}


def create_edge_app(settings: Settings, public_keys: dict[str, rsa.RSAPublicKey] | None = None) -> Starlette:
    keys = public_keys if public_keys is not None else edge_keys(settings)
    origin = settings.public_origin_url.rstrip("/")
    allowed_origins = frozenset(settings.edge_origins)
    client: httpx.AsyncClient | None = None

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        nonlocal client
        # Anonymous on purpose: the edge reads what the bucket policy lets anyone read.
        async with httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=5.0)) as client:
            yield

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    async def preflight(request: Request) -> Response:
        return Response(status_code=204, headers=cors_headers(request.headers.get("origin"), allowed_origins, True))

    async def serve_object(request: Request) -> Response:
        response = await fetch_object(request)
        response.headers.update(cors_headers(request.headers.get("origin"), allowed_origins))
        return response

    async def fetch_object(request: Request) -> Response:
        key = origin_key(request.scope.get("raw_path") or request.url.path.encode())
        if key is None:
            return PlainTextResponse("not found", status_code=404)
        if key.startswith(PREMIUM_ROOT):
            host = request.headers.get("host")
            if not host:
                return PlainTextResponse("a Host header is required", status_code=400)
            url = f"{request.url.scheme}://{host}/{key}"
            try:
                verify_cookies(request.cookies, url, time.time(), keys, request.client.host if request.client else None)
            except CookieRefused as refused:
                return PlainTextResponse(f"forbidden: {refused}", status_code=403)
        assert client is not None
        headers = {name: request.headers[name] for name in FORWARDED_REQUEST_HEADERS if name in request.headers}
        upstream = client.build_request(request.method, f"{origin}/{key}", headers=headers)
        try:
            response = await client.send(upstream, stream=True)
        except httpx.HTTPError as exc:
            log.warning("origin failed for %s: %s", key, exc)
            return PlainTextResponse("bad gateway", status_code=502)
        if response.status_code not in PASSED_STATUSES:
            await response.aclose()
            # The bucket says 403 for a key it does not have (no ListBucket for anonymous): not found.
            status = 404 if response.status_code == 403 else 502
            return PlainTextResponse("not found" if status == 404 else "bad gateway", status_code=status)
        passed = {name: response.headers[name] for name in FORWARDED_RESPONSE_HEADERS if name in response.headers}
        if request.method == "HEAD" or response.status_code == 304:
            await response.aclose()
            return Response(status_code=response.status_code, headers=passed)
        return StreamingResponse(response.aiter_raw(), status_code=response.status_code, headers=passed,
                                 background=BackgroundTask(response.aclose))

    return Starlette(routes=[Route("/healthz", healthz, methods=["GET"]),
                             Route("/{key:path}", serve_object, methods=["GET", "HEAD"]),
                             Route("/{key:path}", preflight, methods=["OPTIONS"])],
                     lifespan=lifespan)


def serve(settings: Settings) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(create_edge_app(settings), host=settings.edge_host, port=settings.edge_port, access_log=False,
                log_level="warning", server_header=False)
