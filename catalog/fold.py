"""The catalog fold: a video's lifecycle events in, its VideoRecord out (pure: no I/O, no clock).

The lifecycle topics are separate topics, so a reader replaying them sees one video's events in
any order across topics (per topic they are in order: every topic is keyed by video_id). The fold
is therefore built from registers that do not care about order:

- the state is the highest one any event implies, by the lifecycle's order (`STATE_RANK`;
  failed and transcoded share a rank and the later event wins: a retranscode after a failure
  ends transcoded), so a late VideoUploaded never moves a published video back;
- each group of fields (upload, ladder, review, publication) comes from the latest event of its
  kind, by (occurred_at, event_id);
- takedowns sit beside the ranked state, not in it: a two-phase set of the cases (notice or
  complaint ids) that took the video down and of those restored. While a case is taken down and
  not restored the state is `taken_down`, whatever the ranked state; once every case is restored
  the ranked state (`published`) shows again. A restore read before its takedown cancels it just
  the same, so a replay in any order gives the same answer.

Both are joins of a semilattice (max), so applying the same events in any order, any number of
times, gives the same record: redelivery and replays are harmless (tests/unit/test_catalog_fold.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

# Every event schema the catalog reads; the topics are in schemas/topics.py.
LIFECYCLE_SCHEMAS = ("VideoUploaded", "TranscodeProgress", "VideoTranscoded", "TranscodeFailed",
                     "ModerationDecided", "ModerationReviewRequested", "VideoPublished",
                     "VideoTakenDown", "VideoRestored")
TAKEDOWN_SCHEMAS = frozenset({"VideoTakenDown", "VideoRestored"})

PUBLISHED = "published"
IN_REVIEW = "in_review"
TAKEN_DOWN = "taken_down"
STATE_RANK: dict[str, int] = {
    "awaiting_upload": 0, "uploaded": 1, "transcoding": 2, "failed": 3, "transcoded": 3,
    IN_REVIEW: 4, "rejected": 5,
    PUBLISHED: 6,  # only a takedown hides a published video, beside the rank (taken_down_by)
}
STATES = (*STATE_RANK, TAKEN_DOWN)
# The automated or human decision -> the state it implies (APPROVED: VideoPublished follows).
DECISION_STATE = {"APPROVED": "transcoded", "NEEDS_REVIEW": IN_REVIEW, "REJECTED": "rejected"}
EVENT_STATE = {"VideoUploaded": "uploaded", "TranscodeProgress": "transcoding", "VideoTranscoded": "transcoded",
               "TranscodeFailed": "failed",  # sent once the transcoder's retries are spent
               "ModerationReviewRequested": IN_REVIEW, "VideoPublished": PUBLISHED}

Stamp = tuple[datetime, str]  # (occurred_at, event_id): what "latest" means


@dataclass(frozen=True)
class Rendition:
    height: int
    width: int
    bandwidth: int


@dataclass(frozen=True)
class VideoRecord:
    video_id: str
    state: str = "awaiting_upload"
    state_stamp: Stamp | None = None  # the event that set the ranked state (ties within a rank)
    ranked_state: str = "awaiting_upload"  # the lifecycle's state; `state` is taken_down over it
    taken_down_by: frozenset[str] = frozenset()  # case ids of VideoTakenDown
    restored_from: frozenset[str] = frozenset()  # case ids of VideoRestored
    title: str | None = None
    uploader_id: str | None = None
    premium: bool = False
    tags: tuple[str, ...] = ()
    upload_stamp: Stamp | None = None
    duration_ms: int | None = None
    renditions: tuple[Rendition, ...] = ()
    storyboard_name: str | None = None  # the storyboard's key relative to the ladder prefix
    ladder_stamp: Stamp | None = None
    video_url: str | None = None
    thumbnail: str | None = None
    published_at: datetime | None = None
    published_stamp: Stamp | None = None
    queued_at: datetime | None = None
    priority: str | None = None
    reasons: tuple[str, ...] = ()
    review_stamp: Stamp | None = None
    labels: tuple[tuple[str, float], ...] = ()  # (name, confidence %) of the decision under review
    labels_stamp: Stamp | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @property
    def published(self) -> bool:
        return self.state == PUBLISHED

    @property
    def sort_time(self) -> datetime:
        """Newest first in listings: publication time once published, else creation time."""
        moment = self.published_at if self.published else self.created_at
        assert moment is not None, "a folded record has seen at least one event"
        return moment

    @property
    def storyboard(self) -> str | None:
        """The public storyboard (WebVTT) next to the published master playlist."""
        if not (self.published and self.video_url and self.storyboard_name):
            return None
        return f"{self.video_url.rsplit('/', 1)[0]}/{self.storyboard_name}"


def _later(current: Stamp | None, new: Stamp) -> bool:
    return current is None or new > current


def apply(record: VideoRecord | None, schema: str, event: Mapping[str, Any]) -> VideoRecord:
    """`record` (None: a video not seen yet) with one more event of `schema` folded in."""
    if schema not in LIFECYCLE_SCHEMAS:
        raise ValueError(f"{schema} is not a lifecycle event")
    video_id = str(event["video_id"])
    record = record or VideoRecord(video_id)
    if record.video_id != video_id:
        raise ValueError(f"an event of {video_id} folded into {record.video_id}")
    occurred: datetime = event["occurred_at"]
    stamp: Stamp = (occurred, str(event["event_id"]))
    changes: dict[str, Any] = {
        "created_at": occurred if record.created_at is None else min(record.created_at, occurred),
        "updated_at": occurred if record.updated_at is None else max(record.updated_at, occurred),
    }
    if schema in TAKEDOWN_SCHEMAS:
        case = str(event["case_id"])
        if schema == "VideoTakenDown":
            changes["taken_down_by"] = record.taken_down_by | {case}
        else:
            changes["restored_from"] = record.restored_from | {case}
    else:
        state = DECISION_STATE[str(event["decision"])] if schema == "ModerationDecided" else EVENT_STATE[schema]
        rank, current = STATE_RANK[state], STATE_RANK[record.ranked_state]
        if record.state_stamp is None or rank > current or (rank == current and stamp > record.state_stamp):
            changes.update(ranked_state=state, state_stamp=stamp)
    down = changes.get("taken_down_by", record.taken_down_by) - changes.get("restored_from", record.restored_from)
    changes["state"] = TAKEN_DOWN if down else changes.get("ranked_state", record.ranked_state)

    if schema == "VideoUploaded" and _later(record.upload_stamp, stamp):
        changes.update(title=event["title"], uploader_id=event["uploader_id"], premium=bool(event["premium"]),
                       tags=tuple(event["tags"]), upload_stamp=stamp)
    elif schema == "VideoPublished":
        if record.upload_stamp is None:  # it repeats title, uploader and premium: enough until VideoUploaded
            changes.update(title=event["title"], uploader_id=event["uploader_id"], premium=bool(event["premium"]))
        if _later(record.published_stamp, stamp):
            changes.update(video_url=event["video_url"], thumbnail=event["thumbnail"],
                           published_at=event["published_at"], published_stamp=stamp)
    elif schema == "VideoTranscoded" and _later(record.ladder_stamp, stamp):
        vtt = event.get("storyboard_vtt_key")
        changes.update(duration_ms=int(event["duration_ms"]), ladder_stamp=stamp,
                       renditions=tuple(Rendition(r["height"], r["width"], r["bandwidth"])
                                        for r in event["renditions"]),
                       storyboard_name=vtt.removeprefix(event["prefix"]) if vtt else None)
    elif schema == "ModerationReviewRequested" and _later(record.review_stamp, stamp):
        changes.update(queued_at=occurred, priority=str(event["priority"]), reasons=tuple(event["reasons"]),
                       review_stamp=stamp)
    elif schema == "ModerationDecided" and event["decision"] == "NEEDS_REVIEW" and _later(record.labels_stamp, stamp):
        changes.update(labels=tuple((str(label["name"]), round(float(label["confidence"]), 1))
                                    for label in event["labels"]), labels_stamp=stamp)
    return replace(record, **changes)


def fold(events: Iterable[tuple[str, Mapping[str, Any]]]) -> dict[str, VideoRecord]:
    """Every video's record from (schema, event) pairs, in any order."""
    records: dict[str, VideoRecord] = {}
    for schema, event in events:
        video_id = str(event["video_id"])
        records[video_id] = apply(records.get(video_id), schema, event)
    return records


def iso_time(moment: datetime | None) -> str | None:
    """RFC 3339 in UTC with milliseconds and `Z`, as the API answers times (None stays None)."""
    return None if moment is None else moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def public_view(record: VideoRecord) -> dict[str, Any]:
    """The record as `GET /v1/videos/{id}` answers it (API.md); URLs only once published."""
    published = record.published
    return {
        "video_id": record.video_id, "title": record.title, "uploader_id": record.uploader_id,
        "state": record.state, "premium": record.premium, "tags": list(record.tags),
        "duration_ms": record.duration_ms,
        "renditions": [{"height": r.height, "width": r.width, "bandwidth": r.bandwidth} for r in record.renditions],
        "video_url": record.video_url if published else None,
        "thumbnail": record.thumbnail if published else None,
        "storyboard": record.storyboard,
        "published_at": iso_time(record.published_at) if published else None,
        "created_at": iso_time(record.created_at), "updated_at": iso_time(record.updated_at),
    }


def review_view(record: VideoRecord) -> dict[str, Any]:
    """A review-queue entry (`GET /v1/admin/review`)."""
    return {
        "video_id": record.video_id, "title": record.title, "uploader_id": record.uploader_id,
        "queued_at": iso_time(record.queued_at or record.updated_at), "priority": record.priority or "NORMAL",
        "reasons": list(record.reasons), "premium": record.premium,
        "labels": [{"name": name, "confidence": confidence} for name, confidence in record.labels],
    }
