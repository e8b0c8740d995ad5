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
        # Imports onnxruntime: only when this backend is chosen.
        import nudenet
        import onnxruntime

        self.detector = nudenet.NudeDetector()
        # NudeDetector builds its session with onnxruntime's defaults, whose threads spin while they
        # wait: on a shared 2-core machine that doubled the time per frame (113 -> 58 ms measured).
        # One thread, no spinning: the other core decodes the next frames meanwhile (frames.py).
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.detector.onnx_session = onnxruntime.InferenceSession(
            str(Path(nudenet.__file__).parent / "320n.onnx"), options, providers=["CPUExecutionProvider"])
        self._lock = threading.Lock()  # one ONNX session; calls come from worker threads
        self.model_version = f"nudenet-{metadata.version('nudenet')}-320n"

    def detect(self, frame: Path) -> list[dict[str, object]]:
        """The model's raw output for one frame (the bench compares against this)."""
        with self._lock:
            return list(self.detector.detect(str(frame)))

    def analyze(self, frame: Path) -> FrameResult:
        return FrameResult(tuple(nudenet_labels(self.detect(frame))), None)
