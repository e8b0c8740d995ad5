-- Messages a consumer could not decode or store, kept for inspection and replay
-- (ClickHouse's guidance: keep parse errors in a dead-letter table, never drop them).
CREATE TABLE IF NOT EXISTS `{db}`.dead_letters
(
    received_at DateTime64(3, 'UTC') DEFAULT now64(3),
    consumer LowCardinality(String),
    topic LowCardinality(String),
    partition UInt32,
    offset UInt64,
    key String,
    payload String CODEC(ZSTD(3)),
    reason String
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(received_at)
ORDER BY (topic, partition, offset)
TTL toDateTime(received_at) + INTERVAL 90 DAY;
