"""One VideoTranscoded -> a decision, kept in staging, and the events to send. Blocking (boto3,
ffmpeg, the model): the agent runs it in a thread.

Steps: sample frames of the lowest rendition (plus the transcoder's poster), run the backend on
each, turn the labels into a decision under the policy (policy.decide), choose a safe-for-work
poster, record the decision in staging (`moderation/{id}.json`), publish if approved.

Redelivery: the record is written before anything is published or sent, and a delivery of the same
VideoTranscoded (same event_id) is answered from it: the same events with the same event_ids, the
publishing repeated (idempotent copies), never a second decision. A new ladder of the video
(`lustrax retranscode`) is moderated again, unless a human decided: that decision stands.
"""

from __future__ import annotations

import base64
import json
import logging
import shutil
import tempfile
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from common.settings import Settings
from infra.s3.buckets import read_object
from infra.s3.layout import is_missing, is_video_id, ladder_prefix, moderation_poster_key, moderation_record_key
from infra.s3.uploads import UploadManifest, read_manifest
from processors.moderation.backends import FrameResult, ModerationBackend, TransientBackendError
from processors.moderation.frames import FrameError, SampledFrame, blur, fetch_rendition, stream_frames
from processors.moderation.policy import Decision, Evidence, Policy, choose_poster, decide, merge_frames
from processors.moderation.publish import PRODUCER_NAME, publish_ladder, published_record
from processors.moderation.taxonomy import Label, not_checked
from schemas.codec import decode, encode
from schemas.envelope import new_record

log = logging.getLogger(__name__)
DECIDED_NAMESPACE = uuid.UUID("9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d")
HUMAN = "human"


class ModerationFailure(Exception):
    """A video that cannot be moderated; `retryable` when trying again later may work."""

    def __init__(self, reason: str, retryable: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable


@dataclass
class ModerationRecord:
    """What was decided for a video, kept in staging; `events` are the Avro-encoded events it sent."""

    video_id: str
    transcoded_event_id: str
    decision: str
    provider: str
    premium: bool
    poster_key: str
    events: list[bytes] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)  # for people reading the bucket

    def decoded(self) -> list[tuple[str, dict[str, Any]]]:
        return [decode(data) for data in self.events]

    def to_json(self) -> bytes:
        raw = {**self.__dict__, "events": [base64.b64encode(data).decode() for data in self.events]}
        return json.dumps(raw, indent=1, default=str).encode()

    @classmethod
    def from_json(cls, data: bytes) -> "ModerationRecord":
        raw = json.loads(data)
        raw["events"] = [base64.b64decode(item) for item in raw["events"]]
        return cls(**raw)


def evidence_of(results: list[FrameResult], backend: ModerationBackend) -> tuple[Evidence, Counter[str]]:
    """The video's evidence from its frames' results, and in how many frames each label appeared."""
    counts: Counter[str] = Counter(label.name for result in results for label in result.labels)
    ages = None if not backend.estimates_age else tuple(
        low for result in results for low in (result.face_age_lows or ()))
    return Evidence(merge_frames(result.labels for result in results), len(results), ages,
                    not_checked(backend.coverage, backend.estimates_age)), counts


def decided_record(video_id: str, event_id: uuid.UUID, decision: Decision, labels: list[Label],
                   counts: Counter[str], backend: ModerationBackend, policy: Policy, frames_checked: int,
                   poster_reason: str | None) -> dict[str, Any]:
    return new_record("ModerationDecided", PRODUCER_NAME, {
        "video_id": video_id, "decision": decision.decision, "provider": backend.name,
        "labels": [{"name": label.name, "confidence": label.confidence, "parent": label.parent,
                    "taxonomy_level": label.level, "frames": counts[label.name]} for label in labels],
        "reason": "; ".join(decision.reasons)[:2000] or None, "reviewer_id": None,
        "model_version": backend.model_version, "policy_version": policy.version,
        "frames_checked": frames_checked, "reasons": list(decision.reasons),
        "not_checked": list(decision.not_checked), "apparent_minor": decision.apparent_minor,
        "poster_reason": poster_reason,
    }, event_id=event_id)


def review_record(decided: dict[str, Any], staging_bucket: str, master_key: str, premium: bool) -> dict[str, Any]:
    return new_record("ModerationReviewRequested", PRODUCER_NAME, {
        "video_id": decided["video_id"], "decision_event_id": decided["event_id"], "staging_bucket": staging_bucket,
        "master_playlist_key": master_key, "premium": premium,
        "priority": "HIGH" if decided["apparent_minor"] else "NORMAL",
        "reasons": decided["reasons"], "not_checked": decided["not_checked"],
    }, event_id=uuid.uuid5(DECIDED_NAMESPACE, f"review:{decided['event_id']}"), occurred_at=decided["occurred_at"])


class Moderator:
    def __init__(self, settings: Settings, s3: Any, backend: ModerationBackend, policy: Policy) -> None:
        self.settings = settings
        self.s3 = s3
        self.backend = backend
        self.policy = policy
        self.staging = settings.s3_staging_bucket
        self.workdir = settings.data_dir / "moderation-work"
        self.workdir.mkdir(parents=True, exist_ok=True)

    # -- the decision record ------------------------------------------------------------------
    def record(self, video_id: str) -> ModerationRecord | None:
        body = read_object(self.s3, self.staging, moderation_record_key(video_id))
        return None if body is None else ModerationRecord.from_json(body)

    def save(self, record: ModerationRecord) -> None:
        self.s3.put_object(Bucket=self.staging, Key=moderation_record_key(record.video_id), Body=record.to_json(),
                           ContentType="application/json")

    def manifest(self, video_id: str) -> UploadManifest:
        manifest = read_manifest(self.s3, self.settings.s3_uploads_bucket, video_id)
        if manifest is None:
            raise ModerationFailure(f"{video_id} has no upload manifest: title, uploader and premium are unknown",
                                    retryable=False)
        return manifest

    def publish(self, record: ModerationRecord) -> None:
        """Copy the ladder to the public bucket (the step a human approval reuses)."""
        publish_ladder(self.s3, self.staging, self.settings.s3_public_bucket, record.video_id, record.premium,
                       record.poster_key)

    # -- one VideoTranscoded ------------------------------------------------------------------
    def run(self, transcoded: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        """The (schema, record) events to send for one VideoTranscoded; raises ModerationFailure."""
        video_id = transcoded["video_id"]
        if not is_video_id(video_id):
            raise ModerationFailure(f"{video_id!r} is not a video id", retryable=False)
        self.check_ladder_location(transcoded)
        try:
            return self._run(transcoded)
        except (ClientError, BotoCoreError, TransientBackendError) as exc:
            if isinstance(exc, ClientError) and is_missing(exc):
                raise ModerationFailure(f"part of the ladder of {video_id} is missing: {exc}", False) from exc
            raise ModerationFailure(f"moderation of {video_id} failed: {exc}", retryable=True) from exc
        except (FrameError, FileNotFoundError) as exc:
            raise ModerationFailure(f"the ladder of {video_id} cannot be read: {exc}", retryable=False) from exc

    def check_ladder_location(self, transcoded: dict[str, Any]) -> None:
        """Read only this video's ladder in staging: the event's bucket and keys are not trusted
        (a forged event must not make the worker read, or judge, another object)."""
        prefix = ladder_prefix(transcoded["video_id"])
        keys = [transcoded["poster_key"], transcoded["master_playlist_key"],
                *(rendition["playlist_key"] for rendition in transcoded["renditions"])]
        if transcoded["bucket"] != self.staging or not transcoded["renditions"] or \
                any(not key.startswith(prefix) or ".." in key.split("/") for key in keys):
            raise ModerationFailure(f"the VideoTranscoded of {transcoded['video_id']} points outside "
                                    f"s3://{self.staging}/{prefix}", retryable=False)

    def _run(self, transcoded: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        video_id = transcoded["video_id"]
        known = self.record(video_id)
        if known is not None and (known.transcoded_event_id == str(transcoded["event_id"])
                                  or known.provider == HUMAN):
            log.info("%s was decided before (%s): announcing it again", video_id, known.decision)
            if known.decision == "APPROVED":
                self.publish(known)
            return known.decoded()
        manifest = self.manifest(video_id)
        scratch = Path(tempfile.mkdtemp(prefix=f"{video_id}-", dir=self.workdir))
        try:
            record = self._decide(transcoded, manifest, scratch)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        self.save(record)  # before any effect: a redelivery repeats this decision, never makes another
        if record.decision == "APPROVED":
            self.publish(record)
        return record.decoded()

    def frames(self, transcoded: dict[str, Any], scratch: Path) -> Iterator[SampledFrame]:
        """The transcoder's poster first, then a frame every sampling interval of the lowest rendition,
        each as soon as it is decoded."""
        poster = scratch / "poster.jpg"
        self.s3.download_file(transcoded["bucket"], transcoded["poster_key"], str(poster))
        lowest = min(transcoded["renditions"], key=lambda rendition: rendition["height"])
        playlist = fetch_rendition(self.s3, transcoded["bucket"], lowest["playlist_key"], scratch / "rendition")
        yield SampledFrame(poster, None)
        yield from stream_frames(playlist, scratch / "frames", self.settings.moderation_sample_interval_s)

    def _decide(self, transcoded: dict[str, Any], manifest: UploadManifest, scratch: Path) -> ModerationRecord:
        video_id = transcoded["video_id"]
        frames: list[SampledFrame] = []
        results: list[FrameResult] = []
        for frame in self.frames(transcoded, scratch):
            frames.append(frame)
            results.append(self.backend.analyze(frame.path))
        evidence, counts = evidence_of(results, self.backend)
        decision = decide(self.policy, evidence, self.settings.moderation_minor_age)
        choice = choose_poster(self.policy, [result.labels for result in results], 0)
        poster_key = transcoded["poster_key"]
        if choice.index != 0 or choice.blur:
            image = frames[choice.index].path
            if choice.blur:
                image = blur(image, scratch / "poster-blurred.jpg")
            poster_key = moderation_poster_key(video_id)
            self.s3.upload_file(str(image), self.staging, poster_key,
                                ExtraArgs={"ContentType": "image/jpeg", "CacheControl": "public, max-age=60"})
        event_id = uuid.uuid5(DECIDED_NAMESPACE, f"decided:{video_id}:{transcoded['event_id']}")
        decided = decided_record(video_id, event_id, decision, list(evidence.labels), counts, self.backend,
                                 self.policy, len(frames), choice.reason)
        events: list[tuple[str, dict[str, Any]]] = [("ModerationDecided", decided)]
        if decision.decision == "APPROVED":
            events.append(("VideoPublished", published_record(self.settings.public_base_url, manifest, event_id,
                                                              decided["occurred_at"])))
        elif decision.decision == "NEEDS_REVIEW":
            events.append(("ModerationReviewRequested", review_record(
                decided, self.staging, transcoded["master_playlist_key"], manifest.premium)))
        log.info("%s: %s (%d frames; %s)", video_id, decision.decision, len(frames),
                 "; ".join(decision.reasons) or "no concern")
        return ModerationRecord(
            video_id, str(transcoded["event_id"]), decision.decision, self.backend.name, manifest.premium, poster_key,
            [encode(schema, event) for schema, event in events],
            {"decided_at": datetime.now(UTC).isoformat(), "reasons": list(decision.reasons),
             "not_checked": list(decision.not_checked), "poster": choice.reason,
             "policy_version": self.policy.version, "model_version": self.backend.model_version})
