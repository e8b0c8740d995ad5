"""ClickHouse through clickhouse-connect: embedded chDB by default, a server URL in production."""
