"""CloudFront invalidation of a removed video's paths (boto3's CreateInvalidation).

A takedown deletes the public and premium objects from the bucket, but CloudFront's edges keep
serving what they cached until it expires (segments are cached for long: they never change). An
invalidation removes them from every edge. The local edge caches nothing, so without a
distribution id nothing is sent.

CloudFront makes CreateInvalidation idempotent by CallerReference: a retry with the same reference
and the same paths returns the invalidation already made, never a second one. A distribution may
have 15 wildcard paths in progress (2 per video here): past that CloudFront answers
TooManyInvalidationsInProgress, and `PendingInvalidations` keeps the request to retry it later.
"""

from __future__ import annotations

import logging
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from common.settings import Settings
from infra.s3.layout import public_prefix

log = logging.getLogger(__name__)
# CloudFront's control plane is global: its endpoint is in us-east-1.
CLOUDFRONT_REGION = "us-east-1"


def cloudfront_client() -> Any:
    """The default credential chain (an IAM role in production), never the S3 server's keys."""
    return boto3.client("cloudfront", region_name=CLOUDFRONT_REGION,
                        config=Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5,
                                      read_timeout=30))


def video_paths(video_id: str) -> list[str]:
    """Every URL path a video may have been served under, free or premium (a wildcard each)."""
    return [f"/{public_prefix(video_id, premium)}*" for premium in (False, True)]


def invalidation_batch(video_id: str, reference: str) -> dict[str, Any]:
    paths = video_paths(video_id)
    return {"Paths": {"Quantity": len(paths), "Items": paths}, "CallerReference": reference}


class VideoInvalidator:
    """Invalidates a video's paths on one distribution; `reference` makes a retry the same request."""

    def __init__(self, client: Any, distribution_id: str) -> None:
        self.client, self.distribution_id = client, distribution_id

    def invalidate(self, video_id: str, reference: str) -> str:
        """The invalidation's id (CloudFront finishes it within minutes, on its own)."""
        response = self.client.create_invalidation(DistributionId=self.distribution_id,
                                                   InvalidationBatch=invalidation_batch(video_id, reference))
        return str(response["Invalidation"]["Id"])


def video_invalidator(settings: Settings) -> VideoInvalidator | None:
    """None for the local edge (no distribution id): it caches nothing."""
    if settings.cloudfront_distribution_id is None:
        return None
    return VideoInvalidator(cloudfront_client(), settings.cloudfront_distribution_id)


class PendingInvalidations:
    """Invalidations not yet accepted, oldest first, retried by `retry()` (same reference each time).
    Held in memory: after a restart, copies cached before it expire with their TTL."""

    def __init__(self, invalidator: VideoInvalidator) -> None:
        self.invalidator = invalidator
        self._pending: dict[str, str] = {}  # video id -> reference
        self.last_error: str | None = None

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, video_id: str, reference: str) -> None:
        self._pending.setdefault(video_id, reference)

    def retry(self) -> int:
        """Send what is pending until CloudFront refuses one (the quota is per distribution: the
        next ones would be refused too); how many are still pending."""
        for video_id, reference in list(self._pending.items()):
            try:
                invalidation = self.invalidator.invalidate(video_id, reference)
            except (ClientError, BotoCoreError) as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("CloudFront invalidation of %s refused, retrying later: %s", video_id, exc)
                break
            del self._pending[video_id]
            self.last_error = None
            log.info("%s: CloudFront invalidation %s", video_id, invalidation)
        return len(self._pending)
