"""A video the policy rejects is never published: no VideoPublished, nothing of it anonymously
readable. The moderation worker runs with a policy file made for the test (LUSTRAX_MODERATION_POLICY)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from common.process import free_port
from common.settings import Settings
from infra.s3.buckets import s3_client
from infra.s3.layout import ladder_prefix, public_prefix
from processors.transcode.ffmpeg.binary import ffmpeg_binary
from schemas.topics import TOPIC_BY_SCHEMA
from tests.helpers import records_on, running_service
from tests.integration.test_transcode_worker import _upload

pytestmark = pytest.mark.integration
REJECT_BLIND_SPOTS = "version: test-reject-1\nunchecked: {default: reject}\n"


def transcoder_settings(stack: Settings) -> Settings:
    return stack.model_copy(update={"transcode_web_port": free_port(), "transcode_preset": "ultrafast"})


@contextmanager
def moderation_worker(stack: Settings, policy: Path | None = None) -> Iterator[Settings]:
    """`lustrax worker moderation` as its own process (a frame a second: short clips)."""
    settings = stack.model_copy(update={"moderation_web_port": free_port(), "moderation_policy": policy,
                                        "moderation_sample_interval_s": 1.0})
    with running_service(settings, "moderation", settings.moderation_web_port):
        yield settings


def short_clip(path: Path) -> Path:
    subprocess.run([ffmpeg_binary(), "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=25", "-f",
                    "lavfi", "-i", "sine=frequency=440", "-t", "4", "-pix_fmt", "yuv420p", "-c:v", "libx264",
                    "-preset", "ultrafast", "-c:a", "aac", "-shortest", str(path)], check=True)
    return path


@pytest.fixture(scope="module")
def rejecting(stack: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    policy = tmp_path_factory.mktemp("policy") / "reject.yaml"
    policy.write_text(REJECT_BLIND_SPOTS)
    transcode = transcoder_settings(stack)
    with running_service(transcode, "transcode", transcode.transcode_web_port), \
            moderation_worker(stack, policy) as settings:
        yield settings


def _for(video_id: str) -> Any:
    return lambda record: record["video_id"] == video_id


def test_a_rejected_video_is_never_published(rejecting: Settings, ingest_api: str,
                                             tmp_path: Path) -> None:
    video_id = _upload(ingest_api, rejecting, short_clip(tmp_path / "clip.mp4").read_bytes())
    [(decided, _)] = records_on(rejecting.kafka_bootstrap, TOPIC_BY_SCHEMA["ModerationDecided"].name,
                                _for(video_id), timeout_s=150)
    assert decided["decision"] == "REJECTED" and decided["policy_version"] == "test-reject-1"
    assert "Violence not checked by this backend -> reject" in decided["reasons"]
    with pytest.raises(AssertionError):
        records_on(rejecting.kafka_bootstrap, TOPIC_BY_SCHEMA["VideoPublished"].name, _for(video_id), timeout_s=3)

    s3 = s3_client(rejecting)
    for premium in (False, True):
        listing = s3.list_objects_v2(Bucket=rejecting.s3_public_bucket, Prefix=public_prefix(video_id, premium))
        assert listing["KeyCount"] == 0
    staged = [o["Key"] for o in s3.list_objects_v2(Bucket=rejecting.s3_staging_bucket,
                                                    Prefix=ladder_prefix(video_id))["Contents"]]
    assert staged  # kept in private staging (for an appeal), but no URL reaches it
    with httpx.Client(timeout=10) as anonymous:
        for key in staged:
            relative = key.removeprefix(ladder_prefix(video_id))
            assert anonymous.get(f"{rejecting.public_base_url}/videos/{video_id}/{relative}").status_code != 200
            assert anonymous.get(f"{rejecting.s3_endpoint}/{rejecting.s3_staging_bucket}/{key}").status_code == 403
