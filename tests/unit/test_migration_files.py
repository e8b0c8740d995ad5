from __future__ import annotations

from pathlib import Path

import pytest

from infra.clickhouse.migrate import Migration, MigrationError, load_migrations


def test_statements_split_at_semicolons_ending_a_line_and_name_the_database() -> None:
    sql = "-- a comment\nCREATE TABLE `{db}`.a (s String DEFAULT 'x;y') ENGINE = Memory;\n\nSELECT 1;\n-- trailing\n"
    assert Migration(1, "x", sql).statements("lx") == [
        "-- a comment\nCREATE TABLE `lx`.a (s String DEFAULT 'x;y') ENGINE = Memory",
        "SELECT 1",
    ]


def test_the_shipped_migrations_load_in_order() -> None:
    versions = [m.version for m in load_migrations()]
    assert versions == sorted(versions) and versions[0] == 1


def test_badly_named_files_are_refused(tmp_path: Path) -> None:
    (tmp_path / "1_bad.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="NNNN_snake_name"):
        load_migrations(tmp_path)


def test_duplicate_versions_are_refused(tmp_path: Path) -> None:
    (tmp_path / "0001_a.sql").write_text("SELECT 1;")
    (tmp_path / "0001_b.sql").write_text("SELECT 2;")
    with pytest.raises(MigrationError, match="duplicate"):
        load_migrations(tmp_path)
