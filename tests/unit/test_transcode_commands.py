"""ffmpeg argument lists (what runs, option by option) and the storyboard layout and WebVTT math."""

from __future__ import annotations

from pathlib import Path

import pytest

from processors.transcode.ffmpeg.commands import (
    StoryboardLayout,
    hls_ladder_command,
    poster_command,
    storyboard_command,
    storyboard_layout,
    storyboard_vtt,
    variant_playlist,
)
from processors.transcode.ffmpeg.ladder import choose_ladder

SOURCE = Path("/work/in/source.mp4")
OUT = Path("/work/out")


def option(argv: list[str], name: str) -> str:
    assert argv.count(name) == 1, f"{name} appears {argv.count(name)} times"
    return argv[argv.index(name) + 1]


def ladder_argv(has_audio: bool = True, fps: float = 30.0, **kwargs: object) -> list[str]:
    renditions = choose_ladder(1920, 1080, 0, has_audio=has_audio)
    return hls_ladder_command("ffmpeg", SOURCE, OUT, renditions, has_audio, fps, **kwargs)  # type: ignore[arg-type]


def test_one_invocation_decodes_once_and_encodes_every_rendition() -> None:
    argv = ladder_argv()
    assert argv[0] == "ffmpeg"
    assert option(argv, "-i") == str(SOURCE)
    graph = option(argv, "-filter_complex")
    assert graph.startswith("[0:V:0]split=3[s0][s1][s2];")
    for size in ("640:360", "1280:720", "1920:1080"):
        assert f"scale={size},setsar=1,format=yuv420p" in graph
    assert [argv[i + 1] for i, arg in enumerate(argv) if arg == "-map"] == [
        "[v0]", "[v1]", "[v2]", "0:a:0", "0:a:0", "0:a:0"]
    assert option(argv, "-var_stream_map") == "v:0,a:0,name:360p v:1,a:1,name:720p v:2,a:2,name:1080p"


def test_per_rendition_encoder_settings() -> None:
    argv = ladder_argv()
    assert option(argv, "-c:v") == "libx264" and option(argv, "-preset") == "veryfast"
    assert (option(argv, "-profile:v:0"), option(argv, "-level:v:0")) == ("main", "3.0")
    assert (option(argv, "-profile:v:2"), option(argv, "-level:v:2")) == ("high", "4.0")
    assert option(argv, "-b:v:1") == "2800000" and option(argv, "-maxrate:v:1") == "2996000"
    assert option(argv, "-bufsize:v:2") == "7500000"
    assert (option(argv, "-c:a"), option(argv, "-ac")) == ("aac", "2")
    assert [option(argv, f"-b:a:{i}") for i in range(3)] == ["96000", "128000", "160000"]


def test_segments_are_aligned_by_forced_keyframes_and_a_fixed_gop() -> None:
    argv = ladder_argv(segment_seconds=6)
    assert option(argv, "-force_key_frames") == "expr:gte(t,n_forced*6)"
    assert option(argv, "-sc_threshold") == "0"
    assert option(argv, "-g") == option(argv, "-keyint_min") == "180"  # 6 s at 30 fps
    assert option(argv, "-hls_time") == "6"


def test_hls_output_layout_is_relative_to_the_output_directory() -> None:
    argv = ladder_argv()
    assert option(argv, "-f") == "hls"
    assert option(argv, "-hls_playlist_type") == "vod"
    assert option(argv, "-hls_segment_type") == "mpegts"
    assert option(argv, "-hls_segment_filename") == "/work/out/%v/seg_%05d.ts"
    assert option(argv, "-master_pl_name") == "master.m3u8"
    assert argv[-1] == "/work/out/%v/index.m3u8"
    assert variant_playlist(choose_ladder(1280, 720, 0)[0]) == "360p/index.m3u8"


def test_progress_goes_to_stdout_without_stats() -> None:
    argv = ladder_argv()
    assert option(argv, "-progress") == "pipe:1"
    assert "-nostats" in argv and "-nostdin" in argv


def test_without_audio_there_are_no_audio_maps_or_encoders() -> None:
    argv = ladder_argv(has_audio=False)
    assert "0:a:0" not in argv
    assert not any(arg.startswith(("-c:a", "-b:a")) for arg in argv)
    assert option(argv, "-var_stream_map") == "v:0,name:360p v:1,name:720p v:2,name:1080p"


def test_fast_sources_are_dropped_to_60_fps_before_the_split() -> None:
    argv = ladder_argv(fps=120)
    assert option(argv, "-filter_complex").startswith("[0:V:0]fps=60,split=3")
    assert option(argv, "-g") == "240"
    assert "fps=" not in option(ladder_argv(fps=60), "-filter_complex")


def test_the_probed_demuxer_is_pinned_and_the_master_name_can_be_changed() -> None:
    argv = ladder_argv(input_format="mov", master_name=".pending.m3u8")
    assert argv[argv.index("-i") - 2:argv.index("-i")] == ["-f", "mov"]
    assert option(argv, "-master_pl_name") == ".pending.m3u8"


def test_refuses_an_empty_ladder_and_unknown_presets() -> None:
    with pytest.raises(ValueError):
        hls_ladder_command("ffmpeg", SOURCE, OUT, [], True, 30.0)
    with pytest.raises(ValueError, match="preset"):
        ladder_argv(preset="veryfsat")


def test_poster_seeks_into_the_video_and_picks_a_representative_frame() -> None:
    argv = poster_command("ffmpeg", SOURCE, OUT / "thumb.jpg", 60.0, input_format="mov")
    assert float(option(argv, "-ss")) == pytest.approx(9.0)
    assert argv.index("-ss") < argv.index("-i")  # fast input seeking
    assert option(argv, "-vf") == "scale='min(1280,iw)':-2,thumbnail=50"
    assert (option(argv, "-frames:v"), option(argv, "-q:v")) == ("1", "3")
    assert argv[-1] == "/work/out/thumb.jpg"


@pytest.mark.parametrize("duration, interval, tiles, columns, rows", [
    (8.0, 1, 8, 8, 1),
    (0.4, 1, 1, 1, 1),
    (100.0, 1, 100, 10, 10),
    (100.5, 2, 51, 10, 6),
    (3600.0, 36, 100, 10, 10),
])
def test_storyboard_has_at_most_100_tiles(duration: float, interval: int, tiles: int, columns: int,
                                          rows: int) -> None:
    layout = storyboard_layout(duration, 640, 360)
    assert (layout.interval_s, layout.tiles, layout.columns, layout.rows) == (interval, tiles, columns, rows)
    assert (layout.tile_width, layout.tile_height) == (160, 90)


def test_storyboard_tiles_keep_the_aspect_ratio() -> None:
    assert storyboard_layout(8.0, 360, 640).tile_height == 284


def test_storyboard_command_tiles_one_frame_per_interval() -> None:
    layout = StoryboardLayout(interval_s=2, tiles=30, columns=10, rows=3, tile_width=160, tile_height=90)
    argv = storyboard_command("ffmpeg", OUT / "360p/index.m3u8", OUT / "storyboard.jpg", layout, input_format="hls")
    video_filter = option(argv, "-vf")
    assert "floor(t/2)" in video_filter
    assert video_filter.endswith("scale=160:90,setsar=1,tile=10x3")
    assert option(argv, "-frames:v") == "1"


def test_vtt_cues_cover_the_video_and_walk_the_grid_row_by_row() -> None:
    vtt = storyboard_vtt(25.5, 2, 160, 90, 10, "storyboard.jpg")
    assert vtt.startswith("WEBVTT\n\n")
    blocks = vtt.strip().split("\n\n")[1:]
    assert len(blocks) == 13
    assert blocks[0] == "00:00:00.000 --> 00:00:02.000\nstoryboard.jpg#xywh=0,0,160,90"
    assert blocks[9] == "00:00:18.000 --> 00:00:20.000\nstoryboard.jpg#xywh=1440,0,160,90"
    assert blocks[10] == "00:00:20.000 --> 00:00:22.000\nstoryboard.jpg#xywh=0,90,160,90"
    assert blocks[12] == "00:00:24.000 --> 00:00:25.500\nstoryboard.jpg#xywh=320,90,160,90"


def test_vtt_timestamps_have_hours() -> None:
    layout = storyboard_layout(3725.0, 16, 9)
    assert (layout.interval_s, layout.tiles) == (38, 99)
    vtt = storyboard_vtt(3725.0, layout.interval_s, 160, 90, 10, "s.jpg")
    assert vtt.count("-->") == 99
    assert vtt.endswith("01:02:04.000 --> 01:02:05.000\ns.jpg#xywh=1280,810,160,90\n")


def test_vtt_and_layout_agree_on_the_tile_count() -> None:
    for duration in (1.0, 7.999, 8.0, 8.0004, 8.2, 99.9, 250.0):
        layout = storyboard_layout(duration, 640, 360)
        vtt = storyboard_vtt(duration, layout.interval_s, 160, 90, layout.columns, "s.jpg")
        assert vtt.count("-->") == layout.tiles <= layout.columns * layout.rows
