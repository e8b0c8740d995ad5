"""What an upload is, read with PyAV; anything that is not a decodable video raises CorruptSourceError."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
from av.container import InputContainer
from av.stream import Disposition
from av.video.stream import VideoStream

from processors.transcode.errors import CorruptSourceError

# Demuxers that real uploads come in. Anything else is refused: libavformat also "probes" random
# bytes as ANSI art ("bin") and, worse, opens HLS or concat playlists that read other files and
# URLs; ffmpeg is then pinned to the accepted demuxer (`SourceInfo.container`, passed as `-f`).
ACCEPTED_CONTAINERS = frozenset({"mov", "matroska", "avi", "flv", "mpegts", "mpeg", "asf", "ogg"})

# Decoding a few frames proves that the stream is not just a plausible header.
_FRAMES_TO_DECODE = 5
# Rates above this are time bases, not frame rates (WebM from browsers reports 1000/1).
_MAX_PLAUSIBLE_FPS = 240


@dataclass(frozen=True)
class SourceInfo:
    container: str
    duration_s: float
    width: int  # stored frame size in square pixels (sample aspect ratio applied), before rotation
    height: int
    rotation: int  # clockwise degrees to display the frames upright: 0, 90, 180 or 270
    fps: float  # 0.0 when the source does not say
    has_audio: bool
    video_codec: str

    @property
    def display_size(self) -> tuple[int, int]:
        """Width and height as the viewer sees the video (rotation applied)."""
        if self.rotation in (90, 270):
            return self.height, self.width
        return self.width, self.height


def probe(path: Path) -> SourceInfo:
    try:
        container = av.open(str(path))
    except av.FFmpegError as exc:
        if isinstance(exc, OSError):  # missing or unreadable local file: the caller's problem
            raise
        raise CorruptSourceError(f"not a media file: {exc}") from exc
    with container:
        name = container.format.name.split(",")[0]
        if name not in ACCEPTED_CONTAINERS:
            raise CorruptSourceError(f"unsupported container format {container.format.name!r}")
        stream = _main_video_stream(container)
        width, height, rotation = _decode_first_frames(container, stream)
        duration_s = _duration_s(container, stream)
        if duration_s <= 0:
            raise CorruptSourceError("the video has zero duration")
        sar = stream.sample_aspect_ratio
        if sar and sar != 1:
            width = max(2, round(width * sar))
        return SourceInfo(
            container=name,
            duration_s=duration_s,
            width=width,
            height=height,
            rotation=rotation,
            fps=_fps(stream),
            has_audio=bool(container.streams.audio),
            video_codec=stream.codec_context.name,
        )


def _main_video_stream(container: InputContainer) -> VideoStream:
    # Cover art in audio files is a "video" stream too; ffmpeg's `0:V` skips it the same way.
    for stream in container.streams.video:
        if not stream.disposition & Disposition.attached_pic:
            return stream
    raise CorruptSourceError("no video stream")


def _decode_first_frames(container: InputContainer, stream: VideoStream) -> tuple[int, int, int]:
    first = None
    # Frame threading: x264 writes one slice per frame, so the default slice threading uses one core.
    stream.codec_context.thread_type = "AUTO"
    try:
        for count, frame in enumerate(container.decode(stream), start=1):
            first = first or frame
            if count >= _FRAMES_TO_DECODE:
                break
    except av.FFmpegError as exc:
        raise CorruptSourceError(f"the video does not decode: {exc}") from exc
    if first is None:
        raise CorruptSourceError("no decodable video frame")
    # The display matrix reaches the frames as side data; its angle is counter-clockwise.
    counter_clockwise = first.rotation or -int(stream.metadata.get("rotate", "0") or 0)
    clockwise = (round(-counter_clockwise / 90) * 90) % 360
    return first.width, first.height, clockwise


def _duration_s(container: InputContainer, stream: VideoStream) -> float:
    if container.duration:
        return container.duration / av.time_base
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    # No duration in the header (e.g. WebM recorded in a browser): the last packet tells.
    end = 0
    try:
        container.seek(0)
        for packet in container.demux(stream):
            if packet.pts is not None:
                end = max(end, packet.pts + (packet.duration or 0))
    except av.FFmpegError as exc:
        raise CorruptSourceError(f"cannot read the video to its end: {exc}") from exc
    start = stream.start_time or 0
    return float((end - start) * stream.time_base) if stream.time_base else 0.0


def _fps(stream: VideoStream) -> float:
    rate: Fraction | None = stream.average_rate or stream.guessed_rate
    if rate and 0 < rate <= _MAX_PLAUSIBLE_FPS:
        return float(rate)
    return 0.0
