"""Playback grants (POST /v1/videos/{id}/playback): the published URL, and for premium videos the
CloudFront signed cookies that open the video's prefix at the CDN (docs/playback.md).

Whether a video is published, and premium, comes from a PlaybackCatalog: the event-sourced catalog
implements it; until then BucketCatalog looks for the master playlist in the public bucket, which
the moderation worker writes last when it publishes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

from botocore.exceptions import ClientError

from common.errors import ApiError
from common.settings import Settings
from common.tokens import Principal
from infra.edge.cloudfront import load_private_key, sign_cookies
from infra.s3.layout import InvalidVideoId, check_video_id, is_missing, public_prefix, public_url

# The ladder's entry point (processors/transcode/ffmpeg/commands.py names it too; producers may not import it).
MASTER_PLAYLIST = "master.m3u8"


class PlaybackCatalog(Protocol):
    def lookup(self, video_id: str) -> tuple[bool, bool] | None:
        """(published, premium) of a known video; None for an unknown one. Blocking."""


class BucketCatalog:
    """Published means the master playlist is in the public bucket, at the free or the premium key."""

    def __init__(self, s3: Any, bucket: str) -> None:
        self.s3 = s3
        self.bucket = bucket

    def lookup(self, video_id: str) -> tuple[bool, bool] | None:
        # Free first: if both existed, the free copy is anonymously readable anyway.
        for premium in (False, True):
            try:
                self.s3.head_object(Bucket=self.bucket, Key=public_prefix(video_id, premium) + MASTER_PLAYLIST)
            except ClientError as exc:
                if is_missing(exc):
                    continue
                raise
            return True, premium
        return None


@dataclass(frozen=True)
class PlaybackGrant:
    video_url: str
    expires_at: int  # epoch seconds: the cookies' expiry (for a free video, when to ask again)
    cookies: dict[str, str] | None  # premium only
    cookie_path: str  # the video's prefix on the CDN: the only path the cookies are sent to


def checked_video_id(video_id: str) -> str:
    """An id that is not a video id names no video: 404, as an unknown one."""
    try:
        return check_video_id(video_id)
    except InvalidVideoId:
        raise ApiError(404, "not_found", "no such video", "video_id") from None


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
