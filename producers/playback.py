"""Playback grants (POST /v1/videos/{id}/playback): the published URL, and for premium videos the
CloudFront signed cookies that open the video's prefix at the CDN (docs/playback.md).

Whether a video is published, and premium, comes from the event-sourced catalog (catalog/): the
same answer `GET /v1/videos/{id}` gives, from the same events.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from catalog.projection import CatalogProjection
from common.errors import ApiError
from common.settings import Settings
from common.tokens import Principal
from infra.edge.cloudfront import load_private_key, sign_cookies
from infra.s3.layout import MASTER_PLAYLIST, public_url


class CatalogPlayback:
    """Playback's question to the catalog projection: (published, premium) of a known video."""

    def __init__(self, projection: CatalogProjection) -> None:
        self.projection = projection

    def lookup(self, video_id: str) -> tuple[bool, bool] | None:
        record = self.projection.get(video_id)
        return None if record is None else (record.published, record.premium)


@dataclass(frozen=True)
class PlaybackGrant:
    video_url: str
    expires_at: int  # epoch seconds: the cookies' expiry (for a free video, when to ask again)
    cookies: dict[str, str] | None  # premium only
    cookie_path: str  # the video's prefix on the CDN: the only path the cookies are sent to


class PlaybackSigner:
    """Makes grants; the private key is loaded once (a bad key fails at start-up, not per request)."""

    def __init__(self, settings: Settings) -> None:
        self.cdn_base = settings.public_base_url
        self.key_pair_id = settings.cloudfront_key_id
        self.ttl_s = settings.playback_ttl_s
        self.private_key = load_private_key(settings.cloudfront_private_key_pem)

    def grant(self, principal: Principal, video_id: str, found: tuple[bool, bool] | None, now: float,
              source_ip: str | None = None) -> PlaybackGrant:
        """The grant for `found` = the catalog's (published, premium); 404 unless published,
        403 not_entitled for a premium video without the premium entitlement."""
        if found is None or not found[0]:
            raise ApiError(404, "not_found", "no such video", "video_id")
        premium = found[1]
        if premium and not principal.entitled_to_premium:
            raise ApiError(403, "not_entitled", "this video needs a premium subscription", "video_id")
        video_url = public_url(self.cdn_base, video_id, premium, MASTER_PLAYLIST)
        expires_at = int(now) + self.ttl_s
        cookie_path = urlsplit(public_url(self.cdn_base, video_id, premium, "")).path
        if not premium:
            return PlaybackGrant(video_url, expires_at, None, cookie_path)
        signed = sign_cookies(self.private_key, self.key_pair_id, public_url(self.cdn_base, video_id, True, "*"),
                              expires_at, source_ip)
        return PlaybackGrant(video_url, expires_at, signed.cookies, cookie_path)
