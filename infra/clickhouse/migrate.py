"""Versioned migrations: infra/clickhouse/migrations/NNNN_name.sql, applied once each, in order.

A migration file holds one or more statements, each ending with `;` at the end of a line.
`{db}` in a file stands for the configured database. The table `{db}.schema_migrations` records
what ran (version, name, checksum); a file changed after it ran is refused rather than re-run.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from clickhouse_connect.driver.client import Client

from common.errors import LustraxError

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_STATEMENT_END = re.compile(r";\s*$", re.MULTILINE)


class MigrationError(LustraxError):
    """A migration is malformed, changed after it ran, or failed."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    def statements(self, database: str) -> list[str]:
        text = self.sql.replace("{db}", database)
        parts = [part.strip() for part in _STATEMENT_END.split(text)]
        return [p for p in parts if p and not all(line.strip().startswith("--") for line in p.splitlines())]


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    migrations = []
    for path in sorted(directory.glob("*.sql")):
        match = _FILE_NAME.match(path.name)
        if not match:
            raise MigrationError(f"{path.name}: migration files are named NNNN_snake_name.sql")
        migrations.append(Migration(int(match[1]), match[2], path.read_text()))
    versions = [m.version for m in migrations]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"duplicate migration versions in {directory}")
    return migrations


def applied_migrations(client: Client, database: str) -> dict[int, str]:
    rows = client.query(f"SELECT version, checksum FROM `{database}`.schema_migrations FINAL").result_rows
    return {int(version): checksum for version, checksum in rows}


def migrate(client: Client, database: str, migrations: list[Migration] | None = None) -> list[Migration]:
    """Apply what has not run yet; returns the migrations applied by this call."""
    migrations = load_migrations() if migrations is None else migrations
    client.command(f"CREATE DATABASE IF NOT EXISTS `{database}`")
    client.command(
        f"CREATE TABLE IF NOT EXISTS `{database}`.schema_migrations ("
        " version UInt32, name String, checksum String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3)"
        ") ENGINE = ReplacingMergeTree(applied_at) ORDER BY version"
    )
    done = applied_migrations(client, database)
    applied = []
    for migration in migrations:
        if migration.version in done:
            if done[migration.version] != migration.checksum:
                raise MigrationError(
                    f"migration {migration.version:04d}_{migration.name} changed after it was applied; "
                    "add a new migration instead of editing an applied one"
                )
            continue
        for statement in migration.statements(database):
            try:
                client.command(statement)
            except Exception as exc:  # clickhouse-connect raises several types; report the migration
                raise MigrationError(f"migration {migration.version:04d}_{migration.name} failed: {exc}") from exc
        client.insert(f"`{database}`.schema_migrations", [[migration.version, migration.name, migration.checksum]],
                      column_names=["version", "name", "checksum"])
        applied.append(migration)
    return applied
