-- The event-id ledger: every event_id stored in an event table, with the insert token it came
-- with, kept 8 days (longer than the ingest API's 7-day maximum event age). The sink looks a batch's
-- ids up here before inserting and drops those already stored (processors/sink/dedup.py), so an
-- event retried with the same event_id counts once, in the base tables and in the rollups, whatever
-- occurred_at the retry carries (it may fall into another hour, hence another sorting key).
--
-- Materialized views fill it from the event tables in the same insert as the row itself, so the
-- ledger holds exactly what was stored, also after a crash between two tables of a batch, and
-- every writer (a backfill, the benchmark) is covered. insert_token is the insert's
-- insert_deduplication_token: the sink does not count ids stored under the batch's own tokens as
-- seen, so a retried batch sends exactly the same blocks and insert deduplication drops them.
--
-- ORDER BY event_id with a small index granularity: a lookup of 10,000 random ids reads about
-- 10,000 granules, so small granules keep that cheap. Daily partitions: the TTL drops whole days.
-- A duplicate row here (a retried insert) is harmless: a lookup only asks whether an id exists.

CREATE TABLE IF NOT EXISTS `{db}`.event_ids
(
    event_id UUID,
    insert_token String,
    stored_at DateTime('UTC') DEFAULT now()
)
ENGINE = MergeTree
PARTITION BY toYYYYMMDD(stored_at)
ORDER BY event_id
TTL stored_at + INTERVAL 8 DAY
SETTINGS index_granularity = 256, non_replicated_deduplication_window = 10000, ttl_only_drop_parts = 1;

CREATE MATERIALIZED VIEW IF NOT EXISTS `{db}`.event_ids_uploads_mv TO `{db}`.event_ids AS
SELECT event_id, getSetting('insert_deduplication_token') AS insert_token FROM `{db}`.uploads;

CREATE MATERIALIZED VIEW IF NOT EXISTS `{db}`.event_ids_views_mv TO `{db}`.event_ids AS
SELECT event_id, getSetting('insert_deduplication_token') AS insert_token FROM `{db}`.views;

CREATE MATERIALIZED VIEW IF NOT EXISTS `{db}`.event_ids_likes_mv TO `{db}`.event_ids AS
SELECT event_id, getSetting('insert_deduplication_token') AS insert_token FROM `{db}`.likes;

CREATE MATERIALIZED VIEW IF NOT EXISTS `{db}`.event_ids_watch_ticks_mv TO `{db}`.event_ids AS
SELECT event_id, getSetting('insert_deduplication_token') AS insert_token FROM `{db}`.watch_ticks;

CREATE MATERIALIZED VIEW IF NOT EXISTS `{db}`.event_ids_transcodes_mv TO `{db}`.event_ids AS
SELECT event_id, getSetting('insert_deduplication_token') AS insert_token FROM `{db}`.transcodes;

CREATE MATERIALIZED VIEW IF NOT EXISTS `{db}`.event_ids_transcode_failures_mv TO `{db}`.event_ids AS
SELECT event_id, getSetting('insert_deduplication_token') AS insert_token FROM `{db}`.transcode_failures;

CREATE MATERIALIZED VIEW IF NOT EXISTS `{db}`.event_ids_moderation_decisions_mv TO `{db}`.event_ids AS
SELECT event_id, getSetting('insert_deduplication_token') AS insert_token FROM `{db}`.moderation_decisions;

CREATE MATERIALIZED VIEW IF NOT EXISTS `{db}`.event_ids_publications_mv TO `{db}`.event_ids AS
SELECT event_id, getSetting('insert_deduplication_token') AS insert_token FROM `{db}`.publications;

CREATE MATERIALIZED VIEW IF NOT EXISTS `{db}`.event_ids_heat_scores_mv TO `{db}`.event_ids AS
SELECT event_id, getSetting('insert_deduplication_token') AS insert_token FROM `{db}`.heat_scores;

-- The rollups are ordered by (video_id, bucket): a time range across all videos reads every
-- granule of its partitions and decodes their uniq and maxMap states. A projection ordered by the
-- bucket lets a short window (trending_now's edge minutes, a few hours of completion_by_video)
-- read only its own rows; ClickHouse picks it when it reads fewer marks. It doubles the rollups'
-- storage. 'rebuild' keeps it correct through AggregatingMergeTree merges. MATERIALIZE builds it
-- for the parts written before (a background mutation; new parts get it at insert).
ALTER TABLE `{db}`.video_stats_1m MODIFY SETTING deduplicate_merge_projection_mode = 'rebuild';
ALTER TABLE `{db}`.video_stats_1m ADD PROJECTION IF NOT EXISTS by_minute (SELECT * ORDER BY minute);
ALTER TABLE `{db}`.video_stats_1m MATERIALIZE PROJECTION by_minute;
ALTER TABLE `{db}`.video_stats_1h MODIFY SETTING deduplicate_merge_projection_mode = 'rebuild';
ALTER TABLE `{db}`.video_stats_1h ADD PROJECTION IF NOT EXISTS by_hour (SELECT * ORDER BY hour);
ALTER TABLE `{db}`.video_stats_1h MATERIALIZE PROJECTION by_hour;
