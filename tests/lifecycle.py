"""Lifecycle events of one video for the catalog's tests, made the project's way (new_record)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from infra.s3.layout import ladder_prefix, new_video_id, public_url
from schemas.envelope import new_record

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
CDN = "http://cdn.test"
Event = tuple[str, dict[str, Any]]


class Video:
    """Builds the events of one video; `at(s)` is T0 + s seconds (plus `offset_s`)."""

    def __init__(self, uploader_id: str = "alice", title: str = "A walk", premium: bool = False,
                 tags: tuple[str, ...] = ("walk",), offset_s: float = 0.0, video_id: str | None = None) -> None:
        self.video_id = video_id or new_video_id()
        self.uploader_id, self.title, self.premium, self.tags = uploader_id, title, premium, list(tags)
        self.offset_s = offset_s

    def at(self, seconds: float) -> datetime:
        return T0 + timedelta(seconds=self.offset_s + seconds)

    def _record(self, schema: str, seconds: float, fields: dict[str, Any], producer: str = "test") -> Event:
        return schema, new_record(schema, producer, {"video_id": self.video_id, **fields}, occurred_at=self.at(seconds))

    def uploaded(self, s: float = 0) -> Event:
        return self._record("VideoUploaded", s, {
            "uploader_id": self.uploader_id, "title": self.title, "content_type": "video/mp4", "size_bytes": 1000,
            "source_bucket": "lustrax-uploads", "source_key": f"sources/{self.video_id}", "premium": self.premium,
            "tags": self.tags})

    def progress(self, s: float = 5, percent: float = 50.0) -> Event:
        return self._record("TranscodeProgress", s, {"percent": percent})

    def transcoded(self, s: float = 10) -> Event:
        prefix = ladder_prefix(self.video_id)
        return self._record("VideoTranscoded", s, {
            "bucket": "lustrax-staging", "prefix": prefix, "master_playlist_key": prefix + "master.m3u8",
            "poster_key": prefix + "thumb.jpg", "storyboard_key": prefix + "storyboard.jpg",
            "storyboard_vtt_key": prefix + "storyboard.vtt", "duration_ms": 12_000, "source_width": 1280,
            "source_height": 720, "total_bytes": 123_456,
            "renditions": [{"name": f"{h}p", "width": w, "height": h, "bandwidth": b, "codecs": "avc1.64001f",
                            "playlist_key": f"{prefix}{h}p/index.m3u8"}
                           for w, h, b in ((1280, 720, 2_500_000), (640, 360, 800_000))]})

    def failed(self, s: float = 10) -> Event:
        return self._record("TranscodeFailed", s, {"reason": "not a video", "retryable": False, "attempt": 1})

    def decided(self, decision: str, s: float = 20, provider: str = "nudenet", reviewer_id: str | None = None,
                reason: str | None = None) -> Event:
        return self._record("ModerationDecided", s, {
            "decision": decision, "provider": provider,
            "labels": [{"name": "Weapons", "confidence": 72.5, "parent": "Violence", "taxonomy_level": 2,
                        "frames": 3}],
            "reason": reason, "reviewer_id": reviewer_id, "model_version": None, "policy_version": "test-1",
            "frames_checked": 6, "reasons": ["Weapons 72% >= 70%: review"], "not_checked": [],
            "apparent_minor": False, "poster_reason": None}, producer="moderation")

    def review_requested(self, decided: Event, s: float = 20) -> Event:
        prefix = ladder_prefix(self.video_id)
        return self._record("ModerationReviewRequested", s, {
            "decision_event_id": decided[1]["event_id"], "staging_bucket": "lustrax-staging",
            "master_playlist_key": prefix + "master.m3u8", "premium": self.premium, "priority": "NORMAL",
            "reasons": ["Weapons 72% >= 70%: review"], "not_checked": []}, producer="moderation")

    def published(self, s: float = 30) -> Event:
        return self._record("VideoPublished", s, {
            "title": self.title, "uploader_id": self.uploader_id,
            "video_url": public_url(CDN, self.video_id, self.premium, "master.m3u8"),
            "thumbnail": public_url(CDN, self.video_id, self.premium, "thumb.jpg"), "premium": self.premium,
            "published_at": self.at(s)}, producer="moderation")

    def taken_down(self, case_id: str, s: float = 40, case_type: str = "DMCA") -> Event:
        return self._record("VideoTakenDown", s, {
            "case_id": case_id, "case_type": case_type, "uploader_id": self.uploader_id,
            "reason": "removed after a DMCA notice", "removed_objects": 5}, producer="takedown")

    def restored(self, case_id: str, s: float = 50, case_type: str = "DMCA") -> Event:
        return self._record("VideoRestored", s, {
            "case_id": case_id, "case_type": case_type, "reason": "counter-notice period passed",
            "republished": True}, producer="takedown")

    def through(self, state: str) -> list[Event]:
        """The events that bring the video to `state` by the usual path."""
        needs_review = self.decided("NEEDS_REVIEW")
        paths: dict[str, list[Event]] = {
            "uploaded": [self.uploaded()],
            "transcoding": [self.uploaded(), self.progress()],
            "transcoded": [self.uploaded(), self.progress(), self.transcoded()],
            "failed": [self.uploaded(), self.progress(), self.failed()],
            "in_review": [self.uploaded(), self.progress(), self.transcoded(), needs_review,
                          self.review_requested(needs_review)],
            "rejected": [self.uploaded(), self.progress(), self.transcoded(), self.decided("REJECTED")],
            "published": [self.uploaded(), self.progress(), self.transcoded(), self.decided("APPROVED"),
                          self.published()],
        }
        return paths[state]

