"""The local backend: NudeNet's bundled model for real on frames ffmpeg generates, and the mapping
of its classes onto the taxonomy (table-driven, from outputs shaped like NudeNet's)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from processors.moderation.backends.local import LocalBackend
from processors.moderation.frames import blur, sample_frames
from processors.moderation.moderate import evidence_of
from processors.moderation.policy import Evidence, choose_poster, decide, load_policy, merge_frames
from processors.moderation.taxonomy import APPARENT_AGE, nudenet_labels
from processors.transcode.ffmpeg.binary import ffmpeg_binary


@pytest.fixture(scope="module")
def backend() -> LocalBackend:
    return LocalBackend()


@pytest.fixture(scope="module")
def ladder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 6 s 360p HLS rendition, like the transcoder's lowest one."""
    out = tmp_path_factory.mktemp("rendition")
    subprocess.run([ffmpeg_binary(), "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25", "-t", "6",
                    "-c:v", "libx264", "-preset", "ultrafast", "-g", "50", "-f", "hls", "-hls_time", "2",
                    "-hls_playlist_type", "vod", "-hls_segment_filename", str(out / "seg_%05d.ts"),
                    str(out / "index.m3u8")], check=True)
    return out / "index.m3u8"


def test_a_test_pattern_video_has_no_detection_and_is_approved(backend: LocalBackend, ladder: Path,
                                                               tmp_path: Path) -> None:
    frames = sample_frames(ladder, tmp_path / "frames", 2.0)
    assert [frame.at_s for frame in frames] == [0.0, 2.0, 4.0]
    assert all(frame.path.read_bytes()[:2] == b"\xff\xd8" for frame in frames)
    raw = [backend.detect(frame.path) for frame in frames]
    assert raw == [[], [], []]  # the model's real output: nothing
    results = [backend.analyze(frame.path) for frame in frames]
    evidence, _ = evidence_of(results, backend)
    assert evidence.labels == [] and evidence.face_age_lows is None and evidence.frames_checked == 3
    assert APPARENT_AGE in evidence.not_checked and "Violence" in evidence.not_checked
    decision = decide(load_policy(), evidence)
    assert decision.decision == "APPROVED" and "Hate Symbols" in decision.not_checked
    assert not choose_poster(load_policy(), [r.labels for r in results], 0).blur
    assert backend.model_version.startswith("nudenet-3.4")


def test_blurring_keeps_a_jpeg_of_the_same_size(ladder: Path, tmp_path: Path) -> None:
    [frame, *_] = sample_frames(ladder, tmp_path / "frames", 5.0)
    blurred = blur(frame.path, tmp_path / "blurred.jpg")
    assert blurred.read_bytes()[:2] == b"\xff\xd8" and blurred.read_bytes() != frame.path.read_bytes()


def _det(cls: str, score: float) -> dict[str, object]:
    return {"class": cls, "score": score, "box": [10, 20, 100, 120]}


@pytest.mark.parametrize(("detections", "expected"), [
    ([], []),
    ([_det("FACE_FEMALE", 0.9), _det("FEET_EXPOSED", 0.8), _det("BELLY_EXPOSED", 0.7), _det("ARMPITS_COVERED", 0.5)],
     []),  # not moderation categories
    ([_det("FEMALE_GENITALIA_EXPOSED", 0.81)],
     [("Explicit", None, 1, 81.0), ("Explicit Nudity", "Explicit", 2, 81.0),
      ("Exposed Female Genitalia", "Explicit Nudity", 3, 81.0)]),
    ([_det("BUTTOCKS_EXPOSED", 0.4), _det("ANUS_EXPOSED", 0.6)],  # one label, the higher score
     [("Explicit", None, 1, 60.0), ("Explicit Nudity", "Explicit", 2, 60.0),
      ("Exposed Buttocks or Anus", "Explicit Nudity", 3, 60.0)]),
    ([_det("MALE_BREAST_EXPOSED", 0.55)],
     [("Non-Explicit Nudity of Intimate parts and Kissing", None, 1, 55.0),
      ("Non-Explicit Nudity", "Non-Explicit Nudity of Intimate parts and Kissing", 2, 55.0),
      ("Exposed Male Nipple", "Non-Explicit Nudity", 3, 55.0)]),
    ([_det("FEMALE_BREAST_COVERED", 0.7), _det("BUTTOCKS_COVERED", 0.9)],
     [("Swimwear or Underwear", None, 1, 90.0),
      ("Female Swimwear or Underwear", "Swimwear or Underwear", 2, 70.0)]),
])
def test_nudenet_classes_map_onto_the_taxonomy(detections: list[dict[str, object]],
                                              expected: list[tuple[str, str | None, int, float]]) -> None:
    assert [(label.name, label.parent, label.level, label.confidence)
            for label in nudenet_labels(detections)] == expected


@pytest.mark.parametrize(("detections", "poster_blurred", "decision"), [
    # NudeNet reports down to 0.2: a 0.25 guess is below every threshold of ours.
    ([[_det("FEMALE_GENITALIA_EXPOSED", 0.25)]], False, "APPROVED"),
    ([[_det("FEMALE_GENITALIA_EXPOSED", 0.92)]], True, "APPROVED"),  # allowed, but no listing poster
    ([[_det("FEMALE_GENITALIA_EXPOSED", 0.92)], [_det("FEMALE_BREAST_COVERED", 0.9)]], False, "APPROVED"),
])
def test_thresholds_on_nudenet_outputs(detections: list[list[dict[str, object]]], poster_blurred: bool,
                                       decision: str) -> None:
    policy = load_policy()
    frames = [nudenet_labels(frame) for frame in detections]
    choice = choose_poster(policy, frames, 0)
    assert choice.blur == poster_blurred
    assert choice.index == (1 if len(frames) > 1 else 0)
    assert decide(policy, Evidence(merge_frames(frames), len(frames), None)).decision == decision
