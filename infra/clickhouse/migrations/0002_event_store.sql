-- The event store: one table per event type, written by the Kafka -> ClickHouse sink.
-- The column names are a contract with the sink (docs/analytics.md). Every table starts with the
-- envelope (event_id, occurred_at, producer), then the event's fields, then ingested_at, which
-- the sink never sends.
--
-- Delivery is at least once, so duplicates are handled twice:
-- * ReplacingMergeTree: rows with the same sorting key collapse on merge (and at query time with
--   FINAL). The sorting key ends with event_id and otherwise holds only columns derived from the
--   event itself, so a duplicate always has the same key and the same partition.
-- * Insert deduplication: non_replicated_deduplication_window keeps the ids of the last 10000
--   inserted blocks per table; a retried batch carrying the same insert_deduplication_token
--   (the sink sends topic/partition/offset range) is dropped at once, in the table and in the
--   materialized views fed from it (their target tables carry the same setting, 0003).
--
-- PRIMARY KEY is the ORDER BY without event_id: the primary index stays small while the sorting
-- key still separates events.

CREATE TABLE IF NOT EXISTS `{db}`.uploads
(
    event_id UUID,
    occurred_at DateTime64(3, 'UTC'),
    producer LowCardinality(String),
    video_id String,
    uploader_id String,
    title String,
    content_type LowCardinality(String),
    size_bytes UInt64,
    premium Bool,
    tags Array(String),
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(occurred_at)
PRIMARY KEY (video_id, occurred_at)
ORDER BY (video_id, occurred_at, event_id)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE TABLE IF NOT EXISTS `{db}`.views
(
    event_id UUID,
    occurred_at DateTime64(3, 'UTC'),
    producer LowCardinality(String),
    video_id String,
    user_id String,
    session_id String,
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(occurred_at)
PRIMARY KEY (video_id, toStartOfHour(occurred_at))
ORDER BY (video_id, toStartOfHour(occurred_at), event_id)
TTL toDateTime(occurred_at) + INTERVAL 2 YEAR
SETTINGS non_replicated_deduplication_window = 10000, ttl_only_drop_parts = 1;

CREATE TABLE IF NOT EXISTS `{db}`.likes
(
    event_id UUID,
    occurred_at DateTime64(3, 'UTC'),
    producer LowCardinality(String),
    video_id String,
    user_id String,
    action Enum8('LIKE' = 1, 'UNLIKE' = -1),
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(occurred_at)
PRIMARY KEY (video_id, toStartOfHour(occurred_at))
ORDER BY (video_id, toStartOfHour(occurred_at), event_id)
TTL toDateTime(occurred_at) + INTERVAL 2 YEAR
SETTINGS non_replicated_deduplication_window = 10000, ttl_only_drop_parts = 1;

-- The largest table (a tick every few seconds per playing session): daily partitions, so that
-- the 90-day TTL drops whole parts.
CREATE TABLE IF NOT EXISTS `{db}`.watch_ticks
(
    event_id UUID,
    occurred_at DateTime64(3, 'UTC'),
    producer LowCardinality(String),
    video_id String,
    user_id String,
    session_id String,
    position_ms UInt64,
    duration_ms UInt64,
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMMDD(occurred_at)
PRIMARY KEY (video_id, toStartOfHour(occurred_at))
ORDER BY (video_id, toStartOfHour(occurred_at), event_id)
TTL toDateTime(occurred_at) + INTERVAL 90 DAY
SETTINGS non_replicated_deduplication_window = 10000, ttl_only_drop_parts = 1;

CREATE TABLE IF NOT EXISTS `{db}`.transcodes
(
    event_id UUID,
    occurred_at DateTime64(3, 'UTC'),
    producer LowCardinality(String),
    video_id String,
    duration_ms UInt64,
    source_width UInt32,
    source_height UInt32,
    total_bytes UInt64,
    renditions Array(LowCardinality(String)),
    master_playlist_key String,
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(occurred_at)
PRIMARY KEY (video_id, occurred_at)
ORDER BY (video_id, occurred_at, event_id)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE TABLE IF NOT EXISTS `{db}`.transcode_failures
(
    event_id UUID,
    occurred_at DateTime64(3, 'UTC'),
    producer LowCardinality(String),
    video_id String,
    reason String,
    retryable Bool,
    attempt UInt32,
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(occurred_at)
PRIMARY KEY (video_id, occurred_at)
ORDER BY (video_id, occurred_at, event_id)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE TABLE IF NOT EXISTS `{db}`.moderation_decisions
(
    event_id UUID,
    occurred_at DateTime64(3, 'UTC'),
    producer LowCardinality(String),
    video_id String,
    decision LowCardinality(String),
    provider LowCardinality(String),
    labels Array(String),
    reason Nullable(String),
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(occurred_at)
PRIMARY KEY (video_id, occurred_at)
ORDER BY (video_id, occurred_at, event_id)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE TABLE IF NOT EXISTS `{db}`.publications
(
    event_id UUID,
    occurred_at DateTime64(3, 'UTC'),
    producer LowCardinality(String),
    video_id String,
    title String,
    uploader_id String,
    video_url String,
    thumbnail String,
    premium Bool,
    published_at DateTime64(3, 'UTC'),
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(occurred_at)
PRIMARY KEY (video_id, occurred_at)
ORDER BY (video_id, occurred_at, event_id)
SETTINGS non_replicated_deduplication_window = 10000;

-- A row per score update, each with the inputs it was computed from (to explain a score).
-- heat_scores_latest (0004) keeps only the newest row per (window, video).
CREATE TABLE IF NOT EXISTS `{db}`.heat_scores
(
    event_id UUID,
    occurred_at DateTime64(3, 'UTC'),
    producer LowCardinality(String),
    video_id String,
    `window` LowCardinality(String),
    window_end DateTime64(3, 'UTC'),
    score Float64,
    views UInt64,
    unique_viewers UInt64,
    net_likes Int64,
    completion_rate Float64,
    rewatch_rate Float64,
    avg_watched_fraction Float64,
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(occurred_at)
PRIMARY KEY (`window`, video_id, window_end)
ORDER BY (`window`, video_id, window_end, event_id)
TTL toDateTime(occurred_at) + INTERVAL 180 DAY
SETTINGS non_replicated_deduplication_window = 10000, ttl_only_drop_parts = 1;

-- The sink writes dead letters with a batch token as well: let a retried batch be dropped there too.
ALTER TABLE `{db}`.dead_letters MODIFY SETTING non_replicated_deduplication_window = 10000;
