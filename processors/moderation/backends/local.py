"""The local backend (default, offline): NudeNet 3.4's bundled ONNX detector, mapped onto the
taxonomy. It sees nudity only: nothing about violence, symbols, drugs or age (docs/moderation.md)."""

from __future__ import annotations

import threading
from importlib import metadata
from pathlib import Path

from processors.moderation.backends import FrameResult
from processors.moderation.taxonomy import NUDENET_COVERAGE, nudenet_labels


class LocalBackend:
    name = "nudenet"
    coverage = NUDENET_COVERAGE
    estimates_age = False

    def __init__(self) -> None:
        from nudenet import NudeDetector  # imports onnxruntime: only when this backend is chosen

        self.detector = NudeDetector()
        self._lock = threading.Lock()  # one ONNX session; calls come from worker threads
        self.model_version = f"nudenet-{metadata.version('nudenet')}-320n"

    def detect(self, frame: Path) -> list[dict[str, object]]:
        """The model's raw output for one frame (the bench compares against this)."""
        with self._lock:
            return list(self.detector.detect(str(frame)))

    def analyze(self, frame: Path) -> FrameResult:
        return FrameResult(tuple(nudenet_labels(self.detect(frame))), None)
