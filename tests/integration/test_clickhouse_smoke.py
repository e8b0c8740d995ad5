"""The real ClickHouse engine through clickhouse-connect; migrations applied idempotently."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from infra.clickhouse.migrate import MigrationError, applied_migrations, load_migrations, migrate

pytestmark = pytest.mark.integration


def _fresh_database() -> str:
    return f"test_{uuid.uuid4().hex[:12]}"


def test_create_insert_and_query(clickhouse) -> None:  # type: ignore[no-untyped-def]
    db = _fresh_database()
    clickhouse.command(f"CREATE DATABASE {db}")
    clickhouse.command(f"CREATE TABLE {db}.views (video_id String, n UInt32) ENGINE = MergeTree ORDER BY video_id")
    clickhouse.insert(f"{db}.views", [["a", 1], ["a", 2], ["b", 5]], column_names=["video_id", "n"])
    rows = clickhouse.query(f"SELECT video_id, sum(n) FROM {db}.views GROUP BY video_id ORDER BY video_id")
    assert rows.result_rows == [("a", 3), ("b", 5)]


def test_the_stack_applied_every_migration(clickhouse, stack) -> None:  # type: ignore[no-untyped-def]
    assert set(applied_migrations(clickhouse, stack.clickhouse_database)) == {m.version for m in load_migrations()}


def test_migrations_apply_once_then_are_idempotent(clickhouse) -> None:  # type: ignore[no-untyped-def]
    db = _fresh_database()
    first = migrate(clickhouse, db)
    assert [m.version for m in first] == [m.version for m in load_migrations()]
    assert migrate(clickhouse, db) == []
    assert clickhouse.query(f"SELECT count() FROM {db}.schema_migrations FINAL").result_rows[0][0] == len(first)
    assert clickhouse.query(f"EXISTS TABLE {db}.dead_letters").result_rows[0][0] == 1


def test_an_edited_migration_is_refused(clickhouse, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    db = _fresh_database()
    (tmp_path / "0001_things.sql").write_text("CREATE TABLE `{db}`.things (a UInt8) ENGINE = Memory;\n")
    migrate(clickhouse, db, load_migrations(tmp_path))
    (tmp_path / "0001_things.sql").write_text("CREATE TABLE `{db}`.things (a UInt16) ENGINE = Memory;\n")
    with pytest.raises(MigrationError, match="changed after it was applied"):
        migrate(clickhouse, db, load_migrations(tmp_path))


def test_a_failing_migration_is_not_recorded(clickhouse, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    db = _fresh_database()
    (tmp_path / "0001_ok.sql").write_text("CREATE TABLE `{db}`.ok (a UInt8) ENGINE = Memory;\n")
    (tmp_path / "0002_broken.sql").write_text("CREATE TABLE `{db}`.broken (a NoSuchType) ENGINE = Memory;\n")
    with pytest.raises(MigrationError, match="0002_broken"):
        migrate(clickhouse, db, load_migrations(tmp_path))
    assert set(applied_migrations(clickhouse, db)) == {1}
