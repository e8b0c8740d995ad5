-- rewatch_rate: which videos do viewers come back to?
--
-- A re-watching viewer of a video started two or more sessions of it (distinct session_id
-- among their views) in the period. This needs per-viewer session counts, which a per-bucket
-- rollup cannot give (a viewer's sessions fall into different buckets), so the query reads
-- the base table views. It is exact: uniqExact(session_id) is not affected by duplicate
-- events, so no FINAL is needed. Ranked by rewatch_rate, then viewers, then video_id.
--
-- Parameters:
--   {since:DateTime('UTC')}     start of the period, e.g. '2025-06-01 00:00:00' (UTC), inclusive
--   {until:DateTime('UTC')}     end of the period, exclusive
--   {min_viewers:UInt32}        leave out videos with fewer distinct viewers (1 keeps all)
--   {limit:UInt32}              how many videos to return
--
-- Columns: video_id, viewers, sessions, rewatchers, rewatch_rate (rewatchers / viewers).
SELECT
    video_id,
    count() AS viewers,
    sum(user_sessions) AS sessions,
    countIf(user_sessions >= 2) AS rewatchers,
    rewatchers / viewers AS rewatch_rate
FROM
(
    SELECT video_id, user_id, uniqExact(session_id) AS user_sessions
    FROM `{db}`.views
    WHERE occurred_at >= {since:DateTime('UTC')} AND occurred_at < {until:DateTime('UTC')}
    GROUP BY video_id, user_id
)
GROUP BY video_id
HAVING viewers >= {min_viewers:UInt32}
ORDER BY rewatch_rate DESC, viewers DESC, video_id
LIMIT {limit:UInt32}
