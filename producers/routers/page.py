"""GET / (the page: live feed, trending, an HLS player; docs/page.md), its static files, and
GET /v1/trending (published videos watched most, from ClickHouse).

The page is one HTML document with no inline script or style, so its Content-Security-Policy can
allow scripts and styles from this origin only; it may connect to this API, the gateway and the
CDN, and play media from the CDN (and `blob:`, the MediaSource object hls.js attaches). hls.js is
the npm package's dist file, copied into static/vendor by `make setup` (package.json), never a CDN.
"""

from __future__ import annotations

import html
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from catalog.fold import PUBLISHED, public_view
from common.errors import ApiError
from common.settings import Settings
from producers.analytics import AnalyticsReader
from producers.deps import AgeVerifiedDep, ServiceDep, set_kind
from producers.openapi import operation

router = APIRouter()
STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
HLS_JS = STATIC_DIR / "vendor" / "hls.min.js"
# Trending rows read per query before the unpublished and unknown videos are left out.
TRENDING_SCAN = 100
MAX_TRENDING_LIMIT = 50
MAX_TRENDING_MINUTES = 24 * 60
SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
                    "Cross-Origin-Opener-Policy": "same-origin"}


def content_security_policy(settings: Settings) -> str:
    """The page's policy (pure): nothing but this origin, the gateway and the CDN."""
    cdn = settings.public_base_url + "/"  # a trailing slash: every path below the base
    gateway = settings.gateway_url
    return "; ".join([
        "default-src 'none'", "script-src 'self'", "style-src 'self'", f"img-src 'self' {cdn}",
        f"media-src 'self' blob: {cdn}", f"connect-src 'self' {gateway} {cdn}", "base-uri 'none'",
        "form-action 'none'", "frame-ancestors 'none'",
    ])


def render_page(settings: Settings) -> str:
    """index.html with the gateway URL filled in (escaped: it is configuration, not markup)."""
    template = (STATIC_DIR / "index.html").read_text()
    return template.replace("{{gateway_url}}", html.escape(settings.gateway_url, quote=True))


class _StaticFiles(StaticFiles):
    """The page's scripts and styles, with the security headers of the page itself."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []),
                                      *((k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items())]
            await send(message)

        await super().__call__(scope, receive, send_with_headers)


def static_files() -> StaticFiles:
    """Mounted at /static by producers/app.py (a mount is not a route: not in the OpenAPI document)."""
    return _StaticFiles(directory=STATIC_DIR)


@router.get("/", summary="The page: live feed, trending, HLS player",
            **operation(200, media_type="text/html", errors=(503,),
                        description="The page (HTML); 503 when hls.js is not in the static folder (`make setup`)."))
async def page(request: Request, service: ServiceDep) -> HTMLResponse:
    set_kind(request, "page")
    if not HLS_JS.exists():
        raise ApiError(503, "page_not_built", "the page's player (hls.js) is missing: run `make setup`", None)
    headers = {**SECURITY_HEADERS, "Content-Security-Policy": content_security_policy(service.settings),
               "Cache-Control": "no-store"}
    return HTMLResponse(render_page(service.settings), headers=headers)


TRENDING_COUNTS = ("views", "unique_viewers", "likes", "net_likes", "completed_sessions", "watch_time_ms")


class TrendingVideo(BaseModel):
    video_id: str
    title: str | None
    premium: bool
    video_url: str | None
    thumbnail: str | None
    published_at: datetime | None
    views: int
    unique_viewers: int
    likes: int
    net_likes: int
    completed_sessions: int
    watch_time_ms: int


class Trending(BaseModel):
    items: list[TrendingVideo]
    minutes: int


@router.get("/v1/trending", summary="Published videos watched most in the last minutes",
            **operation(200, Trending, errors=(503,),
                        description="The catalog record of each published video with its counts, most viewed first; "
                                    "503 when ClickHouse (the sink's query endpoint) does not answer."))
async def trending(request: Request, service: ServiceDep, _age: AgeVerifiedDep,
                   minutes: Annotated[int, Query(ge=1, le=MAX_TRENDING_MINUTES)] = 60,
                   limit: Annotated[int, Query(ge=1, le=MAX_TRENDING_LIMIT)] = 10) -> JSONResponse:
    set_kind(request, "trending")
    reader: AnalyticsReader = request.app.state.trending
    items = []
    rows = await reader.rows("trending_now", {"minutes": str(minutes), "limit": str(TRENDING_SCAN)}, "trending")
    for row in rows:
        record = service.catalog.get(str(row["video_id"]))
        # Only published videos: events may name any id, and an unpublished video must not leak.
        if record is None or record.state != PUBLISHED:
            continue
        view = public_view(record)
        items.append({key: view[key] for key in ("video_id", "title", "premium", "video_url", "thumbnail",
                                                 "published_at")}
                     | {key: int(row[key]) for key in TRENDING_COUNTS})
        if len(items) == limit:
            break
    return JSONResponse({"items": items, "minutes": minutes}, headers={"Cache-Control": "no-store"})

