-- The newest heat score per (window, video), fed by a materialized view from heat_scores.
-- ReplacingMergeTree(window_end) keeps, per sorting key, the row with the largest window_end
-- (the one inserted last when window_ends are equal), so a late, older update never replaces a
-- newer one. Read it with FINAL: the table holds about two rows per video, FINAL is cheap.
-- No PARTITION BY on purpose: ReplacingMergeTree only replaces rows within one partition.

CREATE TABLE IF NOT EXISTS `{db}`.heat_scores_latest
(
    `window` LowCardinality(String),
    video_id String,
    window_end DateTime64(3, 'UTC'),
    score Float64,
    views UInt64,
    unique_viewers UInt64,
    net_likes Int64,
    completion_rate Float64,
    rewatch_rate Float64,
    avg_watched_fraction Float64,
    event_id UUID,
    occurred_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(window_end)
ORDER BY (`window`, video_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS `{db}`.heat_scores_latest_mv TO `{db}`.heat_scores_latest AS
SELECT
    `window`, video_id, window_end, score, views, unique_viewers, net_likes,
    completion_rate, rewatch_rate, avg_watched_fraction, event_id, occurred_at
FROM `{db}`.heat_scores;
