"""The Rekognition backend through botocore's Stubber: every request is checked against the
service model, the responses are shaped like real DetectModerationLabels / DetectFaces outputs."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.stub import Stubber

from common.errors import ConfigError
from common.settings import load_settings
from processors.moderation.backends import TransientBackendError, create_backend
from processors.moderation.backends.local import LocalBackend
from processors.moderation.backends.rekognition import RekognitionBackend
from processors.moderation.moderate import evidence_of
from processors.moderation.policy import decide, load_policy
from processors.transcode.ffmpeg.binary import ffmpeg_binary
from tests.helpers import stubbed


@pytest.fixture(scope="module")
def frame(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("frames") / "frame.jpg"
    subprocess.run([ffmpeg_binary(), "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=640x360", "-frames:v", "1",
                    str(path)], check=True)
    return path


@pytest.fixture
def client() -> Iterator[tuple[Any, Stubber]]:
    with stubbed("rekognition", "eu-west-1") as answered:
        yield answered


def _labels(*labels: tuple[str, str, int, float]) -> dict[str, Any]:
    return {
        "ModerationLabels": [{"Confidence": confidence, "Name": name, "ParentName": parent, "TaxonomyLevel": level}
                             for name, parent, level, confidence in labels],
        "ModerationModelVersion": "7.0",
        "ContentTypes": [],
    }


def _faces(*age_ranges: tuple[int, int]) -> dict[str, Any]:
    return {"FaceDetails": [{
        "BoundingBox": {"Width": 0.2, "Height": 0.3, "Left": 0.4, "Top": 0.1},
        "AgeRange": {"Low": low, "High": high},
        "Confidence": 99.9,
    } for low, high in age_ranges]}


def _expect(stubber: Stubber, data: bytes, labels: dict[str, Any], faces: dict[str, Any]) -> None:
    stubber.add_response("detect_moderation_labels", labels, {"Image": {"Bytes": data}, "MinConfidence": 40.0})
    stubber.add_response("detect_faces", faces, {"Image": {"Bytes": data}, "Attributes": ["AGE_RANGE"]})


def test_labels_come_back_in_the_taxonomy_with_the_model_version(client: tuple[Any, Stubber], frame: Path) -> None:
    rekognition, stubber = client
    _expect(stubber, frame.read_bytes(), _labels(("Explicit", "", 1, 98.2), ("Explicit Nudity", "Explicit", 2, 98.2),
                                                 ("Exposed Female Genitalia", "Explicit Nudity", 3, 97.0)),
            _faces((26, 34)))
    backend = RekognitionBackend(rekognition, 40.0)
    result = backend.analyze(frame)
    assert backend.model_version == "7.0"
    assert [(label.name, label.parent, label.level) for label in result.labels] == [
        ("Explicit", None, 1), ("Explicit Nudity", "Explicit", 2), ("Exposed Female Genitalia", "Explicit Nudity", 3)]
    assert result.face_age_lows == (26,)
    evidence, _ = evidence_of([result], backend)
    assert evidence.not_checked == []  # Rekognition sees every category, and ages
    assert decide(load_policy(), evidence).decision == "APPROVED"


def test_a_face_that_may_be_a_minor_sends_the_video_to_review(client: tuple[Any, Stubber], frame: Path) -> None:
    rekognition, stubber = client
    data = frame.read_bytes()
    _expect(stubber, data, _labels(), _faces((29, 37)))
    _expect(stubber, data, _labels(("Explicit", "", 1, 90.0)), _faces((30, 38), (15, 21)))
    backend = RekognitionBackend(rekognition, 40.0)
    evidence, counts = evidence_of([backend.analyze(frame), backend.analyze(frame)], backend)
    assert sorted(evidence.face_age_lows or ()) == [15, 29, 30]
    assert counts["Explicit"] == 1
    decision = decide(load_policy(), evidence, minor_age=18)
    assert decision.decision == "NEEDS_REVIEW" and decision.apparent_minor
    assert decide(load_policy(), evidence, minor_age=14).decision == "APPROVED"


def test_throttling_is_retried_with_backoff(client: tuple[Any, Stubber], frame: Path) -> None:
    rekognition, stubber = client
    data = frame.read_bytes()
    stubber.add_client_error("detect_moderation_labels", "ThrottlingException", "Rate exceeded", 400)
    stubber.add_client_error("detect_moderation_labels", "ProvisionedThroughputExceededException", "slow down", 400)
    _expect(stubber, data, _labels(("Violence", "", 1, 88.0), ("Graphic Violence", "Violence", 2, 88.0)), _faces())
    delays: list[float] = []
    backend = RekognitionBackend(rekognition, 40.0, max_attempts=4, retry_base_s=1.0, sleep=delays.append)
    result = backend.analyze(frame)
    assert [label.name for label in result.labels] == ["Violence", "Graphic Violence"]
    assert len(delays) == 2 and delays[1] > delays[0] > 0  # exponential


def test_retries_are_bounded(client: tuple[Any, Stubber], frame: Path) -> None:
    rekognition, stubber = client
    stubber.add_response("detect_moderation_labels", _labels(), {"Image": {"Bytes": frame.read_bytes()},
                                                                  "MinConfidence": 40.0})
    for _ in range(3):
        stubber.add_client_error("detect_faces", "ThrottlingException", "Rate exceeded", 400)
    backend = RekognitionBackend(rekognition, 40.0, max_attempts=3, sleep=lambda _: None)
    with pytest.raises(TransientBackendError, match="detect_faces failed 3 times"):
        backend.analyze(frame)


def test_a_client_error_that_will_not_pass_is_not_retried(client: tuple[Any, Stubber], frame: Path) -> None:
    rekognition, stubber = client
    stubber.add_client_error("detect_moderation_labels", "InvalidImageFormatException", "bad image", 400)
    backend = RekognitionBackend(rekognition, 40.0, sleep=lambda _: pytest.fail("must not retry"))
    with pytest.raises(Exception, match="InvalidImageFormatException"):
        backend.analyze(frame)


def test_an_image_over_5_mb_is_refused_before_any_call(client: tuple[Any, Stubber], tmp_path: Path) -> None:
    rekognition, _ = client
    big = tmp_path / "big.jpg"
    big.write_bytes(b"\xff\xd8" + b"\x00" * (5 * 1024 * 1024))
    with pytest.raises(ValueError, match="5 MB"):
        RekognitionBackend(rekognition, 40.0).analyze(big)


def test_the_settings_choose_the_backend(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path, moderation_backend="rekognition", moderation_aws_region="eu-central-1",
                             moderation_min_confidence=55)
    backend = create_backend(settings)
    assert isinstance(backend, RekognitionBackend)
    assert backend.client.meta.region_name == "eu-central-1" and backend.min_confidence == 55
    assert isinstance(create_backend(load_settings(home=tmp_path)), LocalBackend)
    with pytest.raises(ConfigError, match="LUSTRAX_MODERATION_BACKEND"):
        load_settings(home=tmp_path, moderation_backend="opennsfw")
    with pytest.raises(ConfigError, match="LUSTRAX_MODERATION_MINOR_AGE"):
        load_settings(home=tmp_path, moderation_minor_age=0)
