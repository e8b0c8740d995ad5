"""The transcode worker end to end on the real stack: upload through the API -> VideoTranscoded on
Kafka -> a playable, private ladder in the S3 staging bucket; failures, retries, dead letters."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import av
import httpx
import imageio_ffmpeg
import m3u8
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from infra.s3.buckets import s3_client
from infra.s3.layout import new_video_id, source_key
from common.process import free_port
from common.settings import Settings
from processors.transcode.retranscode import retranscode
from common.tokens import issue_token
from schemas.codec import encode
from schemas.topics import DEAD_LETTER_TOPIC, TOPIC_BY_SCHEMA
from tests.helpers import records_on, running_service

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def worker(stack: Settings) -> Iterator[Settings]:
    """`lustrax worker transcode` as its own process, fast settings for tests."""
    settings = stack.model_copy(update={"transcode_web_port": free_port(), "transcode_preset": "ultrafast",
                                        "transcode_retry_base_s": 0.2, "transcode_max_attempts": 2})
    with running_service(settings, "transcode", settings.transcode_web_port):
        yield settings


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("clips") / "landscape.mp4"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i",
                    "testsrc2=size=1920x1080:rate=30", "-f", "lavfi", "-i", "sine=frequency=440", "-t", "6",
                    "-pix_fmt", "yuv420p", "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", "-shortest",
                    str(path)], check=True)
    return path


def _upload(api: str, settings: Settings, data: bytes, user: str = "uploader", replace_with: bytes | None = None
            ) -> str:
    """Upload and complete; with `replace_with`, PUT those bytes (same length) again once complete."""
    headers = {"Authorization": f"Bearer {issue_token(settings.jwt_signing_secret, user)}"}
    with httpx.Client(base_url=api, headers=headers, timeout=30) as client:
        ticket = client.post("/v1/uploads", json={"title": "Test clip", "content_type": "video/mp4",
                                                  "size_bytes": len(data)}).json()
        assert httpx.put(ticket["upload_url"], content=data, headers=ticket["upload_headers"]).status_code == 200
        assert client.post(f"/v1/uploads/{ticket['video_id']}/complete").status_code == 202
        if replace_with is not None:
            assert httpx.put(ticket["upload_url"], content=replace_with,
                             headers=ticket["upload_headers"]).status_code == 200
    return str(ticket["video_id"])


def _for(video_id: str) -> Any:
    return lambda record: record["video_id"] == video_id


def _probe_duration_s(path: Path) -> float:
    with av.open(str(path)) as container:
        return float(container.duration or 0) / 1_000_000


def test_an_upload_becomes_a_playable_private_ladder(worker: Settings, ingest_api: str, clip: Path,
                                                    tmp_path: Path) -> None:
    video_id = _upload(ingest_api, worker, clip.read_bytes())
    [(event, _)] = records_on(worker.kafka_bootstrap, TOPIC_BY_SCHEMA["VideoTranscoded"].name, _for(video_id),
                              timeout_s=120)
    assert event["bucket"] == worker.s3_staging_bucket and event["prefix"] == f"videos/{video_id}/"
    assert event["master_playlist_key"] == f"videos/{video_id}/master.m3u8"
    assert event["poster_key"] == f"videos/{video_id}/thumb.jpg"
    assert [(r["name"], r["height"]) for r in event["renditions"]] == [("360p", 360), ("720p", 720),
                                                                       ("1080p", 1080)]
    assert abs(event["duration_ms"] - 6000) <= 500
    assert (event["source_width"], event["source_height"]) == (1920, 1080)

    # Read the whole ladder back through boto3 and play it from local disk.
    s3 = s3_client(worker)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=event["bucket"], Prefix=event["prefix"])["Contents"]]
    for key in keys:
        target = tmp_path / key.removeprefix(event["prefix"])
        target.parent.mkdir(parents=True, exist_ok=True)
        s3.download_file(event["bucket"], key, str(target))
    master = m3u8.load(str(tmp_path / "master.m3u8"))
    assert len(master.playlists) == 3
    for variant, rendition in zip(master.playlists, event["renditions"], strict=True):
        assert not variant.uri.startswith(("/", "http"))  # relative: survives the copy to the public bucket
        assert variant.stream_info.resolution == (rendition["width"], rendition["height"])
        assert variant.stream_info.bandwidth == rendition["bandwidth"]
        assert "mp4a" in variant.stream_info.codecs and "avc1" in variant.stream_info.codecs
        duration = _probe_duration_s(tmp_path / variant.uri)
        assert abs(duration - 6.0) <= 0.5, (variant.uri, duration)
        with av.open(str(tmp_path / variant.uri)) as container:
            frame = next(container.decode(video=0))
            assert (frame.width, frame.height) == (rendition["width"], rendition["height"])
    assert (tmp_path / "thumb.jpg").read_bytes()[:2] == b"\xff\xd8"
    assert "WEBVTT" in (tmp_path / "storyboard.vtt").read_text()

    # Nothing of it is readable anonymously.
    url = f"{worker.s3_endpoint}/{event['bucket']}/{event['master_playlist_key']}"
    assert httpx.get(url).status_code == 403
    progress = records_on(worker.kafka_bootstrap, TOPIC_BY_SCHEMA["TranscodeProgress"].name,
                          lambda r: r["video_id"] == video_id and r["percent"] >= 100)
    assert progress


def test_a_put_after_completion_changes_nothing_the_transcode_reads(worker: Settings, ingest_api: str,
                                                                    clip: Path) -> None:
    original = clip.read_bytes()
    html = b"<html><script>alert(1)</script></html>".ljust(len(original), b" ")
    video_id = _upload(ingest_api, worker, original, replace_with=html)
    [(event, _)] = records_on(worker.kafka_bootstrap, TOPIC_BY_SCHEMA["VideoTranscoded"].name, _for(video_id),
                              timeout_s=120)
    assert abs(event["duration_ms"] - 6000) <= 500  # transcoded from the checked MP4, not from the HTML
    s3 = s3_client(worker)
    assert s3.get_object(Bucket=worker.s3_uploads_bucket, Key=source_key(video_id))["Body"].read() == original


def test_a_redelivered_upload_is_announced_again_without_a_second_ladder(worker: Settings, ingest_api: str,
                                                                         clip: Path) -> None:
    video_id = _upload(ingest_api, worker, clip.read_bytes())
    topic = TOPIC_BY_SCHEMA["VideoTranscoded"].name
    [(first, _)] = records_on(worker.kafka_bootstrap, topic, _for(video_id), timeout_s=120)
    # Redeliver the very same VideoUploaded (what a crash before the offset commit causes).
    [(upload, _)] = records_on(worker.kafka_bootstrap, TOPIC_BY_SCHEMA["VideoUploaded"].name, _for(video_id))
    producer = Producer({"bootstrap.servers": worker.kafka_bootstrap})
    producer.produce(TOPIC_BY_SCHEMA["VideoUploaded"].name, encode("VideoUploaded", upload), video_id.encode())
    producer.flush(10)
    both = records_on(worker.kafka_bootstrap, topic, _for(video_id), count=2, timeout_s=60)
    assert both[1][0]["event_id"] == first["event_id"]  # same announcement: downstream counts it once

    # An operator's re-run transcodes again and announces a new ladder.
    retranscode(worker, video_id)
    three = records_on(worker.kafka_bootstrap, topic, _for(video_id), count=3, timeout_s=120)
    assert three[2][0]["event_id"] != first["event_id"]
    assert three[2][0]["master_playlist_key"] == first["master_playlist_key"]


def _video_uploaded(video_id: str, bucket: str, key: str) -> dict[str, Any]:
    return {"event_id": uuid.uuid4(), "occurred_at": datetime.now(UTC), "producer": "test", "schema_version": 1,
            "video_id": video_id, "uploader_id": "u", "title": "t", "content_type": "video/mp4",
            "size_bytes": 10, "source_bucket": bucket, "source_key": key, "premium": False, "tags": []}


def test_a_file_that_is_not_video_fails_at_once(worker: Settings, ingest_api: str) -> None:
    fake = b"\x00\x00\x00\x18ftypisom" + uuid.uuid4().bytes * 200  # passes the magic-byte check only
    video_id = _upload(ingest_api, worker, fake)
    [(failed, _)] = records_on(worker.kafka_bootstrap, TOPIC_BY_SCHEMA["TranscodeFailed"].name, _for(video_id),
                               timeout_s=60)
    assert failed["retryable"] is False and failed["attempt"] == 1
    s3 = s3_client(worker)
    assert s3.list_objects_v2(Bucket=worker.s3_staging_bucket, Prefix=f"videos/{video_id}/").get("KeyCount") == 0


def test_a_missing_source_fails_at_once(worker: Settings) -> None:
    video_id = new_video_id()
    record = _video_uploaded(video_id, worker.s3_uploads_bucket, f"sources/{video_id}")
    producer = Producer({"bootstrap.servers": worker.kafka_bootstrap})
    producer.produce(TOPIC_BY_SCHEMA["VideoUploaded"].name, encode("VideoUploaded", record), video_id.encode())
    producer.flush(10)
    [(failed, _)] = records_on(worker.kafka_bootstrap, TOPIC_BY_SCHEMA["TranscodeFailed"].name, _for(video_id),
                               timeout_s=60)
    assert failed["retryable"] is False and failed["attempt"] == 1
    assert "does not exist" in failed["reason"]


def test_an_undecodable_message_goes_to_the_dead_letter_topic_and_the_worker_goes_on(
        worker: Settings, ingest_api: str, clip: Path) -> None:
    marker = uuid.uuid4().bytes
    producer = Producer({"bootstrap.servers": worker.kafka_bootstrap})
    producer.produce(TOPIC_BY_SCHEMA["VideoUploaded"].name, b"not avro " + marker, b"garbage")
    producer.flush(10)
    consumer = Consumer({"bootstrap.servers": worker.kafka_bootstrap, "group.id": f"t-{uuid.uuid4().hex}"})
    partitions = consumer.list_topics(DEAD_LETTER_TOPIC.name, timeout=10).topics[DEAD_LETTER_TOPIC.name].partitions
    consumer.assign([TopicPartition(DEAD_LETTER_TOPIC.name, p, 0) for p in partitions])
    headers: dict[str, bytes] = {}
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and not headers:
            msg = consumer.poll(0.5)
            if msg is not None and not msg.error() and msg.value().endswith(marker):
                headers = dict(msg.headers() or [])
    finally:
        consumer.close()
    assert headers["lustrax-consumer"] == b"transcode"
    assert b"undecodable" in headers["lustrax-reason"]
    assert headers["lustrax-source-topic"] == TOPIC_BY_SCHEMA["VideoUploaded"].name.encode()
    # The stream did not stop: a new upload still gets transcoded.
    video_id = _upload(ingest_api, worker, clip.read_bytes())
    records_on(worker.kafka_bootstrap, TOPIC_BY_SCHEMA["VideoTranscoded"].name, _for(video_id), timeout_s=120)
