-- trending_now: which videos are watched most right now?
--
-- Reads the per-minute rollup video_stats_1m (cheap: no base-table scan). The window is the
-- last {minutes} minute buckets: the current, partial minute and the minutes - 1 before it.
-- Ranked by views, then unique viewers, then video_id.
--
-- Parameters:
--   {minutes:UInt32}  window length in whole minutes (the rollup keeps 30 days)
--   {limit:UInt32}    how many videos to return
--
-- Columns: video_id, views, unique_viewers, likes, unlikes, net_likes, completed_sessions,
-- watch_time_ms (sum over sessions of the furthest position reached within the window).
-- views/likes/unlikes count inserted events (a duplicate that slipped past insert
-- deduplication counts twice); the distinct counts are not affected by duplicates.
SELECT
    video_id,
    sum(views) AS views,
    uniqMerge(unique_viewers) AS unique_viewers,
    sum(likes) AS likes,
    sum(unlikes) AS unlikes,
    toInt64(likes) - toInt64(unlikes) AS net_likes,
    uniqMerge(completed_sessions) AS completed_sessions,
    arraySum(maxMapMerge(session_max_position_ms).2) AS watch_time_ms
FROM `{db}`.video_stats_1m
WHERE minute > now() - toIntervalMinute({minutes:UInt32})
GROUP BY video_id
ORDER BY views DESC, unique_viewers DESC, video_id
LIMIT {limit:UInt32}
