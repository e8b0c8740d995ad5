"""Publishing an approved video: the staging ladder copied into the public bucket, then VideoPublished.

Used by the automated decision and by a human approval alike. Server-side copies (no bytes through
this process), master.m3u8 last: a reader who finds the master playlist finds a whole ladder.
Idempotent: the keys depend only on the video id, so a second run overwrites with the same bytes.
"""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

from infra.s3.buckets import list_keys
from infra.s3.layout import MASTER_PLAYLIST, POSTER, ladder_prefix, public_prefix, public_url
from infra.s3.uploads import UploadManifest
from schemas.envelope import new_record

PRODUCER_NAME = "moderation"
PUBLISHED_NAMESPACE = uuid.UUID("3d4c2b1a-8f7e-4d6c-9b5a-0e1f2a3b4c5d")
_COPY_WORKERS = 16  # copies are short server-side requests: latency-bound


def staging_keys(s3: Any, bucket: str, video_id: str) -> list[str]:
    return list_keys(s3, bucket, ladder_prefix(video_id))


def publish_ladder(s3: Any, staging_bucket: str, public_bucket: str, video_id: str, premium: bool,
                   poster_key: str) -> list[str]:
    """Copy `videos/{id}/...` from staging to the public prefix (`premium/` for premium videos), with
    `poster_key` (a staging key) as thumb.jpg; returns the public keys, master playlist last."""
    source = ladder_prefix(video_id)
    target = public_prefix(video_id, premium)
    keys = staging_keys(s3, staging_bucket, video_id)
    master = source + MASTER_PLAYLIST
    if master not in keys:
        raise FileNotFoundError(f"s3://{staging_bucket}/{master} does not exist: no complete ladder to publish")
    copies = {target + key.removeprefix(source): key for key in keys if key not in (master, source + POSTER)}
    copies[target + POSTER] = poster_key

    def copy(pair: tuple[str, str]) -> None:
        # MetadataDirective COPY keeps the transcoder's Content-Type and Cache-Control.
        s3.copy_object(Bucket=public_bucket, Key=pair[0], CopySource={"Bucket": staging_bucket, "Key": pair[1]},
                       MetadataDirective="COPY")

    with ThreadPoolExecutor(max_workers=_COPY_WORKERS) as pool:
        list(pool.map(copy, copies.items()))
    copy((target + MASTER_PLAYLIST, master))
    return [*copies, target + MASTER_PLAYLIST]


def published_record(cdn_base: str, manifest: UploadManifest, decision_event_id: uuid.UUID,
                     published_at: datetime) -> dict[str, Any]:
    """The VideoPublished (`new_video`) event; the same event_id for the same decision."""
    video_id, premium = manifest.video_id, manifest.premium
    return new_record("VideoPublished", PRODUCER_NAME, {
        "video_id": video_id, "title": manifest.title, "uploader_id": manifest.uploader_id,
        "video_url": public_url(cdn_base, video_id, premium, MASTER_PLAYLIST),
        "thumbnail": public_url(cdn_base, video_id, premium, POSTER),
        "premium": premium, "published_at": published_at,
    }, event_id=uuid.uuid5(PUBLISHED_NAMESPACE, f"published:{video_id}:{decision_event_id}"),
        occurred_at=published_at)
