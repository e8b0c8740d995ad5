"""Ladder selection: which renditions a source gets, at which sizes, bitrates and codec strings."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from processors.transcode.ffmpeg.ladder import Rendition, choose_ladder


def sizes(ladder: list[Rendition]) -> list[tuple[str, int, int]]:
    return [(r.name, r.width, r.height) for r in ladder]


def test_1080p_landscape_gets_the_full_ladder() -> None:
    ladder = choose_ladder(1920, 1080, 0)
    assert sizes(ladder) == [("360p", 640, 360), ("720p", 1280, 720), ("1080p", 1920, 1080)]
    assert [r.video_bitrate for r in ladder] == [800_000, 2_800_000, 5_000_000]
    assert [r.audio_bitrate for r in ladder] == [96_000, 128_000, 160_000]
    # Main 3.0 for 360p (old devices), High 3.1 / 4.0 as the sizes need at 30 fps.
    assert [r.codecs for r in ladder] == ["avc1.4d401e,mp4a.40.2", "avc1.64001f,mp4a.40.2", "avc1.640028,mp4a.40.2"]
    assert [(r.profile, r.level) for r in ladder] == [("main", "3.0"), ("high", "3.1"), ("high", "4.0")]


def test_bandwidth_is_the_peak_with_audio_and_muxing_overhead() -> None:
    for rendition in choose_ladder(1920, 1080, 0):
        assert rendition.maxrate > rendition.video_bitrate
        assert rendition.bandwidth > rendition.maxrate + rendition.audio_bitrate
        assert rendition.bandwidth <= 1.2 * (rendition.maxrate + rendition.audio_bitrate)


def test_720x1280_portrait_follows_the_short_side_and_is_not_upscaled() -> None:
    assert sizes(choose_ladder(720, 1280, 0)) == [("360p", 360, 640), ("720p", 720, 1280)]


def test_a_source_below_360p_gets_one_rendition_at_its_own_size() -> None:
    ladder = choose_ladder(426, 240, 0)
    assert sizes(ladder) == [("240p", 426, 240)]
    assert ladder[0].video_bitrate < 800_000  # fewer pixels, fewer bits


def test_odd_sizes_become_even_without_exceeding_the_source() -> None:
    assert sizes(choose_ladder(427, 241, 0)) == [("240p", 426, 240)]


@pytest.mark.parametrize("rotation", [90, 270])
def test_a_rotated_1920x1080_stream_is_a_portrait_video(rotation: int) -> None:
    assert sizes(choose_ladder(1920, 1080, rotation)) == [
        ("360p", 360, 640), ("720p", 720, 1280), ("1080p", 1080, 1920)]


def test_upside_down_stays_landscape() -> None:
    assert sizes(choose_ladder(1920, 1080, 180)) == sizes(choose_ladder(1920, 1080, 0))


def test_the_top_rendition_is_the_source_size_when_it_matches_a_tier() -> None:
    assert sizes(choose_ladder(1280, 720, 0))[-1] == ("720p", 1280, 720)


def test_wide_films_keep_their_width_in_each_tier() -> None:
    ladder = choose_ladder(1920, 800, 0)
    assert sizes(ladder) == [("360p", 640, 266), ("720p", 1280, 534), ("1080p", 1920, 800)]
    assert ladder[-1].video_bitrate < 5_000_000  # 74 % of the 1080p box's pixels


def test_a_source_a_few_pixels_short_of_a_tier_gets_it_at_its_own_size() -> None:
    assert sizes(choose_ladder(1900, 1000, 0))[-1] == ("1080p", 1900, 1000)


def test_without_audio_there_is_no_audio_in_bitrates_or_codecs() -> None:
    for rendition in choose_ladder(1920, 1080, 0, has_audio=False):
        assert rendition.audio_bitrate == 0
        assert "mp4a" not in rendition.codecs


def test_60_fps_needs_higher_levels_and_faster_sources_are_capped_at_60() -> None:
    at_60 = choose_ladder(1920, 1080, 0, fps=60)
    assert [r.level for r in at_60] == ["3.1", "3.2", "4.2"]
    assert choose_ladder(1920, 1080, 0, fps=120) == at_60
    assert choose_ladder(1920, 1080, 0, fps=0) == choose_ladder(1920, 1080, 0)  # unknown rate: 30


@pytest.mark.parametrize("width, height", [(0, 1080), (1920, 1)])
def test_degenerate_sizes_are_refused(width: int, height: int) -> None:
    with pytest.raises(ValueError):
        choose_ladder(width, height, 0)


@given(width=st.integers(16, 4096), height=st.integers(16, 4096), rotation=st.sampled_from([0, 90, 180, 270]))
def test_any_source_gets_even_sizes_within_the_source_and_its_aspect(width: int, height: int, rotation: int) -> None:
    shown_w, shown_h = (height, width) if rotation in (90, 270) else (width, height)
    ladder = choose_ladder(width, height, rotation)
    assert 1 <= len(ladder) <= 3
    assert len({r.name for r in ladder}) == len(ladder)
    for rendition in ladder:
        assert rendition.width % 2 == 0 and rendition.height % 2 == 0
        assert rendition.width <= shown_w and rendition.height <= shown_h
        assert (rendition.width >= rendition.height) == (shown_w >= shown_h) or abs(shown_w - shown_h) <= 2
    assert [r.video_bitrate for r in ladder] == sorted(r.video_bitrate for r in ladder)
