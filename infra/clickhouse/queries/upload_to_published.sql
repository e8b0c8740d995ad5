-- upload_to_published: how long does a video take from upload to publication?
--
-- For each video uploaded in the period and published since: when it was uploaded (first
-- VideoUploaded), transcoded (first VideoTranscoded, NULL if none is stored), moderated (first
-- moderation decision, NULL if none) and published (first published_at), and the seconds from
-- upload to publication. min() over each video makes duplicate events harmless (no FINAL).
-- Videos not published yet are left out. Slowest first.
--
-- Parameters:
--   {since:DateTime('UTC')}  uploads from, e.g. '2025-06-01 00:00:00' (UTC), inclusive
--   {until:DateTime('UTC')}  uploads until, exclusive
--   {limit:UInt32}           how many videos to return
--
-- Columns: video_id, uploader_id, title, uploaded_at, transcoded_at, moderated_at,
-- published_at, upload_to_transcoded_s, upload_to_published_s.
SELECT
    u.video_id AS video_id,
    u.uploader_id AS uploader_id,
    u.title AS title,
    u.uploaded_at AS uploaded_at,
    t.transcoded_at AS transcoded_at,
    m.moderated_at AS moderated_at,
    p.published_at AS published_at,
    dateDiff('millisecond', u.uploaded_at, t.transcoded_at) / 1000 AS upload_to_transcoded_s,
    dateDiff('millisecond', u.uploaded_at, p.published_at) / 1000 AS upload_to_published_s
FROM
(
    SELECT video_id, min(occurred_at) AS uploaded_at,
           argMin(uploader_id, occurred_at) AS uploader_id, argMin(title, occurred_at) AS title
    FROM `{db}`.uploads
    WHERE occurred_at >= {since:DateTime('UTC')} AND occurred_at < {until:DateTime('UTC')}
    GROUP BY video_id
) AS u
INNER JOIN
(
    SELECT video_id, min(published_at) AS published_at
    FROM `{db}`.publications
    GROUP BY video_id
) AS p ON p.video_id = u.video_id
LEFT JOIN
(
    SELECT video_id, toNullable(min(occurred_at)) AS transcoded_at
    FROM `{db}`.transcodes
    GROUP BY video_id
) AS t ON t.video_id = u.video_id
LEFT JOIN
(
    SELECT video_id, toNullable(min(occurred_at)) AS moderated_at
    FROM `{db}`.moderation_decisions
    GROUP BY video_id
) AS m ON m.video_id = u.video_id
ORDER BY upload_to_published_s DESC, video_id
LIMIT {limit:UInt32}
