"""Failures of a transcoding job, each saying whether a retry can help (TranscodeFailed.retryable)."""

from __future__ import annotations


class TranscodeError(Exception):
    """A job failed; `reason` is human-readable, `retryable` tells the agent whether to try again."""

    retryable: bool = False

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class CorruptSourceError(TranscodeError):
    """The upload is not a decodable video: retrying the same bytes gives the same result."""


class SourceTooLargeError(TranscodeError):
    """The upload exceeds the configured maximum size."""


class SourceMissingError(TranscodeError):
    """The upload's object does not exist (deleted, or the event names a wrong key)."""


class TransientTranscodeError(TranscodeError):
    """Infrastructure trouble (S3 errors, timeouts, a killed ffmpeg): a later attempt may succeed."""

    retryable = True
