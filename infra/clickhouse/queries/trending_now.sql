-- trending_now: which videos are watched most right now?
--
-- The window is the last {minutes} minute buckets: the current, partial minute and the
-- minutes - 1 before it (and any later bucket, from clocks ahead of ours). Whole hours inside the
-- window are read from the hourly rollup video_stats_1h, only the minutes at the edges from the
-- per-minute rollup video_stats_1m: a 24-hour window reads about 23 hour rows and at most 118
-- minute rows per video instead of 1,440. Two passes: the views (a plain sum, cheap) pick the top
-- {limit} videos and every video tied with the last of them; only those merge their uniq and
-- maxMap states (the expensive part). The result equals reading every minute bucket of every
-- video (the same events feed both rollups, the uniq and maxMap states merge across them, ties
-- are kept for the tie-breaks); beyond the minute rollup's 30 days the hours are still there.
-- Ranked by views, then unique viewers, then video_id.
--
-- Parameters:
--   {minutes:UInt32}  window length in whole minutes
--   {limit:UInt32}    how many videos to return
--
-- Columns: video_id, views, unique_viewers, likes, unlikes, net_likes, completed_sessions,
-- watch_time_ms (sum over sessions of the furthest position reached within the window).
-- views/likes/unlikes count stored events (the sink stores an event_id once); the distinct counts
-- are not affected by duplicates.
WITH
    toStartOfMinute(now('UTC')) + 60 - toIntervalMinute({minutes:UInt32}) AS window_start,
    -- the whole hours inside the window: [hours_from, hours_until), empty when from >= until
    toStartOfHour(window_start) + if(toStartOfHour(window_start) = window_start, 0, 3600) AS hours_from,
    toStartOfHour(toStartOfMinute(now('UTC')) + 60) AS hours_until,
    in_window AS
    (
        SELECT video_id, views, unique_viewers, likes, unlikes, completed_sessions, session_max_position_ms
        FROM `{db}`.video_stats_1h
        WHERE hour >= hours_from AND hour < hours_until
        UNION ALL
        SELECT video_id, views, unique_viewers, likes, unlikes, completed_sessions, session_max_position_ms
        FROM `{db}`.video_stats_1m
        WHERE minute >= window_start AND (minute < hours_from OR minute >= hours_until)
    ),
    candidates AS
    (
        SELECT video_id FROM in_window
        GROUP BY video_id
        ORDER BY sum(views) DESC
        LIMIT {limit:UInt32} WITH TIES
    )
SELECT
    video_id,
    sum(views) AS views,
    uniqMerge(unique_viewers) AS unique_viewers,
    sum(likes) AS likes,
    sum(unlikes) AS unlikes,
    toInt64(likes) - toInt64(unlikes) AS net_likes,
    uniqMerge(completed_sessions) AS completed_sessions,
    arraySum(maxMapMerge(session_max_position_ms).2) AS watch_time_ms
FROM in_window
WHERE video_id IN candidates
GROUP BY video_id
ORDER BY views DESC, unique_viewers DESC, video_id
LIMIT {limit:UInt32}
