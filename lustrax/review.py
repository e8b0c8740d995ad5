"""Human review, wired at the composition root: the API's decision step and the `lustrax review` CLI.

producers/ may not import processors/, so the API gets the moderation step as a callable built
here (`human_reviewer`); the CLI goes through the API with an admin token, so a decision always
takes one path: checked, recorded, published, its events produced and folded into the catalog.
"""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from common.errors import ApiError, LustraxError
from common.settings import Settings
from common.tokens import issue_token
from infra.s3.buckets import s3_client
from processors.moderation.backends import FrameResult
from processors.moderation.moderate import ModerationFailure, Moderator
from processors.moderation.policy import load_policy
from processors.moderation.review import ReviewConflict, human_decision
from producers.service import HumanReviewer


class _NoModel:
    """A human decision reads the stored decision and publishes; it never runs the model (nor loads it)."""

    name = "human"
    coverage: frozenset[str] = frozenset()
    estimates_age = False
    model_version = "none"

    def analyze(self, frame: Path) -> FrameResult:
        raise AssertionError("the review path does not analyze frames")


def human_reviewer(settings: Settings) -> HumanReviewer:
    """The API's decision step: processors/moderation/review.py's human_decision, errors as API errors."""
    moderator = Moderator(settings, s3_client(settings), _NoModel(), load_policy(settings.moderation_policy))

    def decide(video_id: str, approve: bool, reviewer_id: str, reason: str | None) -> list[tuple[str, dict[str, Any]]]:
        try:
            return human_decision(moderator, video_id, approve, reviewer_id, reason)
        except ReviewConflict as conflict:
            raise ApiError(409, "not_in_review", conflict.reason, "video_id") from None
        except ModerationFailure as failure:
            if failure.retryable:
                raise ApiError(503, "review_failed", failure.reason, None, retry_after_s=5) from None
            raise ApiError(409, "cannot_publish", failure.reason, "video_id") from None
        except FileNotFoundError as missing:  # the staged ladder is gone
            raise ApiError(409, "cannot_publish", str(missing), "video_id") from None

    return decide


def _call(settings: Settings, url: str | None, method: str, path: str, json: Any = None) -> Any:
    base = url or f"http://{settings.ingest_host}:{settings.ingest_port}"
    token = issue_token(settings.jwt_signing_secret, f"cli:{getpass.getuser()}", ("admin",), 300)
    try:
        response = httpx.request(method, base + path, json=json, timeout=60,
                                 headers={"Authorization": f"Bearer {token}"})
    except httpx.HTTPError as exc:
        raise LustraxError(f"the ingest API at {base} did not answer: {exc}") from None
    if response.status_code >= 400:
        try:
            error = response.json()["error"]
            detail = f"{error['code']}: {error['message']}"
        except (ValueError, KeyError, TypeError):
            detail = response.text[:200]
        raise LustraxError(f"{response.status_code} {detail}")
    return response.json()


def review_list(settings: Settings, url: str | None, limit: int) -> tuple[list[str], list[list[Any]]]:
    """The queue as (columns, rows) for format_table."""
    items = _call(settings, url, "GET", f"/v1/admin/review?limit={limit}")["items"]
    columns = ["video_id", "queued_at", "priority", "uploader_id", "title", "reasons", "labels"]
    rows = [[item["video_id"], item["queued_at"], item["priority"], item["uploader_id"], item["title"],
             "; ".join(item["reasons"]),
             ", ".join(f"{label['name']} {label['confidence']:.0f}%" for label in item["labels"])] for item in items]
    return columns, rows


def review_decide(settings: Settings, url: str | None, video_id: str, approve: bool, reason: str | None) -> str:
    """Approve or reject `video_id`; its new state."""
    body = {"decision": "approve" if approve else "reject", "reason": reason}
    return str(_call(settings, url, "POST", f"/v1/admin/review/{quote(video_id, safe='')}", body)["state"])
