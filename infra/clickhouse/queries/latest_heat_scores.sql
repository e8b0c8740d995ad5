-- latest_heat_scores: which videos are hottest now, and why?
--
-- The newest heat score per video for one window, from heat_scores_latest (a row per
-- (window, video), kept by a materialized view; FINAL collapses rows not merged yet). Each row
-- carries the inputs the score was computed from. Videos whose newest score is older than
-- {max_age_minutes} (nothing happened to them since) are left out. Hottest first.
--
-- Parameters:
--   {window:String}            '1h' or '24h'
--   {max_age_minutes:UInt32}   leave out scores whose window ended longer ago than this
--   {limit:UInt32}             how many videos to return
--
-- Columns: video_id, window, window_end, score, views, unique_viewers, net_likes,
-- completion_rate, rewatch_rate, avg_watched_fraction.
SELECT
    video_id, `window`, window_end, score, views, unique_viewers, net_likes,
    completion_rate, rewatch_rate, avg_watched_fraction
FROM `{db}`.heat_scores_latest FINAL
WHERE `window` = {window:String}
  AND window_end >= now64(3) - toIntervalMinute({max_age_minutes:UInt32})
ORDER BY score DESC, video_id
LIMIT {limit:UInt32}
