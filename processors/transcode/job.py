"""One upload to a local HLS ladder with poster and storyboard: probe, one ffmpeg ladder run, extras."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from infra.s3.layout import MASTER_PLAYLIST, POSTER, InvalidVideoId, check_video_id
from processors.transcode.errors import CorruptSourceError, TranscodeError, TransientTranscodeError
from processors.transcode.ffmpeg.binary import ffmpeg_binary
from processors.transcode.ffmpeg.commands import (
    STORYBOARD_SPRITE,
    STORYBOARD_VTT,
    hls_ladder_command,
    poster_command,
    storyboard_command,
    storyboard_layout,
    storyboard_vtt,
    variant_playlist,
)
from processors.transcode.ffmpeg.ladder import Rendition, choose_ladder
from processors.transcode.ffmpeg.probe import SourceInfo

# ffmpeg writes the master playlist under this name; it becomes master.m3u8 once everything else
# exists, so whoever sees master.m3u8 sees a complete ladder.
_PENDING_MASTER = ".master.m3u8.pending"
# Share of the progress that the ladder run covers; poster and storyboard are the rest.
_LADDER_SHARE = 95.0
_STDERR_TAIL_LINES = 8
_MAX_REASON_CHARS = 1000
# Failures of the machine, not of the source.
_HOST_TROUBLE = ("No space left on device", "Cannot allocate memory", "Too many open files")
_STREAM_INF = re.compile(r"#EXT-X-STREAM-INF:(.*)")
_ATTRIBUTE = re.compile(r'([A-Z0-9-]+)=("[^"]*"|[^,]*)')


@dataclass(frozen=True)
class RenditionOutput:
    rendition: Rendition  # bandwidth and codecs as master.m3u8 advertises them (measured by ffmpeg)
    playlist: str  # relative to LadderOutput.directory, e.g. "720p/index.m3u8"


@dataclass(frozen=True)
class LadderOutput:
    directory: Path  # the caller removes it after the upload
    duration_ms: int
    source_width: int  # as displayed (rotation applied)
    source_height: int
    renditions: tuple[RenditionOutput, ...]  # lowest first, the order of master.m3u8
    master: str
    poster: str
    storyboard: str
    storyboard_vtt: str
    files: tuple[str, ...]  # every file, relative and with "/" separators; master playlist last
    total_bytes: int


def transcode_source(source: Path, workdir: Path, video_id: str, *, info: SourceInfo, preset: str,
                     segment_seconds: int = 4,
                     on_progress: Callable[[float], None] | None = None, timeout_s: float) -> LadderOutput:
    """Transcode `source` (as `info`, its probe, describes it) into a new directory under `workdir`;
    `timeout_s` bounds the whole job.

    Raises CorruptSourceError for sources that are not decodable video, TransientTranscodeError on a
    timeout or a host problem. On any failure the directory it created is removed again.
    """
    deadline = time.monotonic() + timeout_s
    try:
        check_video_id(video_id)  # before the expensive part, and before it names a directory
    except InvalidVideoId as exc:
        raise TranscodeError(str(exc)) from None
    display_width, display_height = info.display_size
    renditions = choose_ladder(info.width, info.height, info.rotation, fps=info.fps, has_audio=info.has_audio)
    outdir = Path(tempfile.mkdtemp(prefix=f"{video_id}-", dir=workdir))
    try:
        ffmpeg = ffmpeg_binary()
        progress = _Progress(on_progress, info.duration_s)
        _run(hls_ladder_command(ffmpeg, source, outdir, renditions, info.has_audio, info.fps, segment_seconds,
                                preset, input_format=info.container, master_name=_PENDING_MASTER),
             deadline, timeout_s, on_out_time_us=progress.ladder)
        playlists = [variant_playlist(rendition) for rendition in renditions]
        duration_s = min(_playlist_duration_s(outdir / playlist) for playlist in playlists)
        advertised = _master_variants((outdir / _PENDING_MASTER).read_text())

        poster = outdir / POSTER
        # From the smallest rendition at least as wide as the poster (1280 px): decoding it costs a
        # quarter of decoding a 1080p source, and the ladder is already on disk.
        poster_source = next((r for r in renditions if r.width >= min(1280, display_width)), renditions[-1])
        _run(poster_command(ffmpeg, outdir / variant_playlist(poster_source), poster, duration_s,
                            input_format="hls"), deadline, timeout_s)
        # The lowest rendition is the cheapest input with enough pixels for 160-pixel tiles.
        lowest = renditions[0]
        layout = storyboard_layout(duration_s, lowest.width, lowest.height)
        sprite = outdir / STORYBOARD_SPRITE
        _run(storyboard_command(ffmpeg, outdir / playlists[0], sprite, layout, input_format="hls"),
             deadline, timeout_s)
        for image in (poster, sprite):
            if not image.is_file():
                raise CorruptSourceError(f"ffmpeg wrote no {image.name}")
        (outdir / STORYBOARD_VTT).write_text(storyboard_vtt(
            duration_s, layout.interval_s, layout.tile_width, layout.tile_height, layout.columns, STORYBOARD_SPRITE))
        os.replace(outdir / _PENDING_MASTER, outdir / MASTER_PLAYLIST)

        files = sorted((path.relative_to(outdir).as_posix() for path in outdir.rglob("*") if path.is_file()),
                       key=lambda name: (name == MASTER_PLAYLIST, name))
        output = LadderOutput(
            directory=outdir,
            duration_ms=round(duration_s * 1000),
            source_width=display_width,
            source_height=display_height,
            renditions=tuple(
                RenditionOutput(_as_advertised(rendition, playlist, advertised), playlist)
                for rendition, playlist in zip(renditions, playlists)),
            master=MASTER_PLAYLIST,
            poster=POSTER,
            storyboard=STORYBOARD_SPRITE,
            storyboard_vtt=STORYBOARD_VTT,
            files=tuple(files),
            total_bytes=sum((outdir / name).stat().st_size for name in files),
        )
        progress.done()
        return output
    except BaseException:
        shutil.rmtree(outdir, ignore_errors=True)
        raise


class _Progress:
    """Turns ffmpeg's `out_time_us` into rising percentages of the whole job."""

    def __init__(self, callback: Callable[[float], None] | None, duration_s: float) -> None:
        self._callback = callback
        self._duration_us = duration_s * 1_000_000
        self._last = -1.0

    def ladder(self, out_time_us: int) -> None:
        self._report(round(min(1.0, max(0.0, out_time_us / self._duration_us)) * _LADDER_SHARE, 1))

    def done(self) -> None:
        self._report(100.0)

    def _report(self, percent: float) -> None:
        if self._callback is not None and percent > self._last:
            self._last = percent
            self._callback(percent)


def _run(argv: list[str], deadline: float, timeout_s: float,
         on_out_time_us: Callable[[int], None] | None = None) -> None:
    """Run ffmpeg until it exits or the job's deadline passes; translate failures into TranscodeErrors."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TransientTranscodeError(f"transcoding timed out after {timeout_s:g} s")
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            encoding="utf-8", errors="replace")
    assert proc.stdout is not None and proc.stderr is not None
    tail: deque[str] = deque(maxlen=_STDERR_TAIL_LINES)
    # stderr is drained in a thread so that a chatty ffmpeg never blocks on a full pipe.
    reader = threading.Thread(target=_keep_tail, args=(proc.stderr, tail), daemon=True)
    reader.start()
    timed_out = threading.Event()

    def kill() -> None:
        timed_out.set()
        proc.kill()

    timer = threading.Timer(remaining, kill)
    timer.start()
    try:
        for line in proc.stdout:
            key, _, value = line.strip().partition("=")
            if on_out_time_us is not None and key == "out_time_us" and value.lstrip("-").isdigit():
                on_out_time_us(int(value))
        returncode = proc.wait()
    finally:
        timer.cancel()
        if proc.poll() is None:  # the progress callback raised: do not leave ffmpeg running
            proc.kill()
            proc.wait()
        reader.join()
        proc.stdout.close()
        proc.stderr.close()
    if returncode == 0:
        return
    if timed_out.is_set():
        raise TransientTranscodeError(f"transcoding timed out after {timeout_s:g} s")
    detail = " | ".join(tail)[-_MAX_REASON_CHARS:] or f"exit status {returncode}"
    if returncode < 0 or any(marker in detail for marker in _HOST_TROUBLE):
        raise TransientTranscodeError(f"ffmpeg failed (status {returncode}): {detail}")
    raise CorruptSourceError(f"ffmpeg failed: {detail}")


def _keep_tail(stream: Iterable[str], tail: deque[str]) -> None:
    for line in stream:
        if line.strip():
            tail.append(line.strip())


def _playlist_duration_s(playlist: Path) -> float:
    """Sum of the EXTINF durations: the length that players will see."""
    durations = [float(line[len("#EXTINF:"):].split(",")[0])
                 for line in playlist.read_text().splitlines() if line.startswith("#EXTINF:")]
    if not durations or sum(durations) <= 0:
        raise CorruptSourceError(f"ffmpeg produced no segments for {playlist.parent.name}")
    return sum(durations)


def _master_variants(master: str) -> dict[str, dict[str, str]]:
    """EXT-X-STREAM-INF attributes of each variant, by URI."""
    variants: dict[str, dict[str, str]] = {}
    lines = [line.strip() for line in master.splitlines() if line.strip()]
    for line, uri in zip(lines, lines[1:]):
        match = _STREAM_INF.fullmatch(line)
        if match:
            variants[uri] = {key: value.strip('"') for key, value in _ATTRIBUTE.findall(match.group(1))}
    return variants


def _as_advertised(rendition: Rendition, playlist: str, variants: dict[str, dict[str, str]]) -> Rendition:
    attributes = variants.get(playlist)
    if attributes is None or "BANDWIDTH" not in attributes or "CODECS" not in attributes:
        raise TranscodeError(f"master playlist does not describe {playlist}")
    return replace(rendition, bandwidth=int(attributes["BANDWIDTH"]), codecs=attributes["CODECS"])
