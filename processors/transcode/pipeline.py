"""One upload -> one ladder in the staging bucket: download, probe, transcode, upload, record.

Blocking code (boto3, ffmpeg): the agent runs it in a thread so that the event loop, and with it
the consumer's heartbeats, keep going during a long transcode.

Idempotent: keys depend only on the video id, and a finished ladder is recorded in
`ladders/{video_id}.json` once all of it, master.m3u8 last, is in place. A redelivered upload whose
ladder is complete is answered from that record (same event_id) without transcoding again;
`lustrax retranscode` removes the record to force a new run.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import shutil
import tempfile
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from botocore.exceptions import BotoCoreError, ClientError

from common.settings import Settings
from infra.s3.buckets import read_object
from infra.s3.layout import is_video_id, ladder_prefix, ladder_record_key
from processors.transcode.errors import SourceTooLargeError, TranscodeError, TransientTranscodeError
from processors.transcode.ffmpeg.probe import probe
from processors.transcode.job import LadderOutput, transcode_source
from processors.transcode.storage import download_source, upload_ladder
from schemas.envelope import new_record

T = TypeVar("T")
log = logging.getLogger(__name__)
PRODUCER_NAME = "transcoder"
TRANSCODED_NAMESPACE = uuid.UUID("0b7f4a52-3c39-4f63-9d7c-5a0e1f7c2b90")


def retry_delay_s(attempt: int, base_s: float, cap_s: float = 60.0, jitter: float = 0.2) -> float:
    """Exponential backoff before attempt `attempt + 1` (attempt counts from 1), with +-20 % jitter."""
    delay = min(cap_s, base_s * 2 ** (attempt - 1))
    return delay * (1 + random.uniform(-jitter, jitter))


class FinalTranscodeFailure(Exception):
    """No more attempts: `error` is the last failure, after `attempt` attempts."""

    def __init__(self, error: TranscodeError, attempt: int) -> None:
        super().__init__(error.reason)
        self.error = error
        self.attempt = attempt


async def run_with_retries(operation: Callable[[], Awaitable[T]], max_attempts: int, base_s: float,
                           sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> T:
    """Run `operation` until it succeeds; retry only retryable TranscodeErrors, with backoff."""
    for attempt in range(1, max_attempts + 1):
        try:
            return await operation()
        except TranscodeError as exc:
            if not exc.retryable or attempt == max_attempts:
                raise FinalTranscodeFailure(exc, attempt) from exc
            log.warning("attempt %d failed, retrying: %s", attempt, exc.reason)
            await sleep(retry_delay_s(attempt, base_s))
    raise AssertionError("unreachable: max_attempts >= 1")


def transcoded_record(video_id: str, bucket: str, output: LadderOutput, run_id: str) -> dict[str, Any]:
    """The VideoTranscoded event of a finished ladder (pure)."""
    prefix = ladder_prefix(video_id)
    return new_record("VideoTranscoded", PRODUCER_NAME, {
        "video_id": video_id,
        "bucket": bucket,
        "prefix": prefix,
        "master_playlist_key": prefix + output.master,
        "poster_key": prefix + output.poster,
        "storyboard_key": prefix + output.storyboard,
        "storyboard_vtt_key": prefix + output.storyboard_vtt,
        "duration_ms": output.duration_ms,
        "source_width": output.source_width,
        "source_height": output.source_height,
        "total_bytes": output.total_bytes,
        "renditions": [
            {"name": r.rendition.name, "width": r.rendition.width, "height": r.rendition.height,
             "bandwidth": r.rendition.bandwidth, "codecs": r.rendition.codecs, "playlist_key": prefix + r.playlist}
            for r in output.renditions
        ],
    }, event_id=uuid.uuid5(TRANSCODED_NAMESPACE, f"{video_id}:{run_id}"))


@dataclass(frozen=True)
class LadderRecord:
    """What a finished ladder needs for its VideoTranscoded event, kept beside it in staging."""

    run_id: str
    event: dict[str, Any]

    def to_json(self) -> bytes:
        event = dict(self.event, event_id=str(self.event["event_id"]),
                     occurred_at=self.event["occurred_at"].isoformat())
        return json.dumps({"run_id": self.run_id, "event": event}).encode()

    @classmethod
    def from_json(cls, data: bytes) -> "LadderRecord":
        raw = json.loads(data)
        event = dict(raw["event"], event_id=uuid.UUID(raw["event"]["event_id"]),
                     occurred_at=datetime.fromisoformat(raw["event"]["occurred_at"]))
        return cls(raw["run_id"], event)


class TranscodePipeline:
    def __init__(self, settings: Settings, s3: Any) -> None:
        self.settings = settings
        self.s3 = s3
        self.bucket = settings.s3_staging_bucket
        self.workdir = settings.transcode_workdir or settings.data_dir / "transcode-work"
        self.workdir.mkdir(parents=True, exist_ok=True)

    def clean_stale_work(self) -> None:
        """Temporary directories left by a crashed run (one worker owns its workdir)."""
        for leftover in self.workdir.iterdir():
            shutil.rmtree(leftover, ignore_errors=True) if leftover.is_dir() else leftover.unlink(missing_ok=True)

    def finished(self, video_id: str) -> LadderRecord | None:
        try:
            body = read_object(self.s3, self.bucket, ladder_record_key(video_id))
        except (ClientError, BotoCoreError) as exc:
            raise TransientTranscodeError(f"cannot read the ladder record of {video_id}: {exc}") from exc
        return None if body is None else LadderRecord.from_json(body)

    def forget(self, video_id: str) -> None:
        """Make the next delivery of this video's upload transcode again (`lustrax retranscode`)."""
        self.s3.delete_object(Bucket=self.bucket, Key=ladder_record_key(video_id))

    def run(self, upload: dict[str, Any], on_progress: Callable[[float], None] | None = None) -> dict[str, Any]:
        """The VideoTranscoded record for a VideoUploaded record; raises TranscodeError subclasses."""
        video_id = upload["video_id"]
        if not is_video_id(video_id):
            raise TranscodeError(f"{video_id!r} is not a video id: it cannot become keys")
        done = self.finished(video_id)
        if done is not None:
            return done.event  # a redelivery: the ladder is complete, announce it again, same event_id
        scratch = Path(tempfile.mkdtemp(prefix=f"{video_id}-", dir=self.workdir))
        try:
            source = download_source(self.s3, upload["source_bucket"], upload["source_key"], scratch / "source",
                                     self.settings.transcode_max_source_bytes)
            info = probe(source)
            if info.duration_s > self.settings.transcode_max_duration_s:
                raise SourceTooLargeError(f"the video lasts {info.duration_s:.0f} s, more than the limit of "
                                          f"{self.settings.transcode_max_duration_s:.0f} s")
            output = transcode_source(source, scratch, video_id, info=info, preset=self.settings.transcode_preset,
                                      segment_seconds=self.settings.transcode_segment_seconds,
                                      on_progress=on_progress, timeout_s=self.settings.transcode_timeout_s)
            upload_ladder(self.s3, self.bucket, video_id, output)
            run_id = uuid.uuid4().hex
            record = LadderRecord(run_id, transcoded_record(video_id, self.bucket, output, run_id))
            try:
                self.s3.put_object(Bucket=self.bucket, Key=ladder_record_key(video_id), Body=record.to_json(),
                                   ContentType="application/json")
            except (ClientError, BotoCoreError) as exc:
                raise TransientTranscodeError(f"cannot record the ladder of {video_id}: {exc}") from exc
            return record.event
        finally:
            shutil.rmtree(scratch, ignore_errors=True)


def failed_record(video_id: str, reason: str, retryable: bool, attempt: int) -> dict[str, Any]:
    return new_record("TranscodeFailed", PRODUCER_NAME, {
        "video_id": video_id, "reason": reason[:2000], "retryable": retryable, "attempt": attempt})


def progress_record(video_id: str, percent: float) -> dict[str, Any]:
    return new_record("TranscodeProgress", PRODUCER_NAME, {"video_id": video_id, "percent": float(percent)})
