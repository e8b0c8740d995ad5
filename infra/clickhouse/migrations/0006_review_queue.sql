-- The human moderation queue (docs/moderation.md): one row per ModerationReviewRequested, written by
-- the sink like every event table (0002 explains the deduplication). A request is pending while no
-- later moderation_decisions row of the video has provider 'human'.
CREATE TABLE IF NOT EXISTS `{db}`.review_queue
(
    event_id UUID,
    occurred_at DateTime64(3, 'UTC'),
    producer LowCardinality(String),
    video_id String,
    decision_event_id UUID,
    master_playlist_key String,
    premium Bool,
    priority LowCardinality(String),
    reasons Array(String),
    not_checked Array(String),
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(occurred_at)
PRIMARY KEY (video_id, occurred_at)
ORDER BY (video_id, occurred_at, event_id)
SETTINGS non_replicated_deduplication_window = 10000;
