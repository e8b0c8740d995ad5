"""Events of the transcode worker are valid Avro and survive the ladder record's JSON round trip."""

from __future__ import annotations

from pathlib import Path

from processors.transcode.ffmpeg.ladder import choose_ladder
from processors.transcode.job import LadderOutput, RenditionOutput
from infra.s3.layout import ladder_record_key, new_video_id
from processors.transcode.pipeline import LadderRecord, failed_record, progress_record, transcoded_record
from schemas.codec import decode, encode

VIDEO = new_video_id()


def _output() -> LadderOutput:
    renditions = choose_ladder(1920, 1080, 0)
    return LadderOutput(
        directory=Path("/tmp/x"), duration_ms=30_000, source_width=1920, source_height=1080,
        renditions=tuple(RenditionOutput(r, f"{r.name}/index.m3u8") for r in renditions),
        master="master.m3u8", poster="thumb.jpg", storyboard="storyboard.jpg", storyboard_vtt="storyboard.vtt",
        files=("360p/index.m3u8", "master.m3u8"), total_bytes=1234,
    )


def test_the_transcoded_event_names_every_key_under_the_video_prefix() -> None:
    record = transcoded_record(VIDEO, "staging", _output(), "run1")
    assert record["master_playlist_key"] == f"videos/{VIDEO}/master.m3u8"
    assert [r["playlist_key"] for r in record["renditions"]] == [
        f"videos/{VIDEO}/360p/index.m3u8", f"videos/{VIDEO}/720p/index.m3u8", f"videos/{VIDEO}/1080p/index.m3u8"]
    name, decoded = decode(encode("VideoTranscoded", record))
    assert name == "VideoTranscoded" and decoded["renditions"][2]["height"] == 1080


def test_the_event_id_is_fixed_per_run_so_a_redelivery_repeats_it() -> None:
    first = transcoded_record(VIDEO, "staging", _output(), "run1")
    assert transcoded_record(VIDEO, "staging", _output(), "run1")["event_id"] == first["event_id"]
    assert transcoded_record(VIDEO, "staging", _output(), "run2")["event_id"] != first["event_id"]


def test_the_ladder_record_round_trips_to_the_same_event() -> None:
    record = LadderRecord("run1", transcoded_record(VIDEO, "staging", _output(), "run1"))
    again = LadderRecord.from_json(record.to_json())
    assert again == record
    assert encode("VideoTranscoded", again.event) == encode("VideoTranscoded", record.event)
    assert not ladder_record_key(VIDEO).startswith("videos/")  # never copied to the public bucket


def test_failure_and_progress_events_are_valid() -> None:
    encode("TranscodeFailed", failed_record(VIDEO, "x" * 5000, True, 2))
    encode("TranscodeProgress", progress_record(VIDEO, 42))
