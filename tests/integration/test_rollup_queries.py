"""trending_now reads whole hours from the hourly rollup and only the edge minutes from the minute
rollup, and merges states only for its top videos; completion_by_video merges states only for its
top videos. Their answers must equal the one-pass queries they replaced, to the last count."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bench.analytics import generate, minute_only_trending, one_pass_completion
from infra.clickhouse.migrate import migrate

pytestmark = pytest.mark.integration

QUERIES = Path(__file__).resolve().parents[2] / "infra" / "clickhouse" / "queries"
TRENDING = (QUERIES / "trending_now.sql").read_text()
COMPLETION = (QUERIES / "completion_by_video.sql").read_text()


@pytest.fixture(scope="module")
def db(clickhouse: Any) -> str:
    name = f"test_{uuid.uuid4().hex[:12]}"
    migrate(clickhouse, name)
    generate(clickhouse, name, events=30_000, videos=40)  # over the last 48 hours, Zipf-like videos
    return name


def _both(clickhouse: Any, db: str, minutes: int, limit: int = 1000) -> tuple[list[tuple[Any, ...]], ...]:
    """(new, old) answers within one clock minute (the window moves with now())."""
    while True:
        minute = datetime.now(UTC).replace(second=0, microsecond=0)
        parameters = {"minutes": minutes, "limit": limit}
        new = clickhouse.query(TRENDING.replace("{db}", db), parameters=parameters).result_rows
        old = clickhouse.query(minute_only_trending().replace("{db}", db), parameters=parameters).result_rows
        if datetime.now(UTC).replace(second=0, microsecond=0) == minute:
            return new, old


@pytest.mark.parametrize("limit", [3, 25, 1000])  # 1000: every video; 3 and 25: ties at the cut
@pytest.mark.parametrize("minutes", [1, 59, 60, 61, 90, 119, 1440, 1441, 2000])
def test_trending_now_equals_the_minute_only_query(clickhouse: Any, db: str, minutes: int, limit: int) -> None:
    new, old = _both(clickhouse, db, minutes, limit)
    assert new == old
    assert 0 < len(new) <= limit


@pytest.mark.parametrize("limit", [3, 25, 1000])
@pytest.mark.parametrize("hours", [1, 5, 24, 47])
def test_completion_by_video_equals_the_one_pass_query(clickhouse: Any, db: str, hours: int, limit: int) -> None:
    until = datetime.now(UTC).replace(microsecond=0)
    parameters = {"since": (until - timedelta(hours=hours, minutes=20)).strftime("%Y-%m-%d %H:%M:%S"),
                  "until": until.strftime("%Y-%m-%d %H:%M:%S"), "limit": limit}
    new = clickhouse.query(COMPLETION.replace("{db}", db), parameters=parameters).result_rows
    old = clickhouse.query(one_pass_completion().replace("{db}", db), parameters=parameters).result_rows
    assert new == old
    assert 0 < len(new) <= limit


def test_a_long_window_reads_the_hourly_rollup(clickhouse: Any, db: str) -> None:
    # Proof that the hours come from video_stats_1h: empty the minute rollup's hours inside the
    # window and the 24-hour answer keeps most of its views.
    full = sum(row[1] for row in _both(clickhouse, db, 1440)[0])
    clickhouse.command(f"CREATE TABLE `{db}`.minutes_backup AS `{db}`.video_stats_1m")
    clickhouse.command(f"INSERT INTO `{db}`.minutes_backup SELECT * FROM `{db}`.video_stats_1m")
    try:
        clickhouse.command(f"TRUNCATE TABLE `{db}`.video_stats_1m")
        without_minutes = sum(row[1] for row in _both(clickhouse, db, 1440)[0])
        assert 0.85 * full < without_minutes <= full
    finally:
        clickhouse.command(f"TRUNCATE TABLE `{db}`.video_stats_1m")
        clickhouse.command(f"INSERT INTO `{db}`.video_stats_1m SELECT * FROM `{db}`.minutes_backup")
        clickhouse.command(f"DROP TABLE `{db}`.minutes_backup")
