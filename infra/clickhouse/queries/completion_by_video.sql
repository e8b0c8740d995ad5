-- completion_by_video: how far do viewers get into each video, and how many finish it?
--
-- Reads the hourly rollup video_stats_1h over the hour buckets that start in
-- [toStartOfHour({since}), {until}) (whole hours: a since inside an hour includes that hour).
-- A session is completed when one of its ticks reached 90 % of the video (position_ms >=
-- 0.9 * duration_ms); completion_rate is completed sessions over sessions started (distinct
-- session_id among views). The distinct counts are not affected by duplicate events.
-- Ranked by sessions started, then video_id. Two passes: sessions started pick the top {limit}
-- videos and every video tied with the last of them; only those merge the other states (the
-- maxMap of watch time is the expensive one). The result equals one pass over every video.
--
-- Parameters:
--   {since:DateTime('UTC')}  start of the period, e.g. '2025-06-01 00:00:00' (UTC)
--   {until:DateTime('UTC')}  end of the period (exclusive)
--   {limit:UInt32}           how many videos to return
--
-- Columns: video_id, sessions (started, from views), watched_sessions (sent at least one tick),
-- completed_sessions, completion_rate (completed / sessions, capped at 1: a session that
-- started before {since} can complete inside the period), watch_time_ms (sum over sessions of
-- the furthest position reached), video_duration_ms, avg_watched_fraction (watch_time_ms over
-- watched_sessions * video_duration_ms).
WITH
    in_period AS
    (
        SELECT video_id, view_sessions, watched_sessions, completed_sessions, session_max_position_ms,
               video_duration_ms
        FROM `{db}`.video_stats_1h
        WHERE hour >= toStartOfHour({since:DateTime('UTC')}) AND hour < {until:DateTime('UTC')}
    ),
    candidates AS
    (
        -- a video left out by the HAVING below has no sessions: it can only tie at 0
        SELECT video_id FROM in_period
        GROUP BY video_id
        ORDER BY uniqMerge(view_sessions) DESC
        LIMIT {limit:UInt32} WITH TIES
    )
SELECT
    video_id,
    uniqMerge(view_sessions) AS sessions,
    uniqMerge(watched_sessions) AS watched_sessions,
    uniqMerge(completed_sessions) AS completed_sessions,
    if(sessions = 0, 0, least(1, completed_sessions / sessions)) AS completion_rate,
    arraySum(maxMapMerge(session_max_position_ms).2) AS watch_time_ms,
    max(video_duration_ms) AS video_duration_ms,
    if(watched_sessions = 0 OR video_duration_ms = 0, 0,
       watch_time_ms / (watched_sessions * video_duration_ms)) AS avg_watched_fraction
FROM in_period
WHERE video_id IN candidates
GROUP BY video_id
HAVING sessions > 0 OR watched_sessions > 0
ORDER BY sessions DESC, video_id
LIMIT {limit:UInt32}
