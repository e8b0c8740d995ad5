-- The trust-and-safety audit trail (docs/trust-and-safety.md): every DMCA notice, counter-notice,
-- court action, takedown, restore, notification, strike, termination and complaint, one row per
-- event, written by the sink like every event table (0002 explains the deduplication). `payload`
-- is the whole event as JSON; `event_type` is its record name.
CREATE TABLE IF NOT EXISTS `{db}`.trust_events
(
    event_id UUID,
    occurred_at DateTime64(3, 'UTC'),
    producer LowCardinality(String),
    video_id String,
    event_type LowCardinality(String),
    case_id String,
    uploader_id Nullable(String),
    payload String,
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(occurred_at)
PRIMARY KEY (video_id, occurred_at)
ORDER BY (video_id, occurred_at, event_id)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE MATERIALIZED VIEW IF NOT EXISTS `{db}`.event_ids_trust_events_mv TO `{db}`.event_ids AS
SELECT event_id, getSetting('insert_deduplication_token') AS insert_token FROM `{db}`.trust_events;
