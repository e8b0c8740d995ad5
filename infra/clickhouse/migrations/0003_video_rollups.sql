-- Per-video rollups per minute and per hour, fed by materialized views from views, likes and
-- watch_ticks (docs/analytics.md). Read them with GROUP BY and the -Merge functions, never as
-- stored rows: a (video, bucket) may have several rows until parts merge.
--
-- Columns (the same in both tables):
--   views                    view events (sum)
--   unique_viewers           distinct user_id among views (uniq state)
--   view_sessions            distinct session_id among views: sessions started (uniq state)
--   likes, unlikes           like events by action (sum)
--   ticks                    watch ticks (sum)
--   watched_sessions         distinct session_id among ticks (uniq state)
--   completed_sessions       distinct session_id with a tick at position_ms >= 0.9 * duration_ms
--                            (uniq state, a session counts once however many such ticks)
--   session_max_position_ms  per session (key cityHash64(session_id)) the furthest position
--                            reached, capped at duration_ms (maxMap state). Watch time is
--                            arraySum(maxMapMerge(session_max_position_ms).2): the sum over
--                            sessions of the furthest position reached in the buckets read
--   video_duration_ms        the largest duration_ms reported by the players (max)
--
-- Sums count what was inserted: a duplicate that slips past insert deduplication is counted
-- twice here, while the uniq and maxMap states are unaffected by duplicates. Exact counts come
-- from the base tables (FINAL or uniqExact(event_id)).
--
-- The target tables carry non_replicated_deduplication_window too: a retried insert that the
-- source table drops is still pushed through the views (ClickHouse 26.9, the behaviour since the
-- 24.7 rework) and must be dropped in each target as well. A target block's id derives from the
-- source block's, so different inserts that aggregate to equal rows are both kept (tested).

CREATE TABLE IF NOT EXISTS `{db}`.video_stats_1m
(
    video_id String,
    minute DateTime('UTC'),
    views SimpleAggregateFunction(sum, UInt64),
    unique_viewers AggregateFunction(uniq, String),
    view_sessions AggregateFunction(uniq, String),
    likes SimpleAggregateFunction(sum, UInt64),
    unlikes SimpleAggregateFunction(sum, UInt64),
    ticks SimpleAggregateFunction(sum, UInt64),
    watched_sessions AggregateFunction(uniq, String),
    completed_sessions AggregateFunction(uniq, String),
    session_max_position_ms AggregateFunction(maxMap, Array(UInt64), Array(UInt64)),
    video_duration_ms SimpleAggregateFunction(max, UInt64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMMDD(minute)
ORDER BY (video_id, minute)
TTL minute + INTERVAL 30 DAY
SETTINGS non_replicated_deduplication_window = 10000, ttl_only_drop_parts = 1;

CREATE TABLE IF NOT EXISTS `{db}`.video_stats_1h
(
    video_id String,
    hour DateTime('UTC'),
    views SimpleAggregateFunction(sum, UInt64),
    unique_viewers AggregateFunction(uniq, String),
    view_sessions AggregateFunction(uniq, String),
    likes SimpleAggregateFunction(sum, UInt64),
    unlikes SimpleAggregateFunction(sum, UInt64),
    ticks SimpleAggregateFunction(sum, UInt64),
    watched_sessions AggregateFunction(uniq, String),
    completed_sessions AggregateFunction(uniq, String),
    session_max_position_ms AggregateFunction(maxMap, Array(UInt64), Array(UInt64)),
    video_duration_ms SimpleAggregateFunction(max, UInt64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (video_id, hour)
TTL hour + INTERVAL 2 YEAR
SETTINGS non_replicated_deduplication_window = 10000, ttl_only_drop_parts = 1;

CREATE MATERIALIZED VIEW IF NOT EXISTS `{db}`.video_stats_1m_views_mv TO `{db}`.video_stats_1m AS
SELECT
    video_id,
    toStartOfMinute(toDateTime(occurred_at, 'UTC')) AS minute,
    count() AS views,
    uniqState(user_id) AS unique_viewers,
    uniqState(session_id) AS view_sessions
FROM `{db}`.views
GROUP BY video_id, minute;

CREATE MATERIALIZED VIEW IF NOT EXISTS `{db}`.video_stats_1h_views_mv TO `{db}`.video_stats_1h AS
SELECT
    video_id,
    toStartOfHour(toDateTime(occurred_at, 'UTC')) AS hour,
    count() AS views,
    uniqState(user_id) AS unique_viewers,
    uniqState(session_id) AS view_sessions
FROM `{db}`.views
GROUP BY video_id, hour;

CREATE MATERIALIZED VIEW IF NOT EXISTS `{db}`.video_stats_1m_likes_mv TO `{db}`.video_stats_1m AS
SELECT
    video_id,
    toStartOfMinute(toDateTime(occurred_at, 'UTC')) AS minute,
    countIf(action = 'LIKE') AS likes,
    countIf(action = 'UNLIKE') AS unlikes
FROM `{db}`.likes
GROUP BY video_id, minute;

CREATE MATERIALIZED VIEW IF NOT EXISTS `{db}`.video_stats_1h_likes_mv TO `{db}`.video_stats_1h AS
SELECT
    video_id,
    toStartOfHour(toDateTime(occurred_at, 'UTC')) AS hour,
    countIf(action = 'LIKE') AS likes,
    countIf(action = 'UNLIKE') AS unlikes
FROM `{db}`.likes
GROUP BY video_id, hour;

CREATE MATERIALIZED VIEW IF NOT EXISTS `{db}`.video_stats_1m_ticks_mv TO `{db}`.video_stats_1m AS
SELECT
    video_id,
    toStartOfMinute(toDateTime(occurred_at, 'UTC')) AS minute,
    count() AS ticks,
    uniqState(session_id) AS watched_sessions,
    uniqIfState(session_id, duration_ms > 0 AND position_ms * 10 >= duration_ms * 9) AS completed_sessions,
    maxMapState([cityHash64(session_id)], [if(duration_ms > 0, least(position_ms, duration_ms), position_ms)])
        AS session_max_position_ms,
    max(duration_ms) AS video_duration_ms
FROM `{db}`.watch_ticks
GROUP BY video_id, minute;

CREATE MATERIALIZED VIEW IF NOT EXISTS `{db}`.video_stats_1h_ticks_mv TO `{db}`.video_stats_1h AS
SELECT
    video_id,
    toStartOfHour(toDateTime(occurred_at, 'UTC')) AS hour,
    count() AS ticks,
    uniqState(session_id) AS watched_sessions,
    uniqIfState(session_id, duration_ms > 0 AND position_ms * 10 >= duration_ms * 9) AS completed_sessions,
    maxMapState([cityHash64(session_id)], [if(duration_ms > 0, least(position_ms, duration_ms), position_ms)])
        AS session_max_position_ms,
    max(duration_ms) AS video_duration_ms
FROM `{db}`.watch_ticks
GROUP BY video_id, hour;
