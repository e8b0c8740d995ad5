"""What the gateway reads from Kafka: the topics of the records it shows, and nothing it could park."""

from __future__ import annotations

from gateways.ws.fanout import FULL_REPLAY_SCHEMAS, GATEWAY_SCHEMAS, gateway_topics
from gateways.ws.protocol import publications
from schemas.topics import DEAD_LETTER_TOPIC, TOPIC_BY_SCHEMA


def test_the_gateway_reads_every_topic_of_a_record_it_shows_and_no_other() -> None:
    names = {spec.name for spec in gateway_topics()}
    assert names == {TOPIC_BY_SCHEMA[s].name for s in GATEWAY_SCHEMAS if s in TOPIC_BY_SCHEMA}
    assert DEAD_LETTER_TOPIC.name not in names
    assert {"lustrax.video.published", "lustrax.feed.like-updates", "lustrax.video.uploaded",
            "lustrax.video.transcode-progress", "lustrax.video.moderation"} <= names


def test_every_schema_read_is_shown_or_feeds_the_uploader_map() -> None:
    sample = {"video_id": "v", "title": "t", "video_url": "u", "thumbnail": "t", "premium": False,
              "published_at": 0, "like_count": 1, "delta": 1, "percent": 1.0, "duration_ms": 1, "renditions": [],
              "reason": "r", "retryable": False, "attempt": 1, "decision": "APPROVED"}
    for schema in GATEWAY_SCHEMAS:
        assert publications(schema, sample) or schema in FULL_REPLAY_SCHEMAS, schema
