"""POST /v1/videos/{video_id}/playback: the URL to play, and for premium videos CloudFront signed
cookies (in the body and as Set-Cookie on the video's prefix)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from common.tokens import Principal
from producers.deps import AgeVerifiedDep, ServiceDep, VideoIdPath, principal_of
from producers.openapi import operation
from producers.playback import CatalogPlayback, PlaybackSigner

router = APIRouter(prefix="/v1/videos")


async def passed_age_gate(principal: Annotated[Principal, principal_of("playback")],
                          _age: AgeVerifiedDep) -> Principal:
    """Playback is for a signed-in user who passed the age gate (API.md): the user token first,
    then an accepted age token (producers/deps.py `age_verified`: 401 age_verification_required)."""
    return principal


class PlaybackGrant(BaseModel):
    video_url: str
    expires_at: datetime
    cookies: dict[str, str] | None = None


def playback_of(request: Request) -> tuple[CatalogPlayback, PlaybackSigner]:
    return request.app.state.playback_catalog, request.app.state.playback_signer


@router.post("/{video_id}/playback", **operation(
    200, PlaybackGrant, errors=(403, 404),
    description="The URL to play; for a premium video CloudFront signed cookies, in the body and as Set-Cookie."))
async def post_playback(video_id: VideoIdPath, request: Request, service: ServiceDep,
                        principal: Annotated[Principal, Depends(passed_age_gate)]) -> JSONResponse:
    catalog, signer = playback_of(request)
    found = catalog.lookup(video_id)
    client_ip = request.client.host if request.client and service.settings.playback_bind_client_ip else None
    now = time.time()
    # An RSA signature takes ~2 ms: off the event loop, which serves the ingest hot path.
    grant = await asyncio.to_thread(signer.grant, principal, video_id, found, now, client_ip)
    body: dict[str, object] = {
        "video_url": grant.video_url,
        "expires_at": datetime.fromtimestamp(grant.expires_at, UTC).isoformat().replace("+00:00", "Z"),
    }
    if grant.cookies is not None:
        body["cookies"] = grant.cookies
    # Credentials: no cache may keep this answer.
    response = JSONResponse(body, headers={"Cache-Control": "no-store"})
    for name, value in (grant.cookies or {}).items():
        response.set_cookie(name, value, max_age=int(grant.expires_at - now), path=grant.cookie_path,
                            domain=service.settings.playback_cookie_domain, secure=True, httponly=True)
    return response
