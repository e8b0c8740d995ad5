"""The production backend: AWS Rekognition's image API on each sampled frame.

Per frame: `detect_moderation_labels` (labels in the model-7 taxonomy) and `detect_faces` with
AGE_RANGE (the minor rule). Throttling and transient service errors are retried here with
exponential backoff up to `max_attempts` (botocore's own retries are off, so this is the one bound).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, ConnectionError as BotoConnectionError

from common.settings import Settings
from processors.moderation.backends import FrameResult, TransientBackendError
from processors.moderation.taxonomy import PARENT, Label
from processors.transcode.pipeline import retry_delay_s

MAX_IMAGE_BYTES = 5 * 1024 * 1024  # Image.Bytes limit of the image API
RETRYABLE_CODES = frozenset({
    "ThrottlingException", "ProvisionedThroughputExceededException", "LimitExceededException",
    "InternalServerError", "ServiceUnavailableException", "ServiceUnavailable", "RequestTimeout"})


def rekognition_client(settings: Settings) -> Any:
    return boto3.client("rekognition", region_name=settings.moderation_aws_region,
                        config=Config(retries={"max_attempts": 1, "mode": "standard"}, connect_timeout=5,
                                      read_timeout=30))


def labels_from_response(response: dict[str, Any]) -> list[Label]:
    """DetectModerationLabels' ModerationLabels -> taxonomy labels (ParentName "" is level 1)."""
    return [Label(item["Name"], float(item["Confidence"]), item.get("ParentName") or PARENT.get(item["Name"]),
                  int(item.get("TaxonomyLevel") or 1))
            for item in response.get("ModerationLabels", [])]


def face_age_lows(response: dict[str, Any]) -> tuple[int, ...]:
    return tuple(int(face["AgeRange"]["Low"]) for face in response.get("FaceDetails", []) if "AgeRange" in face)


class RekognitionBackend:
    name = "rekognition"
    coverage = frozenset(PARENT)  # the whole taxonomy
    estimates_age = True

    def __init__(self, client: Any, min_confidence: float, max_attempts: int = 5, retry_base_s: float = 1.0,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.client = client
        self.min_confidence = min_confidence
        self.max_attempts = max_attempts
        self.retry_base_s = retry_base_s
        self.sleep = sleep
        self.model_version = "unknown"  # until the first answer says which model ran

    def _call(self, operation: str, **params: Any) -> dict[str, Any]:
        for attempt in range(1, self.max_attempts + 1):
            try:
                response: dict[str, Any] = getattr(self.client, operation)(**params)
                return response
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code", "")
                if code not in RETRYABLE_CODES:
                    raise
                problem: Exception = exc
            except (BotoConnectionError, BotoCoreError) as exc:
                problem = exc
            if attempt == self.max_attempts:
                raise TransientBackendError(f"{operation} failed {attempt} times: {problem}") from problem
            self.sleep(retry_delay_s(attempt, self.retry_base_s, cap_s=20.0))
        raise AssertionError("unreachable: max_attempts >= 1")

    def analyze(self, frame: Path) -> FrameResult:
        data = frame.read_bytes()
        if len(data) > MAX_IMAGE_BYTES:
            raise ValueError(f"{frame.name} has {len(data)} bytes, over Rekognition's 5 MB image limit")
        labels = self._call("detect_moderation_labels", Image={"Bytes": data}, MinConfidence=self.min_confidence)
        self.model_version = labels.get("ModerationModelVersion") or self.model_version
        faces = self._call("detect_faces", Image={"Bytes": data}, Attributes=["AGE_RANGE"])
        return FrameResult(tuple(labels_from_response(labels)), face_age_lows(faces))
