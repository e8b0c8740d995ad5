"""Avro records -> ClickHouse rows (pure). One table per event record; column names are a contract
with the migrations in infra/clickhouse/migrations/."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from catalog.cases import TRUST_SCHEMAS

ENVELOPE = ("event_id", "occurred_at", "producer")


@dataclass(frozen=True)
class TableMapping:
    table: str
    columns: tuple[str, ...]
    row: Callable[[dict[str, Any]], list[Any]]


def _fields(*names: str) -> Callable[[dict[str, Any]], list[Any]]:
    columns = ENVELOPE + names
    return lambda record: [record[name] for name in columns]


def _transcode_row(record: dict[str, Any]) -> list[Any]:
    return [record["event_id"], record["occurred_at"], record["producer"], record["video_id"],
            record["duration_ms"], record["source_width"], record["source_height"], record["total_bytes"],
            [r["name"] for r in record["renditions"]], record["master_playlist_key"]]


def _moderation_row(record: dict[str, Any]) -> list[Any]:
    return [record["event_id"], record["occurred_at"], record["producer"], record["video_id"], record["decision"],
            record["provider"], [label["name"] for label in record["labels"]], record["reason"]]


def _trust_row(schema: str) -> Callable[[dict[str, Any]], list[Any]]:
    """Trust-and-safety events share one audit table: what every query filters by, then the whole
    event as JSON (the legal record: nothing of it is left out)."""

    def row(record: dict[str, Any]) -> list[Any]:
        case_id = record.get("case_id") or record.get("notice_id") or record.get("complaint_id") or ""
        payload = {k: v for k, v in record.items() if k not in ENVELOPE}
        return [record["event_id"], record["occurred_at"], record["producer"], record["video_id"], schema, case_id,
                record.get("uploader_id"), json.dumps(payload, default=str, ensure_ascii=False, sort_keys=True)]

    return row


TRUST_COLUMNS = ("video_id", "event_type", "case_id", "uploader_id", "payload")


def _mapping(table: str, names: tuple[str, ...],
             row: Callable[[dict[str, Any]], list[Any]] | None = None) -> TableMapping:
    return TableMapping(table, ENVELOPE + names, row or _fields(*names))


TABLE_OF_SCHEMA: dict[str, TableMapping] = {
    "VideoUploaded": _mapping("uploads", ("video_id", "uploader_id", "title", "content_type", "size_bytes",
                                          "premium", "tags")),
    "VideoView": _mapping("views", ("video_id", "user_id", "session_id")),
    "VideoLike": _mapping("likes", ("video_id", "user_id", "action")),
    "WatchTick": _mapping("watch_ticks", ("video_id", "user_id", "session_id", "position_ms", "duration_ms")),
    "VideoTranscoded": _mapping("transcodes", ("video_id", "duration_ms", "source_width", "source_height",
                                               "total_bytes", "renditions", "master_playlist_key"), _transcode_row),
    "TranscodeFailed": _mapping("transcode_failures", ("video_id", "reason", "retryable", "attempt")),
    "ModerationDecided": _mapping("moderation_decisions", ("video_id", "decision", "provider", "labels", "reason"),
                                  _moderation_row),
    "ModerationReviewRequested": _mapping("review_queue", ("video_id", "decision_event_id", "master_playlist_key",
                                                           "premium", "priority", "reasons", "not_checked")),
    "VideoPublished": _mapping("publications", ("video_id", "title", "uploader_id", "video_url", "thumbnail",
                                                "premium", "published_at")),
    "HeatScoreUpdated": _mapping("heat_scores", ("video_id", "window", "window_end", "score", "views",
                                                 "unique_viewers", "net_likes", "completion_rate", "rewatch_rate",
                                                 "avg_watched_fraction")),
    **{schema: TableMapping("trust_events", ENVELOPE + TRUST_COLUMNS, _trust_row(schema)) for schema in TRUST_SCHEMAS},
}

MAPPING_BY_TABLE: dict[str, TableMapping] = {mapping.table: mapping for mapping in TABLE_OF_SCHEMA.values()}
