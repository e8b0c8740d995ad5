"""The transcoding core for real: ffmpeg on generated clips, outputs read back with PyAV and m3u8, and
the ladder uploaded to the real S3 server.

Clips come from ffmpeg's lavfi test sources (testsrc2 + sine), a few seconds long, encoded with the
ultrafast preset so that the module stays well under a minute and a half on two cores.
"""

from __future__ import annotations

import math
import re
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import av
import m3u8
import pytest

from infra.s3.buckets import s3_client
from infra.s3.layout import new_video_id
from processors.transcode.ffmpeg.probe import probe
from common.settings import Settings
from processors.transcode.errors import (
    CorruptSourceError,
    SourceMissingError,
    SourceTooLargeError,
    TransientTranscodeError,
)
from processors.transcode.ffmpeg.binary import ffmpeg_binary
from processors.transcode.job import LadderOutput, _run, transcode_source
from processors.transcode.storage import IMMUTABLE, SHORT_LIVED, download_source, upload_ladder

pytestmark = pytest.mark.integration

PRESET = "ultrafast"
SEGMENT_SECONDS = 4


def ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_binary(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y", *args], check=True)


def make_clip(path: Path, size: str, seconds: float, audio: bool, *extra: str) -> Path:
    args = ["-f", "lavfi", "-i", f"testsrc2=size={size}:rate=30:duration={seconds}"]
    if audio:
        args += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}", "-c:a", "aac"]
    ffmpeg(*args, "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", *extra, str(path))
    return path


def first_half(source: Path, dest: Path) -> Path:
    data = source.read_bytes()
    dest.write_bytes(data[: len(data) // 2])
    return dest


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("clips")
    small = make_clip(folder / "small.mp4", "426x240", 6, True)
    small_faststart = make_clip(folder / "small-faststart.mp4", "426x240", 6, True, "-movflags", "+faststart")
    landscape_360 = make_clip(folder / "landscape-360.mp4", "640x360", 5, True)
    rotated = folder / "rotated.mp4"
    # A phone held upright: landscape pixels plus a display matrix, the way cameras store it.
    ffmpeg("-display_rotation:v:0", "90", "-i", str(landscape_360), "-c", "copy", str(rotated))
    audio_only = folder / "audio.m4a"
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=3", "-c:a", "aac", str(audio_only))
    random_bytes = folder / "random.mp4"
    random_bytes.write_bytes(uuid.uuid4().bytes * 20_000)
    text = folder / "notes.mp4"
    text.write_text("this is not a video\n" * 100)
    return {
        "landscape": make_clip(folder / "landscape.mp4", "1920x1080", 7, True),
        "portrait": make_clip(folder / "portrait.mp4", "720x1280", 7, False),
        "small": small,
        "rotated": rotated,
        # mp4 writes its index (moov) last: the first half has none.
        "truncated": first_half(small, folder / "truncated.mp4"),
        # With the index first, the first half is a readable video whose data stops midway.
        "truncated_faststart": first_half(small_faststart, folder / "truncated-faststart.mp4"),
        "audio_only": audio_only,
        "random": random_bytes,
        "text": text,
    }


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("work")


def transcode(clip: Path, workdir: Path, progress: list[float] | None = None) -> LadderOutput:
    return transcode_source(clip, workdir, new_video_id(), info=probe(clip), preset=PRESET,
                            segment_seconds=SEGMENT_SECONDS, timeout_s=120,
                            on_progress=None if progress is None else progress.append)


@pytest.fixture(scope="module")
def landscape(clips: dict[str, Path], workdir: Path) -> tuple[LadderOutput, list[float]]:
    progress: list[float] = []
    return transcode(clips["landscape"], workdir, progress), progress


@pytest.fixture(scope="module")
def portrait(clips: dict[str, Path], workdir: Path) -> LadderOutput:
    return transcode(clips["portrait"], workdir)


def relative(uri: str) -> bool:
    return "://" not in uri and not uri.startswith("/") and ".." not in uri.split("/")


def decode(path: Path) -> tuple[list[av.VideoFrame], bool]:
    """Every video frame of a file, and whether it has an audio stream."""
    with av.open(str(path)) as container:
        has_audio = bool(container.streams.audio)
        return list(container.decode(video=0)), has_audio


def check_ladder(output: LadderOutput, duration_s: float, has_audio: bool, sizes: list[tuple[int, int]]) -> None:
    directory = output.directory
    assert [(r.rendition.width, r.rendition.height) for r in output.renditions] == sizes
    assert abs(output.duration_ms - duration_s * 1000) <= 500

    master = m3u8.load(str(directory / output.master))
    assert output.files[-1] == output.master and not list(directory.glob(".*"))
    assert [p.uri for p in master.playlists] == [r.playlist for r in output.renditions]
    extinfs = []
    for variant, entry in zip(master.playlists, output.renditions):
        info = variant.stream_info
        assert relative(variant.uri)
        assert info.resolution == (entry.rendition.width, entry.rendition.height)
        assert info.bandwidth == entry.rendition.bandwidth > 0
        assert info.codecs == entry.rendition.codecs
        assert info.codecs.startswith("avc1.") and ("mp4a.40.2" in info.codecs) == has_audio

        playlist = m3u8.load(str(directory / variant.uri))
        assert playlist.is_endlist and playlist.playlist_type == "vod"
        assert all(relative(s.uri) and re.fullmatch(r"seg_\d{5}\.ts", s.uri) for s in playlist.segments)
        assert all(s.duration <= SEGMENT_SECONDS + 0.1 for s in playlist.segments)
        assert abs(sum(s.duration for s in playlist.segments) - duration_s) <= 0.5
        extinfs.append([round(s.duration, 3) for s in playlist.segments])

        # The first and last segments decode on their own, at the rendition's size, from a keyframe.
        segment_dir = (directory / variant.uri).parent
        first_frames, first_audio = decode(segment_dir / playlist.segments[0].uri)
        last_frames, last_audio = decode(segment_dir / playlist.segments[-1].uri)
        for frames in (first_frames, last_frames):
            assert frames and frames[0].key_frame
            assert {(f.width, f.height) for f in frames} == {info.resolution}
        assert first_audio == last_audio == has_audio
        span = last_frames[-1].time - first_frames[0].time + 1 / 30
        assert abs(span - duration_s) <= 0.5
    assert all(e == extinfs[0] for e in extinfs), "segments are not aligned across renditions"

    with av.open(str(directory / output.poster)) as poster:
        stream = poster.streams.video[0]
        assert stream.width <= 1280
        assert (stream.width > stream.height) == (output.source_width > output.source_height)
    tiles = math.ceil(duration_s)  # one tile per second below 100 s
    columns = min(10, tiles)
    tile_h = 2 * round(160 * sizes[0][1] / sizes[0][0] / 2)
    with av.open(str(directory / output.storyboard)) as sprite:
        stream = sprite.streams.video[0]
        assert (stream.width, stream.height) == (columns * 160, math.ceil(tiles / columns) * tile_h)
    vtt = (directory / output.storyboard_vtt).read_text()
    assert vtt.startswith("WEBVTT") and vtt.count("-->") == tiles and f"#xywh=0,0,160,{tile_h}" in vtt

    assert output.total_bytes == sum((directory / name).stat().st_size for name in output.files)
    assert sorted(output.files) == sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*")
                                          if p.is_file())


def test_1080p_landscape_with_audio(landscape: tuple[LadderOutput, list[float]]) -> None:
    output, _ = landscape
    assert [r.rendition.name for r in output.renditions] == ["360p", "720p", "1080p"]
    assert (output.source_width, output.source_height) == (1920, 1080)
    check_ladder(output, 7.0, True, [(640, 360), (1280, 720), (1920, 1080)])


def test_progress_rises_to_100(landscape: tuple[LadderOutput, list[float]]) -> None:
    _, progress = landscape
    assert progress == sorted(progress) and len(set(progress)) == len(progress)
    assert progress[-1] == 100.0 and len(progress) >= 3


def test_720x1280_portrait_without_audio(portrait: LadderOutput) -> None:
    assert (portrait.source_width, portrait.source_height) == (720, 1280)
    check_ladder(portrait, 7.0, False, [(360, 640), (720, 1280)])


def test_a_small_source_gets_one_rendition_and_no_upscale(clips: dict[str, Path], workdir: Path) -> None:
    output = transcode(clips["small"], workdir)
    assert [r.rendition.name for r in output.renditions] == ["240p"]
    check_ladder(output, 6.0, True, [(426, 240)])


def test_a_display_matrix_makes_a_portrait_ladder(clips: dict[str, Path], workdir: Path) -> None:
    output = transcode(clips["rotated"], workdir)
    assert (output.source_width, output.source_height) == (360, 640)
    check_ladder(output, 5.0, True, [(360, 640)])


def test_a_truncated_mp4_without_its_index_is_corrupt(clips: dict[str, Path], workdir: Path) -> None:
    before = set(workdir.iterdir())
    with pytest.raises(CorruptSourceError) as raised:
        transcode(clips["truncated"], workdir)
    assert not raised.value.retryable and raised.value.reason
    assert set(workdir.iterdir()) == before


def test_a_truncated_mp4_with_its_index_first_gives_the_part_that_exists(clips: dict[str, Path],
                                                                          workdir: Path) -> None:
    # ffmpeg decodes up to where the data stops and ends normally: the ladder is just shorter.
    output = transcode(clips["truncated_faststart"], workdir)
    assert 1000 < output.duration_ms < 5000
    check_ladder(output, output.duration_ms / 1000, True, [(426, 240)])


@pytest.mark.parametrize("name", ["random", "text", "audio_only"])
def test_files_that_are_not_video_are_corrupt_and_not_retryable(clips: dict[str, Path], workdir: Path,
                                                                name: str) -> None:
    before = set(workdir.iterdir())
    with pytest.raises(CorruptSourceError) as raised:
        transcode(clips[name], workdir)
    assert raised.value.retryable is False
    assert set(workdir.iterdir()) == before


def test_a_timeout_kills_ffmpeg_is_retryable_and_leaves_nothing(clips: dict[str, Path], workdir: Path) -> None:
    before = set(workdir.iterdir())
    started = time.monotonic()
    with pytest.raises(TransientTranscodeError, match="timed out") as raised:
        transcode_source(clips["landscape"], workdir, new_video_id(), info=probe(clips["landscape"]),
                         preset="veryfast", timeout_s=1.0)
    assert raised.value.retryable
    assert time.monotonic() - started < 5
    assert set(workdir.iterdir()) == before


def test_a_failing_ffmpeg_reports_the_end_of_its_stderr(tmp_path: Path) -> None:
    with pytest.raises(CorruptSourceError, match="No such file or directory"):
        _run([ffmpeg_binary(), "-nostdin", "-i", str(tmp_path / "missing.mp4"), "-f", "null", "-"],
             time.monotonic() + 30, 30)


# --- storage against the real S3 server ------------------------------------------------------------

def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.fixture(scope="module")
def s3(stack: Settings) -> Iterator[Any]:
    yield s3_client(stack)


def test_upload_ladder_to_the_private_staging_bucket(stack: Settings, s3: Any, portrait: LadderOutput) -> None:
    bucket, video_id = stack.s3_staging_bucket, new_video_id()
    prefix = f"videos/{video_id}/"
    keys = upload_ladder(s3, bucket, video_id, portrait)
    assert keys == [prefix + name for name in portrait.files] and keys[-1] == prefix + "master.m3u8"
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]
    assert {o["Key"] for o in listed} == set(keys)
    assert sum(o["Size"] for o in listed) == portrait.total_bytes

    master = s3.get_object(Bucket=bucket, Key=prefix + "master.m3u8")
    assert (master["ContentType"], master["CacheControl"]) == ("application/vnd.apple.mpegurl", SHORT_LIVED)
    parsed = m3u8.loads(master["Body"].read().decode())
    assert [p.uri for p in parsed.playlists] == ["360p/index.m3u8", "720p/index.m3u8"]
    for entry in portrait.renditions:
        variant = s3.get_object(Bucket=bucket, Key=prefix + entry.playlist)
        assert variant["ContentType"] == "application/vnd.apple.mpegurl"
        body = variant["Body"].read()
        assert body == (portrait.directory / entry.playlist).read_bytes()
        first_segment = m3u8.loads(body.decode()).segments[0].uri
        head = s3.head_object(Bucket=bucket, Key=f"{prefix}{entry.rendition.name}/{first_segment}")
        assert (head["ContentType"], head["CacheControl"]) == ("video/mp2t", IMMUTABLE)
    for name, content_type, cache in [("thumb.jpg", "image/jpeg", IMMUTABLE),
                                      ("storyboard.jpg", "image/jpeg", IMMUTABLE),
                                      ("storyboard.vtt", "text/vtt", SHORT_LIVED)]:
        head = s3.head_object(Bucket=bucket, Key=prefix + name)
        assert (head["ContentType"], head["CacheControl"]) == (content_type, cache)

    # Staging is private: no anonymous read, even knowing the key.
    assert http_status(f"{stack.s3_endpoint}/{bucket}/{prefix}master.m3u8") == 403

    # A re-run writes the same keys again.
    assert upload_ladder(s3, bucket, video_id, portrait) == keys
    assert len(s3.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]) == len(keys)


def test_no_master_playlist_when_part_of_the_ladder_fails(stack: Settings, s3: Any, portrait: LadderOutput) -> None:
    bucket, video_id = stack.s3_staging_bucket, new_video_id()
    broken = replace(portrait, files=("360p/seg_99999.ts", *portrait.files))
    with pytest.raises(OSError):
        upload_ladder(s3, bucket, video_id, broken)
    assert s3.list_objects_v2(Bucket=bucket, Prefix=f"videos/{video_id}/master.m3u8")["KeyCount"] == 0


def test_upload_errors_are_retryable(s3: Any, portrait: LadderOutput) -> None:
    with pytest.raises(TransientTranscodeError) as raised:
        upload_ladder(s3, f"missing-{uuid.uuid4().hex[:8]}", new_video_id(), portrait)
    assert raised.value.retryable


def test_download_source_streams_within_the_limit(stack: Settings, s3: Any, clips: dict[str, Path],
                                                  tmp_path: Path) -> None:
    data = clips["small"].read_bytes()
    key = f"uploads/{uuid.uuid4().hex}.mp4"
    s3.put_object(Bucket=stack.s3_uploads_bucket, Key=key, Body=data, ContentType="video/mp4")

    dest = download_source(s3, stack.s3_uploads_bucket, key, tmp_path / "source.mp4", max_bytes=len(data))
    assert dest.read_bytes() == data

    with pytest.raises(SourceTooLargeError) as raised:
        download_source(s3, stack.s3_uploads_bucket, key, tmp_path / "big.mp4", max_bytes=len(data) - 1)
    assert not raised.value.retryable
    assert sorted(p.name for p in tmp_path.iterdir()) == ["source.mp4"]

    with pytest.raises(SourceMissingError) as missing:
        download_source(s3, stack.s3_uploads_bucket, f"uploads/{uuid.uuid4().hex}", tmp_path / "x.mp4", 10**9)
    assert not missing.value.retryable


class SmallerHead:
    """The real client, except that HEAD reports a size under the limit (the object was replaced after)."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def head_object(self, **kwargs: Any) -> dict[str, Any]:
        return {**self._client.head_object(**kwargs), "ContentLength": 1}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def test_download_source_stops_a_stream_that_passes_the_limit(stack: Settings, s3: Any, tmp_path: Path) -> None:
    key = f"uploads/{uuid.uuid4().hex}.mp4"
    s3.put_object(Bucket=stack.s3_uploads_bucket, Key=key, Body=b"\0" * (3 * 1024 * 1024))
    with pytest.raises(SourceTooLargeError, match="grew"):
        download_source(SmallerHead(s3), stack.s3_uploads_bucket, key, tmp_path / "source.mp4",
                        max_bytes=2 * 1024 * 1024)
    assert list(tmp_path.iterdir()) == []
