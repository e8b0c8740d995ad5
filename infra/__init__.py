"""Infrastructure of the local stack: Kafka broker, S3 server, ClickHouse store, and their setup."""
