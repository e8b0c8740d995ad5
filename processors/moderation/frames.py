"""The frames moderation looks at: every N seconds of the lowest rendition, plus the poster.

The ffmpeg argument lists are pure (the style of processors/transcode/ffmpeg/commands.py);
`fetch_rendition` and `sample_frames` do the I/O. The lowest rendition (360p or less) has enough
pixels for both backends (NudeNet scales to 320 px, Rekognition's models work from 50-100 px
faces up) and decodes at a fraction of the cost of the 1080p one.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from processors.transcode.ffmpeg.binary import ffmpeg_binary

FRAME_PATTERN = "frame_%05d.jpg"  # the image2 muxer numbers from 1
_FRAME_QUALITY = 3  # mjpeg qscale: small files (Rekognition's 5 MB limit is far away), no visible loss
_BLUR = "boxblur=luma_radius='min(w,h)/12':luma_power=3"
_DOWNLOAD_WORKERS = 4
_TIMEOUT_S = 600
_POLL_S = 0.02


class FrameError(Exception):
    """The ladder could not be read or decoded (a broken ladder: not worth a retry)."""


@dataclass(frozen=True)
class SampledFrame:
    path: Path
    at_s: float | None  # position in the video; None for the poster


def _base(ffmpeg: str) -> list[str]:
    return [ffmpeg, "-hide_banner", "-nostdin", "-y", "-loglevel", "error"]


def sample_command(ffmpeg: str, playlist: Path, outdir: Path, interval_s: float) -> list[str]:
    """One JPEG every `interval_s` seconds from t=0 (frame k shows second k*interval_s)."""
    if interval_s <= 0:
        raise ValueError("the sampling interval must be positive")
    return _base(ffmpeg) + ["-f", "hls", "-i", str(playlist), "-map", "0:V:0",
                            "-vf", f"fps=1/{interval_s:g}:round=down", "-q:v", str(_FRAME_QUALITY),
                            "-an", str(outdir / FRAME_PATTERN)]


def blur_command(ffmpeg: str, image: Path, dest: Path) -> list[str]:
    """A heavy blur of one JPEG (the poster when no frame is safe for work)."""
    return _base(ffmpeg) + ["-i", str(image), "-vf", _BLUR, "-q:v", str(_FRAME_QUALITY), "-frames:v", "1",
                            "-update", "1", str(dest)]


def segment_uris(playlist_text: str) -> list[str]:
    """The media segment URIs of an HLS media playlist, refusing any that leaves its directory."""
    uris = [line.strip() for line in playlist_text.splitlines() if line.strip() and not line.startswith("#")]
    for uri in uris:
        if "://" in uri or uri.startswith("/") or ".." in PurePosixPath(uri).parts:
            raise FrameError(f"segment URI {uri!r} is not a plain relative name")
    return uris


def _failure(returncode: int, stderr: bytes) -> FrameError:
    tail = stderr.decode(errors="replace").strip().splitlines()[-3:]
    return FrameError(f"ffmpeg failed ({returncode}): {' / '.join(tail)}")


def run_ffmpeg(argv: list[str]) -> None:
    try:
        done = subprocess.run(argv, capture_output=True, timeout=_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as exc:
        raise FrameError(f"ffmpeg took over {_TIMEOUT_S} s") from exc
    if done.returncode != 0:
        raise _failure(done.returncode, done.stderr)


def fetch_rendition(s3: Any, bucket: str, playlist_key: str, dest: Path) -> Path:
    """Download one rendition's media playlist and its segments under `dest`; returns the playlist."""
    body = s3.get_object(Bucket=bucket, Key=playlist_key)["Body"].read()
    playlist = dest / PurePosixPath(playlist_key).name
    dest.mkdir(parents=True, exist_ok=True)
    playlist.write_bytes(body)
    base = str(PurePosixPath(playlist_key).parent)
    uris = segment_uris(body.decode())
    for uri in uris:
        (dest / uri).parent.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=_DOWNLOAD_WORKERS) as pool:
        list(pool.map(lambda uri: s3.download_file(bucket, f"{base}/{uri}", str(dest / uri)), uris))
    return playlist


def stream_frames(playlist: Path, outdir: Path, interval_s: float) -> Iterator[SampledFrame]:
    """The sampled frames, each as soon as ffmpeg has finished writing it: the model works on the
    first frames while ffmpeg still decodes the rest."""
    outdir.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + _TIMEOUT_S
    with tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(sample_command(ffmpeg_binary(), playlist, outdir, interval_s),
                                   stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            index = 0
            while True:
                finished = process.poll() is not None
                # Frame k is complete once frame k+1 exists (the image2 muxer writes them in order),
                # or once ffmpeg has exited.
                while (outdir / (FRAME_PATTERN % (index + 2))).exists() or \
                        (finished and (outdir / (FRAME_PATTERN % (index + 1))).exists()):
                    yield SampledFrame(outdir / (FRAME_PATTERN % (index + 1)), round(index * interval_s, 3))
                    index += 1
                if finished:
                    break
                if time.monotonic() > deadline:
                    raise FrameError(f"ffmpeg took over {_TIMEOUT_S} s")
                time.sleep(_POLL_S)
            if process.returncode != 0:
                stderr.seek(0)
                raise _failure(process.returncode, stderr.read())
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


def sample_frames(playlist: Path, outdir: Path, interval_s: float) -> list[SampledFrame]:
    return list(stream_frames(playlist, outdir, interval_s))


def blur(image: Path, dest: Path) -> Path:
    run_ffmpeg(blur_command(ffmpeg_binary(), image, dest))
    return dest
