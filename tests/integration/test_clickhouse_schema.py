"""The event store schema (migrations 0002-0004) and the analyst queries, on the real engine.

Every test works in a database of its own (chDB allows one data path per process: isolation is
by database name). Expected values are computed here in Python from the events inserted, with
the definitions of docs/analytics.md, and compared with what the rollups and queries return.
"""

from __future__ import annotations

import re
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from infra.clickhouse.migrate import applied_migrations, load_migrations, migrate

pytestmark = pytest.mark.integration

QUERIES_DIR = Path(__file__).resolve().parents[2] / "infra" / "clickhouse" / "queries"
ENVELOPE = [("event_id", "UUID"), ("occurred_at", "DateTime64(3, 'UTC')"), ("producer", "LowCardinality(String)")]
INGESTED = ("ingested_at", "DateTime64(3, 'UTC')")

# The contract with the sink: table -> its fields between the envelope and ingested_at.
CONTRACT: dict[str, list[tuple[str, str]]] = {
    "uploads": [("video_id", "String"), ("uploader_id", "String"), ("title", "String"),
                ("content_type", "LowCardinality(String)"), ("size_bytes", "UInt64"), ("premium", "Bool"),
                ("tags", "Array(String)")],
    "views": [("video_id", "String"), ("user_id", "String"), ("session_id", "String")],
    # action Enum8('LIKE' = 1, 'UNLIKE' = -1), as system.columns lists it (by value)
    "likes": [("video_id", "String"), ("user_id", "String"), ("action", "Enum8('UNLIKE' = -1, 'LIKE' = 1)")],
    "watch_ticks": [("video_id", "String"), ("user_id", "String"), ("session_id", "String"),
                    ("position_ms", "UInt64"), ("duration_ms", "UInt64")],
    "transcodes": [("video_id", "String"), ("duration_ms", "UInt64"), ("source_width", "UInt32"),
                   ("source_height", "UInt32"), ("total_bytes", "UInt64"),
                   ("renditions", "Array(LowCardinality(String))"), ("master_playlist_key", "String")],
    "transcode_failures": [("video_id", "String"), ("reason", "String"), ("retryable", "Bool"), ("attempt", "UInt32")],
    "moderation_decisions": [("video_id", "String"), ("decision", "LowCardinality(String)"),
                             ("provider", "LowCardinality(String)"), ("labels", "Array(String)"),
                             ("reason", "Nullable(String)")],
    "publications": [("video_id", "String"), ("title", "String"), ("uploader_id", "String"), ("video_url", "String"),
                     ("thumbnail", "String"), ("premium", "Bool"), ("published_at", "DateTime64(3, 'UTC')")],
    "heat_scores": [("video_id", "String"), ("window", "LowCardinality(String)"),
                    ("window_end", "DateTime64(3, 'UTC')"), ("score", "Float64"), ("views", "UInt64"),
                    ("unique_viewers", "UInt64"), ("net_likes", "Int64"), ("completion_rate", "Float64"),
                    ("rewatch_rate", "Float64"), ("avg_watched_fraction", "Float64")],
    "trust_events": [("video_id", "String"), ("event_type", "LowCardinality(String)"), ("case_id", "String"),
                     ("uploader_id", "Nullable(String)"), ("payload", "String")],
}


def _fresh_database() -> str:
    return f"test_{uuid.uuid4().hex[:12]}"


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _insert(client: Any, db: str, table: str, rows: list[dict[str, Any]], token: str | None = None) -> None:
    """Insert like the sink: the contract's columns, never ingested_at, optionally a batch token."""
    names = [name for name, _ in ENVELOPE] + [name for name, _ in CONTRACT[table]]
    settings = {"insert_deduplication_token": token} if token else None
    client.insert(f"`{db}`.{table}", [[row[n] for n in names] for row in rows], column_names=names,
                  settings=settings)


def _envelope(at: datetime, producer: str = "test") -> dict[str, Any]:
    return {"event_id": uuid.uuid4(), "occurred_at": at, "producer": producer}


def _sample(table: str, at: datetime, video_id: str = "v-sample") -> dict[str, Any]:
    fields: dict[str, dict[str, Any]] = {
        "uploads": {"uploader_id": "alice", "title": "t", "content_type": "video/mp4", "size_bytes": 10,
                    "premium": False, "tags": ["a", "b"]},
        "views": {"user_id": "u", "session_id": "s"},
        "likes": {"user_id": "u", "action": "LIKE"},
        "watch_ticks": {"user_id": "u", "session_id": "s", "position_ms": 5000, "duration_ms": 60000},
        "transcodes": {"duration_ms": 60000, "source_width": 1920, "source_height": 1080, "total_bytes": 99,
                       "renditions": ["1080p", "720p"], "master_playlist_key": "videos/v/master.m3u8"},
        "transcode_failures": {"reason": "boom", "retryable": True, "attempt": 1},
        "moderation_decisions": {"decision": "approved", "provider": "local", "labels": [], "reason": None},
        "publications": {"title": "t", "uploader_id": "alice", "video_url": "http://cdn/v/master.m3u8",
                         "thumbnail": "http://cdn/v/thumb.jpg", "premium": False, "published_at": at},
        "heat_scores": {"window": "1h", "window_end": at, "score": 1.5, "views": 3, "unique_viewers": 2,
                        "net_likes": -1, "completion_rate": 0.5, "rewatch_rate": 0.25, "avg_watched_fraction": 0.4},
        "trust_events": {"event_type": "VideoTakenDown", "case_id": "dmca_1", "uploader_id": "alice",
                         "payload": '{"reason": "removed after a DMCA notice"}'},
    }
    return {**_envelope(at), "video_id": video_id, **fields[table]}


def _query_file(name: str, db: str) -> str:
    return (QUERIES_DIR / name).read_text().replace("{db}", db)


def _run_query(client: Any, name: str, db: str, **parameters: Any) -> list[dict[str, Any]]:
    result = client.query(_query_file(name, db), parameters=parameters)
    return [dict(zip(result.column_names, row)) for row in result.result_rows]


# -- schema ------------------------------------------------------------------------------------


def test_migrations_apply_on_a_fresh_database_and_again_idempotently(clickhouse: Any) -> None:
    db = _fresh_database()
    first = migrate(clickhouse, db)
    assert [m.version for m in first] == [m.version for m in load_migrations()]
    assert {2, 3, 4} <= {m.version for m in first}
    assert migrate(clickhouse, db) == []
    assert set(applied_migrations(clickhouse, db)) == {m.version for m in load_migrations()}
    tables = {row[0] for row in clickhouse.query(f"SHOW TABLES FROM `{db}`").result_rows}
    assert set(CONTRACT) | {"video_stats_1m", "video_stats_1h", "heat_scores_latest"} <= tables


def test_the_stack_database_holds_the_event_store(clickhouse: Any, stack: Any) -> None:
    rows = clickhouse.query("SELECT name FROM system.tables WHERE database = {db:String}",
                            parameters={"db": stack.clickhouse_database}).result_rows
    assert set(CONTRACT) <= {name for (name,) in rows}


def test_every_table_has_the_contract_columns(clickhouse: Any) -> None:
    db = _fresh_database()
    migrate(clickhouse, db)
    for table, fields in CONTRACT.items():
        rows = clickhouse.query(
            "SELECT name, type, default_kind FROM system.columns WHERE database = {db:String} AND table = {t:String}"
            " ORDER BY position", parameters={"db": db, "t": table}).result_rows
        assert [(name, kind) for name, kind, _ in rows] == [*ENVELOPE, *fields, INGESTED], table
        assert rows[-1][2] == "DEFAULT", f"{table}.ingested_at has a default (the sink never sends it)"


def test_every_event_table_is_a_replacing_merge_tree_with_insert_deduplication(clickhouse: Any) -> None:
    db = _fresh_database()
    migrate(clickhouse, db)
    rows = clickhouse.query(
        "SELECT name, engine, sorting_key, create_table_query FROM system.tables WHERE database = {db:String}",
        parameters={"db": db}).result_rows
    by_name = {name: (engine, key, ddl) for name, engine, key, ddl in rows}
    for table in CONTRACT:
        engine, key, ddl = by_name[table]
        assert engine == "ReplacingMergeTree", table
        assert key.split(", ")[-1] == "event_id", table
        assert "non_replicated_deduplication_window = 10000" in ddl, table
    for table in ("video_stats_1m", "video_stats_1h", "dead_letters"):
        assert "non_replicated_deduplication_window = 10000" in by_name[table][2], table


# -- duplicates --------------------------------------------------------------------------------


@pytest.mark.parametrize("table", sorted(CONTRACT))
def test_a_duplicate_counts_once_with_final_and_a_retried_batch_is_dropped(clickhouse: Any, table: str) -> None:
    db = _fresh_database()
    migrate(clickhouse, db)
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    batch = [_sample(table, at, "v1"), _sample(table, at + timedelta(seconds=1), "v2")]

    def count(final: str = "") -> int:
        return clickhouse.query(f"SELECT count() FROM `{db}`.{table} {final}").result_rows[0][0]

    _insert(clickhouse, db, table, batch, token=f"{table}/0/0-1")
    _insert(clickhouse, db, table, batch, token=f"{table}/0/0-1")  # the sink retried the batch
    assert count() == 2, "a batch repeated with the same token is dropped at once"

    # The same events again in another batch (another token, one more event): stored, then collapsed.
    later = _sample(table, at + timedelta(seconds=2), "v3")
    _insert(clickhouse, db, table, [*batch, later], token=f"{table}/0/2-4")
    assert count() == 5
    assert count("FINAL") == 3
    assert clickhouse.query(f"SELECT uniqExact(event_id) FROM `{db}`.{table}").result_rows[0][0] == 3
    clickhouse.command(f"OPTIMIZE TABLE `{db}`.{table} FINAL")
    assert count() == 3


def test_a_retried_batch_without_a_token_is_dropped_by_its_hash(clickhouse: Any) -> None:
    db = _fresh_database()
    migrate(clickhouse, db)
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    batch = [_sample("views", at, "v1"), _sample("views", at, "v2")]
    _insert(clickhouse, db, "views", batch)
    _insert(clickhouse, db, "views", batch)
    assert clickhouse.query(f"SELECT count() FROM `{db}`.views").result_rows[0][0] == 2


def test_rollups_drop_a_retried_batch_but_count_a_duplicate_that_slipped_through(clickhouse: Any) -> None:
    db = _fresh_database()
    migrate(clickhouse, db)
    at = datetime.now(UTC).replace(second=10, microsecond=0) - timedelta(minutes=5)
    first = {**_envelope(at), "video_id": "v1", "user_id": "u1", "session_id": "s1"}
    second = {**_envelope(at), "video_id": "v1", "user_id": "u1", "session_id": "s2"}

    def rollup() -> tuple[int, int, int]:
        return clickhouse.query(
            f"SELECT sum(views), uniqMerge(unique_viewers), uniqMerge(view_sessions) FROM `{db}`.video_stats_1m"
        ).result_rows[0]

    _insert(clickhouse, db, "views", [first], token="views/0/0-0")
    _insert(clickhouse, db, "views", [first], token="views/0/0-0")
    assert rollup() == (1, 1, 1), "a retried batch is dropped in the rollups too"
    # A different event that aggregates to the same rollup row as the first one is kept.
    _insert(clickhouse, db, "views", [{**first, "event_id": uuid.uuid4()}], token="views/0/1-1")
    _insert(clickhouse, db, "views", [second], token="views/0/2-2")
    assert rollup() == (3, 1, 2)
    # The first event again, in another batch: the base table collapses it, the rollup sum counts it.
    _insert(clickhouse, db, "views", [first, second], token="views/1/0-1")
    assert rollup() == (5, 1, 2)
    assert clickhouse.query(f"SELECT count() FROM `{db}`.views FINAL").result_rows[0][0] == 3


# -- the synthetic data set ----------------------------------------------------------------------


@dataclass(frozen=True)
class Session:
    video_id: str
    user_id: str
    session_id: str
    start: datetime
    duration_ms: int
    ticks: tuple[tuple[int, int], ...]  # (seconds after start, position_ms)


@dataclass
class Dataset:
    db: str
    h0: datetime  # start of the first hour holding events; the second is h0 + 1 h
    views: list[dict[str, Any]]
    likes: list[dict[str, Any]]
    ticks: list[dict[str, Any]]


def _every_5s(count: int, step_ms: int = 5000, first: int = 1) -> tuple[tuple[int, int], ...]:
    return tuple((5 * i, step_ms * i) for i in range(first, first + count))


def _sessions(h0: datetime) -> list[Session]:
    h1 = h0 + timedelta(hours=1)
    return [
        # v1: u1 watches twice (completes both: the second reaches exactly 90 %), u2 half way,
        # u4 seeks to just under 90 %.
        Session("v1", "u1", "s1", h0 + timedelta(minutes=10, seconds=5), 60000, _every_5s(12)),
        Session("v1", "u2", "s2", h0 + timedelta(minutes=10, seconds=30), 60000, _every_5s(6)),
        Session("v1", "u1", "s3", h1 + timedelta(minutes=10), 60000, (*_every_5s(10), (55, 54000))),
        Session("v1", "u4", "s4", h1 + timedelta(minutes=11), 60000, ((5, 5000), (10, 10000), (15, 53999))),
        # v2: u3 watches twice; the first time pauses (the position stays) and the last tick
        # reports past the duration (capped); u1 opens it and leaves before the first tick.
        Session("v2", "u3", "s5", h0 + timedelta(minutes=11), 30000,
                ((5, 5000), (10, 10000), (15, 15000), (20, 15000), (25, 15000), (30, 20000), (35, 25000),
                 (40, 30000), (45, 31000))),
        Session("v2", "u3", "s6", h1 + timedelta(minutes=10, seconds=40), 30000, _every_5s(2)),
        Session("v2", "u1", "s8", h1 + timedelta(minutes=11, seconds=20), 30000, ()),
        # v3: one session across a minute boundary.
        Session("v3", "u4", "s7", h1 + timedelta(minutes=10, seconds=50), 90000, _every_5s(3)),
    ]


def _likes(h0: datetime) -> list[tuple[str, str, str, datetime]]:
    h1 = h0 + timedelta(hours=1)
    return [
        ("v1", "u1", "LIKE", h0 + timedelta(minutes=10, seconds=20)),
        ("v1", "u2", "LIKE", h0 + timedelta(minutes=11, seconds=5)),
        ("v1", "u2", "UNLIKE", h1 + timedelta(minutes=10, seconds=40)),
        ("v1", "u4", "LIKE", h1 + timedelta(minutes=11, seconds=30)),
        ("v2", "u3", "LIKE", h1 + timedelta(minutes=11, seconds=1)),
        ("v3", "u4", "UNLIKE", h0 + timedelta(minutes=10, seconds=59)),
    ]



def _load_dataset(client: Any) -> Dataset:
    db = _fresh_database()
    migrate(client, db)
    # Two complete hours in the past (recent enough for every TTL).
    h0 = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    views, ticks = [], []
    for s in _sessions(h0):
        views.append({**_envelope(s.start, "ingest-api"), "video_id": s.video_id, "user_id": s.user_id,
                      "session_id": s.session_id})
        for offset_s, position in s.ticks:
            ticks.append({**_envelope(s.start + timedelta(seconds=offset_s), "ingest-api"), "video_id": s.video_id,
                          "user_id": s.user_id, "session_id": s.session_id, "position_ms": position,
                          "duration_ms": s.duration_ms})
    likes = [{**_envelope(at, "ingest-api"), "video_id": v, "user_id": u, "action": action}
             for v, u, action, at in _likes(h0)]
    # In several batches, as the sink writes them.
    for table, rows in (("views", views), ("likes", likes), ("watch_ticks", ticks)):
        for i in range(0, len(rows), 7):
            _insert(client, db, table, rows[i:i + 7], token=f"{table}/0/{i}-{i + 6}")
    return Dataset(db, h0, views, likes, ticks)


@pytest.fixture(scope="module")
def dataset(clickhouse: Any) -> Dataset:
    return _load_dataset(clickhouse)


def _minute(at: datetime) -> datetime:
    return at.replace(second=0, microsecond=0)


def _hour(at: datetime) -> datetime:
    return at.replace(minute=0, second=0, microsecond=0)


def _aggregate(data: Dataset, bucket_of: Callable[[datetime], Any]) -> dict[tuple[str, Any], dict[str, Any]]:
    """The rollup columns per (video, bucket), computed from the events inserted, with the
    definitions of docs/analytics.md; bucket_of returns None for an event outside the window."""
    acc: dict[tuple[str, Any], dict[str, Any]] = defaultdict(lambda: {
        "views": 0, "unique_viewers": set(), "view_sessions": set(), "likes": 0, "unlikes": 0, "ticks": 0,
        "watched_sessions": set(), "completed_sessions": set(), "furthest": {}, "video_duration_ms": 0})

    def slot(event: dict[str, Any]) -> dict[str, Any] | None:
        bucket = bucket_of(event["occurred_at"])
        return None if bucket is None else acc[(event["video_id"], bucket)]

    for v in data.views:
        if (a := slot(v)) is not None:
            a["views"] += 1
            a["unique_viewers"].add(v["user_id"])
            a["view_sessions"].add(v["session_id"])
    for like in data.likes:
        if (a := slot(like)) is not None:
            a["likes" if like["action"] == "LIKE" else "unlikes"] += 1
    for t in data.ticks:
        if (a := slot(t)) is not None:
            a["ticks"] += 1
            a["watched_sessions"].add(t["session_id"])
            if t["duration_ms"] > 0 and t["position_ms"] >= 0.9 * t["duration_ms"]:
                a["completed_sessions"].add(t["session_id"])
            position = min(t["position_ms"], t["duration_ms"]) if t["duration_ms"] > 0 else t["position_ms"]
            a["furthest"][t["session_id"]] = max(a["furthest"].get(t["session_id"], 0), position)
            a["video_duration_ms"] = max(a["video_duration_ms"], t["duration_ms"])
    return {
        key: {
            "views": a["views"], "unique_viewers": len(a["unique_viewers"]), "view_sessions": len(a["view_sessions"]),
            "likes": a["likes"], "unlikes": a["unlikes"], "ticks": a["ticks"],
            "watched_sessions": len(a["watched_sessions"]), "completed_sessions": len(a["completed_sessions"]),
            "watch_time_ms": sum(a["furthest"].values()), "video_duration_ms": a["video_duration_ms"],
        }
        for key, a in acc.items()
    }


def _stored_rollup(client: Any, db: str, table: str, bucket: str,
                   final: str = "") -> dict[tuple[str, Any], dict[str, Any]]:
    result = client.query(
        f"SELECT video_id, {bucket} AS b, sum(views) AS views, uniqMerge(unique_viewers) AS unique_viewers,"
        " uniqMerge(view_sessions) AS view_sessions, sum(likes) AS likes, sum(unlikes) AS unlikes,"
        " sum(ticks) AS ticks, uniqMerge(watched_sessions) AS watched_sessions,"
        " uniqMerge(completed_sessions) AS completed_sessions,"
        " arraySum(maxMapMerge(session_max_position_ms).2) AS watch_time_ms,"
        " max(video_duration_ms) AS video_duration_ms"
        f" FROM `{db}`.{table} {final} GROUP BY video_id, b")
    stored = {}
    for video_id, bucket_value, *values in result.result_rows:
        if isinstance(bucket_value, datetime):
            bucket_value = _utc(bucket_value)
        stored[(video_id, bucket_value)] = dict(zip(result.column_names[2:], values))
    return stored


def test_the_synthetic_set_covers_what_the_rollups_must_handle(dataset: Dataset) -> None:
    minutes = {_minute(t["occurred_at"]) for t in dataset.ticks}
    assert len({_hour(m) for m in minutes}) == 2 and len(minutes) >= 4
    per_video = _aggregate(dataset, lambda at: "all")
    assert [per_video[(v, "all")]["completed_sessions"] for v in ("v1", "v2", "v3")] == [2, 1, 0]
    assert sum(e["unlikes"] for e in per_video.values()) == 2
    sessions_per_viewer: dict[tuple[str, str], set[str]] = defaultdict(set)
    for v in dataset.views:
        sessions_per_viewer[(v["video_id"], v["user_id"])].add(v["session_id"])
    assert sum(len(s) >= 2 for s in sessions_per_viewer.values()) == 2


@pytest.mark.parametrize(("table", "bucket", "bucket_of"), [("video_stats_1m", "minute", _minute),
                                                            ("video_stats_1h", "hour", _hour)])
def test_rollups_match_the_events(clickhouse: Any, dataset: Dataset, table: str, bucket: str,
                                  bucket_of: Callable[[datetime], datetime]) -> None:
    expected = _aggregate(dataset, bucket_of)
    assert len({b for _, b in expected}) >= 2
    assert _stored_rollup(clickhouse, dataset.db, table, bucket) == expected
    # Merged into one row per (video, bucket), the stored rows read the same.
    clickhouse.command(f"OPTIMIZE TABLE `{dataset.db}`.{table} FINAL")
    assert clickhouse.query(f"SELECT count() FROM `{dataset.db}`.{table}").result_rows[0][0] == len(expected)
    assert _stored_rollup(clickhouse, dataset.db, table, bucket, "FINAL") == expected


def test_minute_states_merge_to_the_hourly_values(clickhouse: Any, dataset: Dataset) -> None:
    by_hour = _stored_rollup(clickhouse, dataset.db, "video_stats_1m", "toStartOfHour(minute)")
    assert by_hour == _stored_rollup(clickhouse, dataset.db, "video_stats_1h", "hour") == _aggregate(dataset, _hour)


def test_exact_counts_come_from_the_base_tables(clickhouse: Any) -> None:
    data = _load_dataset(clickhouse)
    db = data.db
    # Events delivered again in batches with new tokens: past insert deduplication.
    _insert(clickhouse, db, "views", data.views[:3], token="views/1/0-2")
    _insert(clickhouse, db, "likes", data.likes[:2], token="likes/1/0-1")
    views: dict[str, int] = defaultdict(int)
    for v in data.views:
        views[v["video_id"]] += 1
    net: dict[str, int] = defaultdict(int)
    for like in data.likes:
        net[like["video_id"]] += 1 if like["action"] == "LIKE" else -1

    def rows(sql: str) -> list[tuple[Any, ...]]:
        return clickhouse.query(sql.replace("{db}", db)).result_rows

    # The forms docs/analytics.md gives.
    assert rows("SELECT video_id, count() FROM `{db}`.views FINAL GROUP BY video_id ORDER BY video_id") \
        == sorted(views.items())
    assert rows("SELECT video_id, uniqExact(event_id) FROM `{db}`.views GROUP BY video_id ORDER BY video_id") \
        == sorted(views.items())
    assert rows("SELECT video_id, sum(toInt8(action)) FROM `{db}`.likes FINAL GROUP BY video_id ORDER BY video_id") \
        == sorted(net.items())
    # The rollups count what was inserted; their distinct counts are unaffected.
    stored = _stored_rollup(clickhouse, db, "video_stats_1h", "'all'")
    assert sum(s["views"] for s in stored.values()) == len(data.views) + 3
    assert sum(s["likes"] + s["unlikes"] for s in stored.values()) == len(data.likes) + 2
    expected = _aggregate(data, lambda at: "all")
    assert {k: s["view_sessions"] for k, s in stored.items()} == {k: e["view_sessions"] for k, e in expected.items()}


# -- heat_scores_latest --------------------------------------------------------------------------


Heat = tuple[str, datetime, list[dict[str, Any]]]  # database, now, the rows inserted


def _heat(video_id: str, window: str, window_end: datetime, score: float) -> dict[str, Any]:
    return {**_envelope(window_end + timedelta(seconds=1), "heat-score"), "video_id": video_id, "window": window,
            "window_end": window_end, "score": score, "views": int(score * 10), "unique_viewers": int(score * 5),
            "net_likes": int(score) - 3, "completion_rate": score / 100, "rewatch_rate": score / 200,
            "avg_watched_fraction": score / 300}


@pytest.fixture(scope="module")
def heat(clickhouse: Any) -> Heat:
    db = _fresh_database()
    migrate(clickhouse, db)
    now = datetime.now(UTC).replace(microsecond=0)
    rows = [
        _heat("v1", "1h", now - timedelta(minutes=10), 5.0),
        _heat("v1", "1h", now - timedelta(minutes=2), 7.0),
        _heat("v1", "24h", now - timedelta(minutes=3), 1.0),
        _heat("v2", "1h", now - timedelta(minutes=4), 8.0),
        _heat("v3", "1h", now - timedelta(hours=3), 100.0),  # stale: nothing since
    ]
    late = _heat("v1", "1h", now - timedelta(minutes=5), 9.0)  # an older update arriving last
    _insert(clickhouse, db, "heat_scores", rows[:2], token="heat/0/0-1")
    _insert(clickhouse, db, "heat_scores", rows[2:], token="heat/0/2-4")
    _insert(clickhouse, db, "heat_scores", [rows[3], late], token="heat/0/5-6")  # with a duplicate
    return db, now, [*rows, late]


def _latest_by_python(history: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for row in history:
        key = (row["window"], row["video_id"])
        if key not in latest or row["window_end"] > latest[key]["window_end"]:
            latest[key] = row
    return latest


def test_heat_scores_latest_holds_the_newest_row_per_window_and_video(clickhouse: Any, heat: Heat) -> None:
    db, _, history = heat
    columns = [name for name, _ in CONTRACT["heat_scores"] if name != "video_id"]
    expected = {key: tuple(row[c] for c in columns) for key, row in _latest_by_python(history).items()}
    result = clickhouse.query(f"SELECT `window`, video_id, {', '.join(f'`{c}`' for c in columns)}"
                              f" FROM `{db}`.heat_scores_latest FINAL")
    stored = {(r[0], r[1]): tuple(_utc(v) if isinstance(v, datetime) else v for v in r[2:])
              for r in result.result_rows}
    assert stored == expected
    assert stored[("1h", "v1")][columns.index("score")] == 7.0
    # The same answer as a merge query over the history (what FINAL saves).
    by_argmax = clickhouse.query(
        f"SELECT `window`, video_id, argMax(score, window_end) FROM `{db}`.heat_scores"
        " GROUP BY `window`, video_id").result_rows
    assert {(w, v): s for w, v, s in by_argmax} == {k: e[columns.index("score")] for k, e in expected.items()}
    clickhouse.command(f"OPTIMIZE TABLE `{db}`.heat_scores_latest FINAL")
    assert clickhouse.query(f"SELECT count() FROM `{db}`.heat_scores_latest").result_rows[0][0] == len(expected)


# -- the analyst queries -------------------------------------------------------------------------


def _stamp(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


QUERY_FILES = sorted(p.name for p in QUERIES_DIR.glob("*.sql"))
PARAMETER = re.compile(r"\{(\w+):([^}]+)\}")


def test_the_documented_queries_exist() -> None:
    assert {"trending_now.sql", "completion_by_video.sql", "rewatch_rate.sql", "upload_to_published.sql",
            "latest_heat_scores.sql"} <= set(QUERY_FILES)
    readme = (QUERIES_DIR / "README.md").read_text()
    for name in QUERY_FILES:
        assert name in readme, f"{name} is listed in queries/README.md"


@pytest.mark.parametrize("name", QUERY_FILES)
def test_a_query_file_documents_its_parameters_and_runs(clickhouse: Any, dataset: Dataset, name: str) -> None:
    text = (QUERIES_DIR / name).read_text()
    lines = text.splitlines()
    header = []
    for line in lines:
        if not line.startswith("--"):
            break
        header.append(line)
    assert len(header) >= 3, f"{name} starts with a comment block"
    body = "\n".join(lines[len(header):])
    used = {m[1]: m[2] for m in PARAMETER.finditer(body)}
    assert used, f"{name} takes its inputs as query parameters"
    for parameter, kind in used.items():
        assert f"{{{parameter}:{kind}}}" in "\n".join(header), f"{name}: {parameter} is documented in the header"
    assert not body.rstrip().endswith(";")
    values = {"minutes": 60, "limit": 10, "since": _stamp(dataset.h0), "until": _stamp(dataset.h0 + timedelta(hours=2)),
              "min_viewers": 1, "window": "1h", "max_age_minutes": 60}
    assert set(used) <= set(values), f"{name}: new parameter names are added to this test"
    clickhouse.query(_query_file(name, dataset.db), parameters={p: values[p] for p in used})


def _per_video(data: Dataset, since: datetime, until: datetime) -> dict[str, dict[str, Any]]:
    totals = _aggregate(data, lambda at: "all" if since <= at < until else None)
    return {video: values for (video, _), values in totals.items()}


def test_trending_now(clickhouse: Any, dataset: Dataset) -> None:
    # A window from about h0 + 40 min to now: the second hour's events, not the first hour's.
    minutes = int((datetime.now(UTC) - dataset.h0).total_seconds() // 60) - 40
    per_video = _per_video(dataset, dataset.h0 + timedelta(hours=1), dataset.h0 + timedelta(hours=3))
    expected = [
        {"video_id": video, "views": e["views"], "unique_viewers": e["unique_viewers"], "likes": e["likes"],
         "unlikes": e["unlikes"], "net_likes": e["likes"] - e["unlikes"], "completed_sessions": e["completed_sessions"],
         "watch_time_ms": e["watch_time_ms"]}
        for video, e in per_video.items()
    ]
    expected.sort(key=lambda r: (-r["views"], -r["unique_viewers"], r["video_id"]))
    assert [r["video_id"] for r in expected] == ["v1", "v2", "v3"]
    assert _run_query(clickhouse, "trending_now.sql", dataset.db, minutes=minutes, limit=10) == expected
    assert _run_query(clickhouse, "trending_now.sql", dataset.db, minutes=minutes, limit=1) == expected[:1]
    # The whole data set: watch time merges per session across both hours.
    everything = _per_video(dataset, dataset.h0, dataset.h0 + timedelta(hours=3))
    wide = _run_query(clickhouse, "trending_now.sql", dataset.db, minutes=minutes + 120, limit=10)
    assert {r["video_id"]: (r["views"], r["watch_time_ms"]) for r in wide} \
        == {v: (e["views"], e["watch_time_ms"]) for v, e in everything.items()}


@pytest.mark.parametrize("since_h", [0, 1])
def test_completion_by_video(clickhouse: Any, dataset: Dataset, since_h: int) -> None:
    since, until = dataset.h0 + timedelta(hours=since_h), dataset.h0 + timedelta(hours=2)
    expected = []
    for video, e in _per_video(dataset, since, until).items():
        sessions, watched, completed = e["view_sessions"], e["watched_sessions"], e["completed_sessions"]
        duration = e["video_duration_ms"]
        expected.append({
            "video_id": video, "sessions": sessions, "watched_sessions": watched, "completed_sessions": completed,
            "completion_rate": min(1.0, completed / sessions) if sessions else 0.0,
            "watch_time_ms": e["watch_time_ms"], "video_duration_ms": duration,
            "avg_watched_fraction": e["watch_time_ms"] / (watched * duration) if watched and duration else 0.0,
        })
    expected.sort(key=lambda r: (-r["sessions"], r["video_id"]))
    got = _run_query(clickhouse, "completion_by_video.sql", dataset.db, since=_stamp(since), until=_stamp(until),
                     limit=10)
    assert got == [{**r, "completion_rate": pytest.approx(r["completion_rate"]),
                    "avg_watched_fraction": pytest.approx(r["avg_watched_fraction"])} for r in expected]
    if since_h == 0:
        assert [(r["video_id"], r["completed_sessions"], r["sessions"]) for r in got] \
            == [("v1", 2, 4), ("v2", 1, 3), ("v3", 0, 1)]


@pytest.mark.parametrize(("since_h", "min_viewers"), [(0, 1), (0, 2), (1, 1)])
def test_rewatch_rate(clickhouse: Any, dataset: Dataset, since_h: int, min_viewers: int) -> None:
    since, until = dataset.h0 + timedelta(hours=since_h), dataset.h0 + timedelta(hours=2)
    sessions: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for v in dataset.views:
        if since <= v["occurred_at"] < until:
            sessions[v["video_id"]][v["user_id"]].add(v["session_id"])
    expected = []
    for video, users in sessions.items():
        if len(users) < min_viewers:
            continue
        rewatchers = sum(len(s) >= 2 for s in users.values())
        expected.append({"video_id": video, "viewers": len(users), "sessions": sum(len(s) for s in users.values()),
                         "rewatchers": rewatchers, "rewatch_rate": rewatchers / len(users)})
    expected.sort(key=lambda r: (-r["rewatch_rate"], -r["viewers"], r["video_id"]))
    got = _run_query(clickhouse, "rewatch_rate.sql", dataset.db, since=_stamp(since), until=_stamp(until),
                     min_viewers=min_viewers, limit=10)
    assert got == [{**r, "rewatch_rate": pytest.approx(r["rewatch_rate"])} for r in expected]
    if (since_h, min_viewers) == (0, 1):
        assert [(r["video_id"], r["rewatchers"], r["viewers"]) for r in got] \
            == [("v2", 1, 2), ("v1", 1, 3), ("v3", 0, 1)]


def test_upload_to_published(clickhouse: Any) -> None:
    db = _fresh_database()
    migrate(clickhouse, db)
    h0 = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)

    def lifecycle(table: str, video_id: str, at: datetime, **fields: Any) -> dict[str, Any]:
        return {**_sample(table, at, video_id), **fields}

    uploads = [lifecycle("uploads", "vA", h0 + timedelta(minutes=5), title="A", uploader_id="alice"),
               lifecycle("uploads", "vB", h0 + timedelta(minutes=6), title="B", uploader_id="bob"),
               lifecycle("uploads", "vC", h0 + timedelta(minutes=10), title="C"),  # not published yet
               lifecycle("uploads", "vD", h0 - timedelta(days=2), title="D")]  # before the period
    transcodes = [lifecycle("transcodes", "vA", h0 + timedelta(minutes=7)),
                  lifecycle("transcodes", "vB", h0 + timedelta(minutes=6, seconds=30)),
                  lifecycle("transcodes", "vD", h0 - timedelta(days=2) + timedelta(minutes=1))]
    decisions = [lifecycle("moderation_decisions", "vA", h0 + timedelta(minutes=8))]
    first_publication = lifecycle("publications", "vA", h0 + timedelta(minutes=9))
    publications = [first_publication,
                    lifecycle("publications", "vA", h0 + timedelta(minutes=30)),  # published again later
                    lifecycle("publications", "vB", h0 + timedelta(minutes=6, seconds=45, microseconds=500000)),
                    lifecycle("publications", "vD", h0 - timedelta(days=1))]
    for table, rows in (("uploads", uploads), ("transcodes", transcodes), ("moderation_decisions", decisions),
                        ("publications", publications)):
        _insert(clickhouse, db, table, rows, token=f"{table}/0")
    _insert(clickhouse, db, "publications", [first_publication], token="publications/1")  # a duplicate

    got = _run_query(clickhouse, "upload_to_published.sql", db, since=_stamp(h0),
                     until=_stamp(h0 + timedelta(hours=1)), limit=10)
    for row in got:
        for key in ("uploaded_at", "transcoded_at", "moderated_at", "published_at"):
            row[key] = None if row[key] is None else _utc(row[key])
    assert got == [
        {"video_id": "vA", "uploader_id": "alice", "title": "A", "uploaded_at": h0 + timedelta(minutes=5),
         "transcoded_at": h0 + timedelta(minutes=7), "moderated_at": h0 + timedelta(minutes=8),
         "published_at": h0 + timedelta(minutes=9), "upload_to_transcoded_s": 120.0, "upload_to_published_s": 240.0},
        {"video_id": "vB", "uploader_id": "bob", "title": "B", "uploaded_at": h0 + timedelta(minutes=6),
         "transcoded_at": h0 + timedelta(minutes=6, seconds=30), "moderated_at": None,
         "published_at": h0 + timedelta(minutes=6, seconds=45, microseconds=500000),
         "upload_to_transcoded_s": 30.0, "upload_to_published_s": 45.5},
    ]


def test_latest_heat_scores(clickhouse: Any, heat: Heat) -> None:
    db, now, history = heat
    latest = _latest_by_python(history)
    for window in ("1h", "24h"):
        fresh = [row for (w, _), row in latest.items()
                 if w == window and row["window_end"] >= now - timedelta(minutes=60)]
        fresh.sort(key=lambda r: (-r["score"], r["video_id"]))
        got = _run_query(clickhouse, "latest_heat_scores.sql", db, window=window, max_age_minutes=60, limit=10)
        assert [(r["video_id"], r["window"], _utc(r["window_end"]), r["score"], r["views"], r["net_likes"],
                 r["avg_watched_fraction"]) for r in got] \
            == [(r["video_id"], r["window"], r["window_end"], r["score"], r["views"], r["net_likes"],
                 r["avg_watched_fraction"]) for r in fresh]
    assert [r["video_id"] for r in _run_query(clickhouse, "latest_heat_scores.sql", db, window="1h",
                                              max_age_minutes=60, limit=10)] == ["v2", "v1"]
    assert [r["video_id"] for r in _run_query(clickhouse, "latest_heat_scores.sql", db, window="1h",
                                              max_age_minutes=600, limit=1)] == ["v3"]
