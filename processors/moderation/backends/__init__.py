"""Moderation backends: one small protocol, two implementations (backends/local.py, rekognition.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from common.settings import Settings
from processors.moderation.taxonomy import Label


@dataclass(frozen=True)
class FrameResult:
    labels: tuple[Label, ...]  # in taxonomy names, each with its ancestors
    face_age_lows: tuple[int, ...] | None  # AgeRange.Low per face; None: this backend estimates no age


class TransientBackendError(Exception):
    """The backend failed in a way that may pass (throttling, a 5xx) and our retries ran out."""


class ModerationBackend(Protocol):
    name: str  # the ModerationDecided provider, e.g. "rekognition" or "nudenet"
    coverage: frozenset[str]  # the taxonomy names it can detect (with their descendants)
    estimates_age: bool

    @property
    def model_version(self) -> str: ...

    def analyze(self, frame: Path) -> FrameResult:
        """Labels (and face ages) in one JPEG frame."""
        ...


def create_backend(settings: Settings) -> ModerationBackend:
    """The backend that LUSTRAX_MODERATION_BACKEND names."""
    if settings.moderation_backend == "rekognition":
        from processors.moderation.backends.rekognition import RekognitionBackend, rekognition_client

        return RekognitionBackend(rekognition_client(settings), settings.moderation_min_confidence,
                                  settings.moderation_max_attempts, settings.moderation_retry_base_s)
    from processors.moderation.backends.local import LocalBackend

    return LocalBackend()

