"""Moderation end to end on the real stack: upload through the API -> transcode worker -> moderation
worker (the local model, the default policy) -> VideoPublished on Kafka and a ladder that anyone can
fetch over HTTP from {CDN_BASE}; redelivery; the review path and a human approval (premium)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx
import m3u8
import pytest
from confluent_kafka import Producer

from common.settings import Settings
from infra.s3.buckets import s3_client
from infra.s3.layout import ladder_prefix, new_video_id
from infra.s3.uploads import UploadManifest, write_manifest
from processors.moderation.backends.local import LocalBackend
from processors.moderation.moderate import Moderator
from processors.moderation.policy import parse_policy
from processors.moderation.review import ReviewConflict, human_decision
from schemas.codec import encode
from schemas.topics import TOPIC_BY_SCHEMA
from tests.helpers import age_headers, records_on, running_service
from tests.integration.test_moderation_rejected import moderation_worker, short_clip, transcoder_settings
from tests.integration.test_transcode_worker import _upload

pytestmark = pytest.mark.integration
TOPIC = {schema: spec.name for schema, spec in TOPIC_BY_SCHEMA.items()}


@pytest.fixture(scope="module")
def workers(stack: Settings) -> Iterator[Settings]:
    transcode = transcoder_settings(stack)
    with running_service(transcode, "transcode", transcode.transcode_web_port), moderation_worker(stack) as settings:
        yield settings


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return short_clip(tmp_path_factory.mktemp("clips") / "clip.mp4")


@pytest.fixture(scope="module")
def published(workers: Settings, ingest_api: str, clip: Path) -> dict[str, Any]:
    video_id = _upload(ingest_api, workers, clip.read_bytes())
    [(event, _)] = records_on(workers.kafka_bootstrap, TOPIC["VideoPublished"], _for(video_id), timeout_s=150)
    return event


def _for(video_id: str) -> Any:
    return lambda record: record["video_id"] == video_id


def test_an_upload_is_transcoded_moderated_and_published(workers: Settings, published: dict[str, Any],
                                                         ingest_api: str) -> None:
    video_id = published["video_id"]
    base = workers.public_base_url
    assert published["video_url"] == f"{base}/videos/{video_id}/master.m3u8"
    assert published["thumbnail"] == f"{base}/videos/{video_id}/thumb.jpg"
    assert published["title"] == "Test clip" and published["uploader_id"] == "uploader"
    assert published["premium"] is False
    [(decided, _)] = records_on(workers.kafka_bootstrap, TOPIC["ModerationDecided"], _for(video_id))
    assert decided["decision"] == "APPROVED" and decided["provider"] == "nudenet"
    assert decided["model_version"].startswith("nudenet-3.4")
    assert decided["policy_version"] == "adult-2026.12-1"
    assert decided["frames_checked"] >= 4  # the poster and one per second of a 4 s clip
    assert {"Violence", "Hate Symbols", "Apparent Age"} <= set(decided["not_checked"])
    assert decided["labels"] == [] and decided["reasons"] == []

    # Everything a player needs, anonymously over HTTP from the CDN base.
    with httpx.Client(timeout=10) as anonymous:
        master = anonymous.get(published["video_url"])
        assert master.status_code == 200, master.text
        variants = m3u8.loads(master.text).playlists
        assert [v.stream_info.resolution for v in variants] == [(640, 360), (1280, 720)]
        for variant in variants:
            url = urljoin(published["video_url"], variant.uri)
            playlist = anonymous.get(url)
            assert playlist.status_code == 200, url
            for segment in m3u8.loads(playlist.text).segments:
                got = anonymous.get(urljoin(url, segment.uri))
                assert got.status_code == 200 and got.content[:1] == b"\x47"  # MPEG-TS sync byte
        poster = anonymous.get(published["thumbnail"])
        assert poster.status_code == 200 and poster.content[:2] == b"\xff\xd8"
        assert poster.headers["content-type"] == "image/jpeg"
        # The decision record and the staging ladder stay private.
        staging = f"{workers.s3_endpoint}/{workers.s3_staging_bucket}/{ladder_prefix(video_id)}master.m3u8"
        assert anonymous.get(staging).status_code == 403
        record = f"{workers.s3_endpoint}/{workers.s3_staging_bucket}/moderation/{video_id}.json"
        assert anonymous.get(record).status_code == 403

        # The catalog says so too, to anyone past the age gate (the API folds the same events).
        deadline = time.monotonic() + 30
        while (video := anonymous.get(f"{ingest_api}/v1/videos/{video_id}",
                                      headers=age_headers(workers))).status_code != 200:
            assert time.monotonic() < deadline, video.text
            time.sleep(0.3)
        body = video.json()
        assert body["state"] == "published" and body["video_url"] == published["video_url"]
        assert body["thumbnail"] == published["thumbnail"] and body["uploader_id"] == "uploader"


def test_a_redelivered_ladder_is_announced_again_never_decided_again(workers: Settings,
                                                                      published: dict[str, Any]) -> None:
    video_id = published["video_id"]
    [(transcoded, _)] = records_on(workers.kafka_bootstrap, TOPIC["VideoTranscoded"], _for(video_id))
    producer = Producer({"bootstrap.servers": workers.kafka_bootstrap})
    producer.produce(TOPIC["VideoTranscoded"], encode("VideoTranscoded", transcoded), video_id.encode())
    producer.flush(10)
    decisions = records_on(workers.kafka_bootstrap, TOPIC["ModerationDecided"], _for(video_id), count=2,
                           timeout_s=60)
    assert decisions[0][0] == decisions[1][0]  # the same event, event_id and all: downstream counts it once
    publications = records_on(workers.kafka_bootstrap, TOPIC["VideoPublished"], _for(video_id), count=2)
    assert publications[0][0]["event_id"] == publications[1][0]["event_id"] == published["event_id"]


def _clone(s3: Any, bucket: str, transcoded: dict[str, Any], video_id: str) -> dict[str, Any]:
    """The ladder of `transcoded` copied to a new video id (its playlists are relative)."""
    source = transcoded["video_id"]
    listing = s3.list_objects_v2(Bucket=bucket, Prefix=ladder_prefix(source))["Contents"]
    for item in listing:
        s3.copy_object(Bucket=bucket, Key=item["Key"].replace(source, video_id),
                       CopySource={"Bucket": bucket, "Key": item["Key"]})
    moved = {key: value.replace(source, video_id) if isinstance(value, str) else value
             for key, value in transcoded.items()}
    moved["renditions"] = [dict(r, playlist_key=r["playlist_key"].replace(source, video_id))
                           for r in transcoded["renditions"]]
    return dict(moved, event_id=uuid.uuid4())


def test_review_then_a_human_approval_publishes_a_premium_video(workers: Settings,
                                                                published: dict[str, Any]) -> None:
    s3 = s3_client(workers)
    [(transcoded, _)] = records_on(workers.kafka_bootstrap, TOPIC["VideoTranscoded"], _for(published["video_id"]))
    video_id = new_video_id()
    event = _clone(s3, workers.s3_staging_bucket, transcoded, video_id)
    write_manifest(s3, workers.s3_uploads_bucket, UploadManifest(video_id, "u7", "Premium clip", "video/mp4", 1,
                                                                 True, [], "2026-01-01T00:00:00+00:00"))
    # A policy that sends whatever the backend cannot see to a human.
    policy = parse_policy({"version": "review-blind-spots", "unchecked": {"default": "review"}})
    moderator = Moderator(workers, s3, LocalBackend(), policy)

    events = moderator.run(event)
    assert [schema for schema, _ in events] == ["ModerationDecided", "ModerationReviewRequested"]
    decided, request = events[0][1], events[1][1]
    assert decided["decision"] == "NEEDS_REVIEW" and any("not checked" in r for r in decided["reasons"])
    assert request["decision_event_id"] == decided["event_id"] and request["priority"] == "NORMAL"
    assert moderator.run(event) == events  # redelivery: the same decision, the same ids
    assert s3.list_objects_v2(Bucket=workers.s3_public_bucket, Prefix=f"premium/videos/{video_id}/")["KeyCount"] == 0

    approved = human_decision(moderator, video_id, approve=True, reviewer_id="mod-1", reason="looked at it")
    assert [schema for schema, _ in approved] == ["ModerationDecided", "VideoPublished"]
    human, publication = approved[0][1], approved[1][1]
    assert human["provider"] == "human" and human["reviewer_id"] == "mod-1" and human["decision"] == "APPROVED"
    assert publication["premium"] is True
    assert publication["video_url"] == f"{workers.public_base_url}/premium/videos/{video_id}/master.m3u8"
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=workers.s3_public_bucket,
                                                  Prefix=f"premium/videos/{video_id}/")["Contents"]]
    assert f"premium/videos/{video_id}/master.m3u8" in keys and f"premium/videos/{video_id}/thumb.jpg" in keys
    assert s3.list_objects_v2(Bucket=workers.s3_public_bucket, Prefix=f"videos/{video_id}/")["KeyCount"] == 0
    # The same approval again changes nothing; the opposite one is refused; redelivery keeps the human's word.
    assert human_decision(moderator, video_id, approve=True, reviewer_id="mod-1") == approved
    with pytest.raises(ReviewConflict, match="already APPROVED"):
        human_decision(moderator, video_id, approve=False, reviewer_id="mod-2")
    assert moderator.run(dict(event, event_id=uuid.uuid4())) == approved
