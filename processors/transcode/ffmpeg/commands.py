"""ffmpeg argument lists for the HLS ladder, the poster and the storyboard. Pure: no I/O, no processes.

Plain functions returning argv lists (the style of PeerTube's packages/ffmpeg) so that tests can
read exactly what runs and the job decides how to run it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from infra.s3.layout import MASTER_PLAYLIST
from processors.transcode.ffmpeg.ladder import DEFAULT_FPS, MAX_FPS, Rendition

VARIANT_PLAYLIST = "index.m3u8"
SEGMENT_PATTERN = "seg_%05d.ts"
STORYBOARD_SPRITE = "storyboard.jpg"
STORYBOARD_VTT = "storyboard.vtt"

# The poster comes from here into the video: past intros that fade in from black.
_POSTER_POSITION = 0.15
# Frames that the thumbnail filter compares to pick the most representative one (~2 s at 25 fps).
_POSTER_CANDIDATES = 50
_POSTER_MAX_WIDTH = 1280
_POSTER_QUALITY = 3  # mjpeg qscale: 2 best .. 31 worst
_STORYBOARD_QUALITY = 5
_STORYBOARD_MAX_TILES = 100
_STORYBOARD_TILE_WIDTH = 160
_STORYBOARD_MAX_COLUMNS = 10
# A mistyped preset would make ffmpeg fail, which the job would blame on the source.
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")


def variant_playlist(rendition: Rendition) -> str:
    """A rendition's media playlist, relative to the output directory (and to master.m3u8)."""
    return f"{rendition.name}/{VARIANT_PLAYLIST}"


def _input(source: Path | str, input_format: str | None) -> list[str]:
    # Pinning the demuxer that the probe accepted keeps ffmpeg from re-guessing a crafted upload
    # as an HLS or concat playlist that reads other files.
    return (["-f", input_format] if input_format else []) + ["-i", str(source)]


def _base(ffmpeg: str) -> list[str]:
    return [ffmpeg, "-hide_banner", "-nostdin", "-y", "-loglevel", "warning"]


def hls_ladder_command(ffmpeg: str, source: Path, outdir: Path, renditions: Sequence[Rendition], has_audio: bool,
                       fps: float, segment_seconds: int = 4, preset: str = "veryfast", *,
                       input_format: str | None = None, master_name: str = MASTER_PLAYLIST) -> list[str]:
    """One ffmpeg run that decodes the source once and encodes every rendition into `outdir`.

    Writes `{name}/index.m3u8` with `{name}/seg_00001.ts`... per rendition and `master_name`
    (ffmpeg measures each variant's peak segment bitrate for BANDWIDTH and reads CODECS from the
    encoded SPS). Segments start on the same frames in every rendition: a keyframe is forced every
    `segment_seconds` and scene-cut keyframes are off, so players can switch at any boundary.
    Progress goes to stdout as `-progress` key=value lines.
    """
    if not renditions:
        raise ValueError("a ladder needs at least one rendition")
    if preset not in X264_PRESETS:
        raise ValueError(f"unknown x264 preset {preset!r}")
    count = len(renditions)
    rate = min(fps, MAX_FPS) if fps > 0 else DEFAULT_FPS
    gop = max(1, round(rate * segment_seconds))
    # Decode and (if needed) drop frames once, then scale per rendition; setsar=1 because the
    # ladder sizes are already in square pixels.
    head = "[0:V:0]" + (f"fps={MAX_FPS:g}," if fps > MAX_FPS else "") + f"split={count}"
    head += "".join(f"[s{i}]" for i in range(count))
    branches = [f"[s{i}]scale={r.width}:{r.height},setsar=1,format=yuv420p[v{i}]" for i, r in enumerate(renditions)]
    argv = _base(ffmpeg) + _input(source, input_format) + ["-filter_complex", ";".join([head, *branches])]
    for i in range(count):
        argv += ["-map", f"[v{i}]"]
    if has_audio:
        argv += ["-map", "0:a:0"] * count
    argv += ["-c:v", "libx264", "-preset", preset]
    for i, r in enumerate(renditions):
        argv += [f"-profile:v:{i}", r.profile, f"-level:v:{i}", r.level, f"-b:v:{i}", str(r.video_bitrate),
                 f"-maxrate:v:{i}", str(r.maxrate), f"-bufsize:v:{i}", str(r.bufsize)]
    argv += ["-g", str(gop), "-keyint_min", str(gop), "-sc_threshold", "0",
             "-force_key_frames", f"expr:gte(t,n_forced*{segment_seconds})"]
    if has_audio:
        # Stereo AAC-LC: what every HLS client decodes (5.1 sources are downmixed).
        argv += ["-c:a", "aac", "-ac", "2"]
        for i, r in enumerate(renditions):
            argv += [f"-b:a:{i}", str(r.audio_bitrate)]
    stream_map = " ".join(
        f"v:{i},a:{i},name:{r.name}" if has_audio else f"v:{i},name:{r.name}" for i, r in enumerate(renditions))
    argv += [
        "-f", "hls",
        "-hls_time", str(segment_seconds),
        "-hls_playlist_type", "vod",
        "-hls_flags", "independent_segments",
        "-hls_segment_type", "mpegts",
        "-start_number", "1",
        "-hls_segment_filename", str(outdir / "%v" / SEGMENT_PATTERN),
        "-master_pl_name", master_name,
        "-var_stream_map", stream_map,
        "-progress", "pipe:1", "-nostats",
        str(outdir / "%v" / VARIANT_PLAYLIST),
    ]
    return argv


def poster_command(ffmpeg: str, source: Path, dest: Path, duration_s: float, *,
                   input_format: str | None = None) -> list[str]:
    """A representative frame (not the black first one) as a JPEG at most 1280 pixels wide."""
    seek = duration_s * _POSTER_POSITION
    # Scale before `thumbnail`: it holds all candidate frames in memory.
    video_filter = f"scale='min({_POSTER_MAX_WIDTH},iw)':-2,thumbnail={_POSTER_CANDIDATES}"
    return _base(ffmpeg) + ["-ss", f"{seek:.3f}"] + _input(source, input_format) + [
        "-map", "0:V:0", "-vf", video_filter, "-frames:v", "1", "-q:v", str(_POSTER_QUALITY), "-update", "1",
        str(dest)]


@dataclass(frozen=True)
class StoryboardLayout:
    interval_s: int  # one tile per this many seconds
    tiles: int
    columns: int
    rows: int
    tile_width: int
    tile_height: int


def storyboard_tile_count(duration_s: float, interval_s: int) -> int:
    # The slack keeps a float duration like 8.0004 s from getting a sub-millisecond last cue.
    return max(1, math.ceil(duration_s / interval_s - 1e-3))


def storyboard_layout(duration_s: float, width: int, height: int) -> StoryboardLayout:
    """At most ~100 tiles, 160 pixels wide, 10 per row, for a video shown at `width` x `height`."""
    interval = max(1, math.ceil(duration_s / _STORYBOARD_MAX_TILES))
    tiles = storyboard_tile_count(duration_s, interval)
    columns = min(_STORYBOARD_MAX_COLUMNS, tiles)
    tile_height = max(2, 2 * round(_STORYBOARD_TILE_WIDTH * height / width / 2))
    return StoryboardLayout(interval, tiles, columns, math.ceil(tiles / columns), _STORYBOARD_TILE_WIDTH, tile_height)


def storyboard_command(ffmpeg: str, source: Path, dest: Path, layout: StoryboardLayout, *,
                       input_format: str | None = None) -> list[str]:
    """One sprite JPEG: the first frame of every `interval_s` window, tiled row by row."""
    n = layout.interval_s
    # First frame whose window index is past the previously taken one: tile i shows second i*n.
    select = f"select='isnan(prev_selected_t)+gte(floor(t/{n})-floor(prev_selected_t/{n}),1)'"
    video_filter = (f"{select},scale={layout.tile_width}:{layout.tile_height},setsar=1,"
                    f"tile={layout.columns}x{layout.rows}")
    return _base(ffmpeg) + _input(source, input_format) + [
        "-map", "0:V:0", "-vf", video_filter, "-frames:v", "1", "-q:v", str(_STORYBOARD_QUALITY), "-update", "1",
        str(dest)]


def storyboard_vtt(duration_s: float, interval_s: int, tile_w: int, tile_h: int, columns: int,
                   sprite_name: str) -> str:
    """WebVTT thumbnail track: one cue per tile, pointing into the sprite with a media fragment."""
    lines = ["WEBVTT", ""]
    for i in range(storyboard_tile_count(duration_s, interval_s)):
        start, end = i * interval_s, min((i + 1) * interval_s, duration_s)
        x, y = (i % columns) * tile_w, (i // columns) * tile_h
        lines += [f"{_vtt_time(start)} --> {_vtt_time(end)}", f"{sprite_name}#xywh={x},{y},{tile_w},{tile_h}", ""]
    return "\n".join(lines)


def _vtt_time(seconds: float) -> str:
    millis = round(seconds * 1000)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    return f"{hours:02d}:{minutes:02d}:{millis // 1000:02d}.{millis % 1000:03d}"
