"""A known synthetic stream through the real broker, the heat worker and the ClickHouse sink; what
ClickHouse answers is compared with values this test computes on its own."""

from __future__ import annotations

import random
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from common.settings import Settings
from processors.heat_score.score import heat_score
from processors.heat_score.score import WindowStats
from processors.sink.sink import ClickHouseSink
from schemas.codec import encode
from schemas.topics import TOPIC_BY_SCHEMA
from tests.helpers import wait_until_caught_up, heat_worker_counts, records_on, running_service, stable_port

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def heat_worker(stack: Settings) -> Iterator[Settings]:
    settings = stack.model_copy(update={"heat_web_port": stable_port("heat-1"), "heat_emit_interval_s": 1.0,
                                        "like_update_min_interval_s": 1.0, "heat_checkpoint_interval_s": 1.0})
    with running_service(settings, "heat", settings.heat_web_port):
        # Counting starts once the worker has taken what earlier modules left on its topics.
        wait_until_caught_up(settings.kafka_bootstrap, "lustrax-heat",
                             [TOPIC_BY_SCHEMA[s].name for s in ("VideoView", "VideoLike", "WatchTick")])
        yield settings


@dataclass
class Session:
    user: str
    video: str
    session_id: str
    start: datetime
    max_position_ms: int
    duration_ms: int


def _envelope(at: datetime) -> dict[str, Any]:
    return {"event_id": uuid.uuid4(), "occurred_at": at, "producer": "test", "schema_version": 1}


def build_stream(run: str, now: datetime) -> tuple[list[tuple[str, dict[str, Any]]], dict[str, Any]]:
    """Events for three videos and what they must add up to."""
    rng = random.Random(7)
    videos = {f"{run}-a": 120_000, f"{run}-b": 60_000, f"{run}-c": 300_000}
    sessions: list[Session] = []
    for video, duration in videos.items():
        for u in range(rng.randint(5, 9)):
            user = f"{run}-user{u}"
            repeats = 2 if u % 3 == 0 else 1  # every third viewer comes back: a re-watch
            for r in range(repeats):
                fraction = rng.choice([0.2, 0.5, 0.95, 1.0])
                start = now - timedelta(minutes=30) + timedelta(seconds=rng.randint(0, 600) + 700 * r)
                sessions.append(Session(user, video, f"{user}-{video}-{r}", start,
                                        int(duration * fraction) // 5000 * 5000, duration))
    events: list[tuple[str, dict[str, Any]]] = []
    for s in sessions:
        events.append(("VideoView", {**_envelope(s.start), "video_id": s.video, "user_id": s.user,
                                     "session_id": s.session_id}))
        for position in range(5000, s.max_position_ms + 1, 5000):
            events.append(("WatchTick", {**_envelope(s.start + timedelta(milliseconds=position)),
                                         "video_id": s.video, "user_id": s.user, "session_id": s.session_id,
                                         "position_ms": position, "duration_ms": s.duration_ms}))
    likes = [(f"{run}-a", f"{run}-user0", "LIKE"), (f"{run}-a", f"{run}-user1", "LIKE"),
             (f"{run}-a", f"{run}-user2", "LIKE"), (f"{run}-a", f"{run}-user2", "UNLIKE"),
             (f"{run}-b", f"{run}-user0", "LIKE")]
    for i, (video, user, action) in enumerate(likes):
        events.append(("VideoLike", {**_envelope(now - timedelta(minutes=5) + timedelta(seconds=i)),
                                     "video_id": video, "user_id": user, "action": action}))

    expected: dict[str, Any] = {"videos": list(videos), "first_ms": {}, "stats": {}}
    by_video: dict[str, list[Session]] = defaultdict(list)
    for s in sessions:
        by_video[s.video].append(s)
    net_likes = {f"{run}-a": 2, f"{run}-b": 1, f"{run}-c": 0}
    for video, group in by_video.items():
        per_user: dict[str, int] = defaultdict(int)
        for s in group:
            per_user[s.user] += 1
        viewers = len(per_user)
        expected["stats"][video] = WindowStats(
            views=len(group), unique_viewers=viewers, sessions=len(group), net_likes=net_likes[video],
            completion_rate=sum(s.max_position_ms >= 0.9 * s.duration_ms for s in group) / len(group),
            avg_watched_fraction=sum(min(1.0, s.max_position_ms / s.duration_ms) for s in group) / len(group),
            rewatch_rate=sum(n >= 2 for n in per_user.values()) / viewers,
        )
        video_events = [e for _, e in events if e["video_id"] == video]
        expected["first_ms"][video] = min(int(e["occurred_at"].timestamp() * 1000) for e in video_events)
    return events, expected


def _produce(settings: Settings, events: list[tuple[str, dict[str, Any]]]) -> None:
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "enable.idempotence": True})
    for schema, record in events:
        producer.produce(TOPIC_BY_SCHEMA[schema].name, encode(schema, record), record["video_id"].encode())
        producer.poll(0)
    assert producer.flush(30) == 0


def _query(sink: ClickHouseSink, sql: str, **parameters: Any) -> list[tuple[Any, ...]]:
    with sink.lock:
        return sink.client.query(sql.replace("{db}", sink.database), parameters=parameters).result_rows


def test_clickhouse_answers_what_the_stream_adds_up_to(heat_worker: Settings, sink: ClickHouseSink) -> None:
    run = uuid.uuid4().hex[:10]
    now = datetime.now(UTC)
    events, expected = build_stream(run, now)
    duplicates = random.Random(1).sample(events, len(events) // 4)  # at-least-once: a quarter twice
    counts_before = heat_worker_counts(heat_worker)
    _produce(heat_worker, events + duplicates)
    videos = expected["videos"]

    # Event store: every event once, however often it was delivered.
    deadline = time.monotonic() + 90
    want_views = sum(s.views for s in expected["stats"].values())
    while time.monotonic() < deadline:
        rows = _query(sink, "SELECT count() FROM {db}.views FINAL WHERE video_id IN {v:Array(String)}", v=videos)
        if rows[0][0] >= want_views:
            break
        time.sleep(0.5)
    for video in videos:
        stats = expected["stats"][video]
        [(views, viewers)] = _query(sink, "SELECT count(), uniqExact(user_id) FROM {db}.views FINAL "
                                          "WHERE video_id = {v:String}", v=video)
        assert (views, viewers) == (stats.views, stats.unique_viewers), video
        [(net,)] = _query(sink, "SELECT sum(toInt8(action)) FROM {db}.likes FINAL WHERE video_id = {v:String}",
                          v=video)
        assert net == stats.net_likes, video
        [(completion,)] = _query(sink, """
            SELECT countIf(reached * 10 >= duration * 9) / count() FROM (
                SELECT session_id, max(position_ms) AS reached, max(duration_ms) AS duration
                FROM {db}.watch_ticks FINAL WHERE video_id = {v:String} GROUP BY session_id)""", v=video)
        assert completion == pytest.approx(stats.completion_rate), video

    # The analysts' re-watch query (infra/clickhouse/queries/rewatch_rate.sql), as `lustrax sql` runs it.
    query = (Path(__file__).parents[2] / "infra/clickhouse/queries/rewatch_rate.sql").read_text()
    period = {"since": (now - timedelta(hours=1)).strftime("%Y-%m-%d %H:%M:%S"),
              "until": (now + timedelta(hours=1)).strftime("%Y-%m-%d %H:%M:%S"), "min_viewers": 1, "limit": 100000}
    answered = {row[0]: row[4] for row in _query(sink, query, **period)}
    for video in videos:
        assert answered[video] == pytest.approx(expected["stats"][video].rewatch_rate), video

    # Heat scores: the latest row per video carries exactly the inputs computed here, and the score
    # the formula gives for them at that row's window end. The worker's topics (views, ticks, likes)
    # progress independently, so wait until the latest rows have caught up with all of them.
    def caught_up(row: tuple[Any, ...]) -> bool:
        stats = expected["stats"][row[0]]
        return row[3:] == pytest.approx((stats.views, stats.unique_viewers, stats.net_likes, stats.completion_rate,
                                         stats.rewatch_rate, stats.avg_watched_fraction))

    deadline = time.monotonic() + 90
    latest: dict[str, tuple[Any, ...]] = {}
    while time.monotonic() < deadline:
        rows = _query(sink, """
            SELECT video_id, window_end, score, views, unique_viewers, net_likes, completion_rate, rewatch_rate,
                   avg_watched_fraction
            FROM {db}.heat_scores_latest FINAL WHERE `window` = '1h' AND video_id IN {v:Array(String)}""",
                      v=videos)
        latest = {row[0]: row for row in rows}
        if len(latest) == len(videos) and all(caught_up(row) for row in latest.values()):
            break
        time.sleep(1)
    assert set(latest) == set(videos)
    for video in videos:
        stats = expected["stats"][video]
        _, window_end, score, views, viewers, net, completion, rewatch, watched = latest[video]
        assert (views, viewers, net) == (stats.views, stats.unique_viewers, stats.net_likes), video
        assert completion == pytest.approx(stats.completion_rate)
        assert rewatch == pytest.approx(stats.rewatch_rate)
        assert watched == pytest.approx(stats.avg_watched_fraction)
        age_s = (int(window_end.timestamp() * 1000) - expected["first_ms"][video]) / 1000
        assert score == pytest.approx(heat_score(stats, age_s=age_s, half_life_s=heat_worker.heat_half_life_s),
                                      rel=1e-6)

    # The worker's metrics account for every delivery: applied, or recognised as a repeat.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        counts = heat_worker_counts(heat_worker)
        taken = sum(counts[k] - counts_before[k] for k in ("applied", "duplicate_or_late"))
        if taken >= len(events) + len(duplicates):
            break
        time.sleep(0.5)
    assert taken == len(events) + len(duplicates)
    assert counts["applied"] - counts_before["applied"] >= len(events)
    assert counts["dead_letter"] == counts_before["dead_letter"]
    assert counts["lag_observed"] - counts_before["lag_observed"] == taken

    # like_update: the last broadcast for video a is its final count, 2.
    updates = records_on(heat_worker.kafka_bootstrap, TOPIC_BY_SCHEMA["LikeUpdate"].name,
                         lambda r: r["video_id"] == f"{run}-a" and r["like_count"] == 2, timeout_s=30)
    assert updates

