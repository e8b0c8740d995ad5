"""A human's decision on a video in the review queue: the step the review CLI / admin API calls.

Only a NEEDS_REVIEW video can be decided by a human; the same human decision given again returns
the same events (same event_ids) and publishes again idempotently, a different one is refused:
a decision is never flipped by a retry. Approval publishes through the same step as an automated
approval (Moderator.publish).
"""

from __future__ import annotations

import uuid
from typing import Any

from processors.moderation.moderate import DECIDED_NAMESPACE, HUMAN, ModerationFailure, ModerationRecord, Moderator
from processors.moderation.publish import PRODUCER_NAME, published_record
from schemas.codec import encode
from schemas.envelope import new_record


class ReviewConflict(ModerationFailure):
    """The video is not waiting for a human, or a human already decided otherwise."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason, retryable=False)


def human_decision(moderator: Moderator, video_id: str, approve: bool, reviewer_id: str,
                   reason: str | None = None) -> list[tuple[str, dict[str, Any]]]:
    """Record a reviewer's approve/reject of `video_id`, publish if approved; the events to send."""
    record = moderator.record(video_id)
    if record is None:
        raise ReviewConflict(f"{video_id} has no moderation decision to review")
    outcome = "APPROVED" if approve else "REJECTED"
    if record.provider == HUMAN:
        if record.decision != outcome:
            raise ReviewConflict(f"{video_id} was already {record.decision} by a human")
        if approve:
            moderator.publish(record)
        return record.decoded()
    if record.decision != "NEEDS_REVIEW":
        raise ReviewConflict(f"{video_id} is {record.decision}, not waiting for review")
    [(_, automated), *_] = record.decoded()
    event_id = uuid.uuid5(DECIDED_NAMESPACE, f"human:{video_id}:{automated['event_id']}")
    decided = new_record("ModerationDecided", PRODUCER_NAME, {
        "video_id": video_id, "decision": outcome, "provider": HUMAN, "labels": automated["labels"],
        "reason": reason, "reviewer_id": reviewer_id, "model_version": None,
        "policy_version": automated["policy_version"], "frames_checked": automated["frames_checked"],
        "reasons": [reason] if reason else [], "not_checked": [], "apparent_minor": automated["apparent_minor"],
        "poster_reason": automated["poster_reason"],
    }, event_id=event_id)
    events: list[tuple[str, dict[str, Any]]] = [("ModerationDecided", decided)]
    if approve:
        events.append(("VideoPublished", published_record(moderator.settings.public_base_url,
                                                          moderator.manifest(video_id), event_id,
                                                          decided["occurred_at"])))
    human = ModerationRecord(video_id, record.transcoded_event_id, outcome, HUMAN, record.premium, record.poster_key,
                             [encode(schema, event) for schema, event in events],
                             {**record.summary, "reviewer_id": reviewer_id, "automated": record.decision})
    moderator.save(human)  # before publishing, like the automated path
    if approve:
        moderator.publish(human)
    return human.decoded()
