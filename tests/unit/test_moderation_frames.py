"""Frame sampling commands and the moderation record (pure parts)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from infra.s3.layout import InvalidVideoId, moderation_poster_key, moderation_record_key, new_video_id
from processors.moderation.frames import FrameError, blur_command, sample_command, segment_uris
from processors.moderation.moderate import ModerationRecord
from schemas.codec import encode
from schemas.envelope import new_record


def test_the_sampling_command_takes_one_frame_every_interval_from_the_hls_rendition() -> None:
    argv = sample_command("ffmpeg", Path("/w/360p/index.m3u8"), Path("/w/frames"), 2.5)
    assert argv[argv.index("-f") + 1] == "hls"  # the demuxer is pinned
    assert argv[argv.index("-i") + 1] == "/w/360p/index.m3u8"
    assert argv[argv.index("-vf") + 1] == "fps=1/2.5:round=down"
    assert argv[-1] == "/w/frames/frame_%05d.jpg"
    with pytest.raises(ValueError):
        sample_command("ffmpeg", Path("a"), Path("b"), 0)
    assert blur_command("ffmpeg", Path("a.jpg"), Path("b.jpg"))[-1] == "b.jpg"


def test_segment_uris_are_plain_relative_names() -> None:
    playlist = "#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXTINF:4.0,\nseg_00001.ts\n#EXTINF:2.0,\nseg_00002.ts\n"
    assert segment_uris(playlist) == ["seg_00001.ts", "seg_00002.ts"]
    for bad in ("../../ladders/x.json", "/etc/passwd", "http://169.254.169.254/latest"):
        with pytest.raises(FrameError, match="not a plain relative name"):
            segment_uris(f"#EXTM3U\n#EXTINF:4.0,\n{bad}\n")


def test_moderation_keys_live_outside_the_published_prefix() -> None:
    video_id = new_video_id()
    assert moderation_record_key(video_id) == f"moderation/{video_id}.json"
    assert moderation_poster_key(video_id) == f"moderation/{video_id}.poster.jpg"
    with pytest.raises(InvalidVideoId):
        moderation_record_key("../x")


def test_the_record_keeps_its_events_byte_for_byte() -> None:
    video_id = new_video_id()
    event = new_record("ModerationReviewRequested", "moderation", {
        "video_id": video_id, "decision_event_id": uuid.uuid4(), "staging_bucket": "s",
        "master_playlist_key": f"videos/{video_id}/master.m3u8", "premium": True, "priority": "HIGH",
        "reasons": ["r"], "not_checked": []}, occurred_at=datetime(2026, 1, 1, tzinfo=UTC))
    record = ModerationRecord(video_id, str(uuid.uuid4()), "NEEDS_REVIEW", "rekognition", True, "k",
                              [encode("ModerationReviewRequested", event)], {"reasons": ["r"]})
    again = ModerationRecord.from_json(record.to_json())
    assert again == record
    [(schema, decoded)] = again.decoded()
    assert schema == "ModerationReviewRequested" and decoded["event_id"] == event["event_id"]
