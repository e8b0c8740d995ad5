"""Which HLS renditions a source gets: a fixed 360p/720p/1080p table, never upscaled. Pure."""

from __future__ import annotations

import math
from dataclasses import dataclass

# Faster sources are encoded at this rate: more frames cost bits that few screens can show.
MAX_FPS = 60.0
# Used when the source does not state its frame rate.
DEFAULT_FPS = 30.0

# x264 VBV: the peak rate and buffer relative to the target bitrate (a capped-VBR ladder).
_MAXRATE_FACTOR = 1.07
_BUFSIZE_FACTOR = 1.5
# MPEG-TS packetisation, PES headers and PAT/PMT add roughly this much on top of the streams.
_MUX_OVERHEAD = 1.10
# A source this much smaller than a tier's box still gets the tier, at its own size: a window
# recording of 1900x1000 should not fall back to 720p for lack of 20 pixels.
_TIER_TOLERANCE = 1.05
# Smaller-than-box renditions get proportionally fewer bits, down to this share of the tier's.
_MIN_BITRATE_SHARE = 0.25


@dataclass(frozen=True)
class _Tier:
    name: str
    long_side: int
    short_side: int
    video_bitrate: int
    audio_bitrate: int
    profile: str


# Apple's authoring-spec style ladder; main profile for 360p keeps old phones and TVs playing.
_TIERS = (
    _Tier("360p", 640, 360, 800_000, 96_000, "main"),
    _Tier("720p", 1280, 720, 2_800_000, 128_000, "high"),
    _Tier("1080p", 1920, 1080, 5_000_000, 160_000, "high"),
)

# H.264 Annex A limits: (level_idc, max macroblocks/s, max frame size in macroblocks, max kbit/s
# for Main; High may use 1.25 times that).
_LEVELS = (
    (30, 40_500, 1_620, 10_000),
    (31, 108_000, 3_600, 14_000),
    (32, 216_000, 5_120, 20_000),
    (40, 245_760, 8_192, 20_000),
    (41, 245_760, 8_192, 50_000),
    (42, 522_240, 8_704, 50_000),
    (50, 589_824, 22_080, 135_000),
    (51, 983_040, 36_864, 240_000),
    (52, 2_073_600, 36_864, 240_000),
)
# profile_idc and the constraint flags byte that x264 writes for it (RFC 6381 "avc1.PPCCLL").
_PROFILE_IDC = {"main": (0x4D, 0x40), "high": (0x64, 0x00)}
_AAC_LC = "mp4a.40.2"


@dataclass(frozen=True)
class Rendition:
    name: str
    width: int
    height: int
    video_bitrate: int  # bit/s, x264's target
    audio_bitrate: int  # bit/s, 0 for a source without audio
    profile: str  # x264 profile: "main" or "high"
    level: str  # H.264 level, e.g. "3.1"
    bandwidth: int  # peak bit/s for the master playlist: VBV peak + audio + muxing overhead
    codecs: str  # RFC 6381, e.g. "avc1.64001f,mp4a.40.2"

    @property
    def maxrate(self) -> int:
        return _maxrate(self.video_bitrate)

    @property
    def bufsize(self) -> int:
        return round(self.video_bitrate * _BUFSIZE_FACTOR)


def choose_ladder(width: int, height: int, rotation: int, *, fps: float = DEFAULT_FPS,
                  has_audio: bool = True) -> list[Rendition]:
    """The renditions for a `width` x `height` source shown rotated by `rotation` degrees.

    Each tier fits the video into its 16:9 box (9:16 for portrait), so the ladder follows the short
    side of ordinary 16:9 and 4:3 sources while 2.39:1 films keep their full width. A tier that
    would upscale is dropped; a source smaller than the 360p box gets one rendition at its own size.
    """
    if width < 2 or height < 2:
        raise ValueError(f"no ladder for a {width}x{height} video")
    if rotation % 180 == 90:
        width, height = height, width
    rate = min(fps, MAX_FPS) if fps > 0 else DEFAULT_FPS
    portrait = height > width
    renditions = []
    for tier in _TIERS:
        box_w, box_h = (tier.short_side, tier.long_side) if portrait else (tier.long_side, tier.short_side)
        scale = min(box_w / width, box_h / height)
        if scale > _TIER_TOLERANCE:
            continue
        scale = min(scale, 1.0)
        renditions.append(_rendition(tier, tier.name, _even(width * scale, width), _even(height * scale, height),
                                     box_w * box_h, rate, has_audio))
    if not renditions:
        tier = _TIERS[0]
        out_w, out_h = _even(width, width), _even(height, height)
        renditions.append(_rendition(tier, f"{min(out_w, out_h)}p", out_w, out_h,
                                     tier.long_side * tier.short_side, rate, has_audio))
    return renditions


def _rendition(tier: _Tier, name: str, width: int, height: int, box_pixels: int, fps: float,
               has_audio: bool) -> Rendition:
    share = min(1.0, max(_MIN_BITRATE_SHARE, width * height / box_pixels))
    video_bitrate = int(round(tier.video_bitrate * share, -3))
    audio_bitrate = tier.audio_bitrate if has_audio else 0
    maxrate = _maxrate(video_bitrate)
    level_idc = _level_idc(width, height, fps, maxrate, tier.profile)
    profile_idc, constraints = _PROFILE_IDC[tier.profile]
    codecs = f"avc1.{profile_idc:02x}{constraints:02x}{level_idc:02x}"
    return Rendition(
        name=name,
        width=width,
        height=height,
        video_bitrate=video_bitrate,
        audio_bitrate=audio_bitrate,
        profile=tier.profile,
        level=f"{level_idc // 10}.{level_idc % 10}",
        bandwidth=round((maxrate + audio_bitrate) * _MUX_OVERHEAD),
        codecs=f"{codecs},{_AAC_LC}" if has_audio else codecs,
    )


def _maxrate(video_bitrate: int) -> int:
    return round(video_bitrate * _MAXRATE_FACTOR)


def _level_idc(width: int, height: int, fps: float, maxrate: int, profile: str) -> int:
    """The lowest level whose limits hold the rendition (so the CODECS string does not overstate)."""
    mbs_w, mbs_h = math.ceil(width / 16), math.ceil(height / 16)
    bitrate_factor = 1.25 if profile == "high" else 1.0
    for level_idc, max_mbps, max_fs, max_kbps in _LEVELS:
        max_side = math.sqrt(8 * max_fs)
        if (mbs_w * mbs_h <= max_fs and mbs_w <= max_side and mbs_h <= max_side
                and mbs_w * mbs_h * fps <= max_mbps and maxrate <= max_kbps * 1000 * bitrate_factor):
            return level_idc
    raise ValueError(f"{width}x{height}@{fps} exceeds H.264 level 5.2")


def _even(value: float, limit: int) -> int:
    """`value` rounded to an even number (4:2:0 chroma needs it), never above `limit`."""
    return max(2, min(2 * round(value / 2), limit - limit % 2))
