"""Schemathesis hooks: the ingest API's rules that JSON Schema cannot state (docs/api.md).

Each rule is said in its operation's description in the OpenAPI document. A schema-valid
(positive) case that breaks one is moved inside it, so that `positive_data_acceptance` holds the
API to everything else; negative cases are left as generated. Loaded through schemathesis.toml.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import schemathesis

from common.settings import Settings

LIKE_BURST = Settings.model_fields["ingest_like_burst"].default
# A published video the contract test puts in the catalog: what a DMCA notice or a complaint must name.
PUBLIC_VIDEO_ID = "contractvideoaaaaaaaaaaa"


def _within_rules(event: Any) -> None:
    """occurred_at within 7 days back and 5 minutes ahead; a watch tick's position within its duration."""
    if not isinstance(event, dict):
        return
    occurred_at = event.get("occurred_at")
    recent = datetime.now(UTC) - timedelta(minutes=1)
    if isinstance(occurred_at, str):
        event["occurred_at"] = recent.isoformat()
    elif isinstance(occurred_at, int | float) and not isinstance(occurred_at, bool):
        event["occurred_at"] = int(recent.timestamp() * 1000)
    position, duration = event.get("position_ms"), event.get("duration_ms")
    if isinstance(position, int | float) and isinstance(duration, int | float) and position > duration:
        event["position_ms"] = duration


def _within_like_burst(events: list[Any]) -> None:
    """One batch holds at most LIKE_BURST likes and unlikes of one user (more is 422 too_many_likes)."""
    counts: Counter[str] = Counter()
    for event in events:
        if isinstance(event, dict) and event.get("type") in ("like", "unlike"):
            user = str(event.get("user_id"))
            counts[user] += 1
            if counts[user] > LIKE_BURST:
                event["user_id"] = f"{user[:100]}-{counts[user]}"  # another user: a valid id still


@schemathesis.hook
def map_case(context: Any, case: Any) -> Any:
    if case.meta is None or not case.meta.generation.mode.is_positive:
        return case
    label = case.operation.label
    if label == "POST /v1/events":
        _within_rules(case.body)
    elif label == "POST /v1/events/batch" and isinstance(case.body, dict):
        events = case.body.get("events", [])
        for event in events:
            _within_rules(event)
        _within_like_burst(events)
    elif label == "GET /v1/videos" and case.query:
        case.query.pop("cursor", None)  # a cursor is one this API issued: none can be generated
    elif label == "POST /v1/dmca/notices" and isinstance(case.body, dict):
        case.body["infringing_urls"] = [PUBLIC_VIDEO_ID]  # each must name a public video of this service
    elif label == "POST /v1/complaints" and isinstance(case.body, dict):
        case.body["video_id"] = PUBLIC_VIDEO_ID  # likewise
    return case
