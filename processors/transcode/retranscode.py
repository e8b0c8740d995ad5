"""`lustrax retranscode ID`: run one video through the transcoder again."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from botocore.exceptions import ClientError
from confluent_kafka import Producer

from infra.s3.buckets import s3_client
from common.errors import LustraxError
from common.settings import Settings
from processors.transcode.pipeline import TranscodePipeline
from infra.kafka.producer import producer_config
from producers.uploads import VIDEO_ID_PATTERN, read_manifest, source_key
from schemas.codec import encode
from schemas.topics import TOPIC_BY_SCHEMA


def retranscode(settings: Settings, video_id: str) -> str:
    """Forget the finished ladder and announce the upload again; returns the new event's id."""
    if not VIDEO_ID_PATTERN.match(video_id):
        raise LustraxError(f"{video_id!r} is not a video id")
    s3 = s3_client(settings)
    try:
        manifest = read_manifest(s3, settings.s3_uploads_bucket, video_id)
    except ClientError as exc:
        raise LustraxError(f"cannot read the upload of {video_id}: {exc}") from None
    if manifest is None:
        raise LustraxError(f"no upload with video id {video_id}")
    TranscodePipeline(settings, s3).forget(video_id)
    record = {
        "event_id": uuid.uuid4(), "occurred_at": datetime.now(UTC), "producer": "lustrax-cli", "schema_version": 1,
        "video_id": video_id, "uploader_id": manifest.uploader_id, "title": manifest.title,
        "content_type": manifest.content_type, "size_bytes": manifest.size_bytes,
        "source_bucket": settings.s3_uploads_bucket, "source_key": source_key(video_id),
        "premium": manifest.premium, "tags": manifest.tags,
    }
    producer = Producer(producer_config(settings.kafka_bootstrap, 10000))
    errors: list[str] = []
    producer.produce(TOPIC_BY_SCHEMA["VideoUploaded"].name, encode("VideoUploaded", record), video_id.encode(),
                     on_delivery=lambda err, _msg: errors.append(err.str()) if err else None)
    if producer.flush(15) or errors:
        raise LustraxError(f"the broker did not acknowledge the re-run of {video_id}: {errors or 'timeout'}")
    return str(record["event_id"])
