"""Kafka -> ClickHouse: the event store sink, and the query endpoint of the embedded engine."""
