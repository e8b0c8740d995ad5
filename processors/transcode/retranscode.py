"""`lustrax retranscode ID`: run one video through the transcoder again."""

from __future__ import annotations

from botocore.exceptions import ClientError

from common.errors import LustraxError
from common.settings import Settings
from infra.kafka.producer import OutgoingMessage, produce_acknowledged
from infra.s3.buckets import s3_client
from infra.s3.layout import is_video_id
from infra.s3.uploads import read_manifest, uploaded_record
from processors.transcode.pipeline import TranscodePipeline
from schemas.codec import encode
from schemas.topics import TOPIC_BY_SCHEMA

PRODUCER_NAME = "lustrax-cli"


def retranscode(settings: Settings, video_id: str) -> str:
    """Forget the finished ladder and announce the upload again; returns the new event's id."""
    if not is_video_id(video_id):
        raise LustraxError(f"{video_id!r} is not a video id")
    s3 = s3_client(settings)
    try:
        manifest = read_manifest(s3, settings.s3_uploads_bucket, video_id)
    except ClientError as exc:
        raise LustraxError(f"cannot read the upload of {video_id}: {exc}") from None
    if manifest is None:
        raise LustraxError(f"no upload with video id {video_id}")
    TranscodePipeline(settings, s3).forget(video_id)
    record = uploaded_record(manifest, settings.s3_uploads_bucket, PRODUCER_NAME)
    topic = TOPIC_BY_SCHEMA["VideoUploaded"].name
    message = OutgoingMessage(topic, video_id.encode(), encode("VideoUploaded", record))
    produce_acknowledged(settings.kafka_bootstrap, [message])
    return str(record["event_id"])
