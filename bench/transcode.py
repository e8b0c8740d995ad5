"""Transcode benchmark: the pipeline's single-pass ladder against bare ffmpeg, in the same run.

    .venv/bin/python -m bench.transcode [--preset veryfast] [--seconds 30] [--repeat 1]

A synthetic 1080p30 source with stereo audio is generated once (lavfi `testsrc2` with temporal
noise `noise=alls=20:allf=t+u` on top, so that it is about as hard to encode as grainy camera
footage rather than flat test graphics; H.264 High at 20 Mbit/s + AAC in MP4, so that decoding it
costs about what a phone upload does). Then, with the x264 preset from --preset (default:
settings.transcode_preset) and settings.transcode_segment_seconds:

1. pipeline: `transcode_source(...)` wall time: PyAV probe + the one ladder ffmpeg run + poster +
   storyboard (the split between them is printed too, timed inside the same run);
2. bare: exactly the argv of `hls_ladder_command(...)` (renditions from `choose_ladder` on the
   probed source) run as a subprocess, wall time: what the pipeline costs on top of ffmpeg;
3. three runs: one ffmpeg per rendition (same scale, bitrates, VBV, GOP/forced keyframes, preset,
   audio and HLS muxing as that rendition in the ladder), one after the other, each decoding the
   source again: what the single pass saves.

Each is run --repeat times (order reversed on every other round) and medians are compared.
Prints wall seconds and x-realtime (source duration / wall) of each, pipeline / bare (goal
<= 1.05) and three runs / single pass (goal >= 1.2), the preset and the CPU count; CPU seconds
(user + system, this process and its ffmpeg children) and their ratios are printed alongside,
since on a shared machine they move much less than wall time. No S3: the benchmark is about
ffmpeg. Everything runs in temp dirs that are removed at the end.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import processors.transcode.job as job
from common.settings import load_settings
from infra.s3.layout import POSTER, new_video_id
from processors.transcode.ffmpeg.binary import ffmpeg_binary
from processors.transcode.ffmpeg.commands import (
    SEGMENT_PATTERN,
    STORYBOARD_SPRITE,
    VARIANT_PLAYLIST,
    X264_PRESETS,
    hls_ladder_command,
)
from processors.transcode.ffmpeg.ladder import DEFAULT_FPS, MAX_FPS, Rendition, choose_ladder
from processors.transcode.ffmpeg.probe import SourceInfo, probe
from processors.transcode.job import transcode_source

SOURCE_DESCRIPTION = ("testsrc2 1920x1080@30 + noise=alls=20:allf=t+u, sine stereo 48 kHz; "
                      "H.264 High (x264 veryfast) 20 Mbit/s + AAC 192 kbit/s in MP4")
SOURCE_VIDEO_BITRATE = "20M"


def make_source(ffmpeg: str, dest: Path, seconds: float) -> None:
    """The synthetic upload; generated once, not timed."""
    video = (f"testsrc2=size=1920x1080:rate=30:duration={seconds:g}[t];"
             # Temporal + uniform noise changes every pixel every frame, like sensor grain: motion
             # search and rate control have to work, unlike on testsrc2's flat areas.
             "[t]noise=alls=20:allf=t+u,format=yuv420p[v]")
    subprocess.run(
        [ffmpeg, "-hide_banner", "-nostdin", "-y", "-loglevel", "error",
         "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds:g}",
         "-filter_complex", video, "-map", "[v]", "-map", "0:a",
         "-c:v", "libx264", "-preset", "veryfast", "-profile:v", "high",
         # Capped high bitrate, like a phone: decoding it is part of every measured run.
         "-b:v", SOURCE_VIDEO_BITRATE, "-maxrate", SOURCE_VIDEO_BITRATE, "-bufsize", "40M", "-g", "60",
         "-c:a", "aac", "-ac", "2", "-b:a", "192k", "-movflags", "+faststart", str(dest)],
        check=True)


def per_rendition_command(ffmpeg: str, source: Path, outdir: Path, rendition: Rendition, info: SourceInfo,
                          segment_seconds: int, preset: str) -> list[str]:
    """One HLS rendition, argument for argument what the ladder command gives that rendition."""
    rate = min(info.fps, MAX_FPS) if info.fps > 0 else DEFAULT_FPS
    gop = max(1, round(rate * segment_seconds))
    video_filter = ((f"fps={MAX_FPS:g}," if info.fps > MAX_FPS else "")
                    + f"scale={rendition.width}:{rendition.height},setsar=1,format=yuv420p")
    argv = [ffmpeg, "-hide_banner", "-nostdin", "-y", "-loglevel", "warning",
            "-f", info.container, "-i", str(source), "-map", "0:V:0"]
    if info.has_audio:
        argv += ["-map", "0:a:0"]
    argv += ["-vf", video_filter, "-c:v", "libx264", "-preset", preset,
             "-profile:v", rendition.profile, "-level:v", rendition.level, "-b:v", str(rendition.video_bitrate),
             "-maxrate:v", str(rendition.maxrate), "-bufsize:v", str(rendition.bufsize),
             "-g", str(gop), "-keyint_min", str(gop), "-sc_threshold", "0",
             "-force_key_frames", f"expr:gte(t,n_forced*{segment_seconds})"]
    if info.has_audio:
        argv += ["-c:a", "aac", "-ac", "2", "-b:a", str(rendition.audio_bitrate)]
    argv += ["-f", "hls", "-hls_time", str(segment_seconds), "-hls_playlist_type", "vod",
             "-hls_flags", "independent_segments", "-hls_segment_type", "mpegts", "-start_number", "1",
             "-hls_segment_filename", str(outdir / rendition.name / SEGMENT_PATTERN),
             # The ladder run reports progress too; keep the same (tiny) cost here.
             "-progress", "pipe:1", "-nostats",
             str(outdir / rendition.name / VARIANT_PLAYLIST)]
    return argv


def run_ffmpeg(argv: Sequence[str]) -> None:
    result = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    if result.returncode != 0:
        raise RuntimeError(f"ffmpeg failed ({result.returncode}): {result.stderr[-2000:]}")


class PhaseTimer:
    """Times the pipeline's probe and each of its ffmpeg runs from inside `transcode_source`.

    The job's module-level `probe` and `_run` are wrapped for the duration of one call (nothing on
    disk changes), so the split comes from the very run whose total is reported.
    """

    def __init__(self) -> None:
        self.phases: dict[str, float] = {}

    def __enter__(self) -> PhaseTimer:
        self._probe, self._run = job.probe, job._run
        job.probe = self._timed("probe", self._probe)  # type: ignore[assignment]

        def timed_run(argv: list[str], *args: object, **kwargs: object) -> None:
            name = Path(argv[-1]).name
            label = {POSTER: "poster", STORYBOARD_SPRITE: "storyboard"}.get(name, "ladder")
            self._timed(label, self._run)(argv, *args, **kwargs)

        job._run = timed_run  # type: ignore[assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        job.probe, job._run = self._probe, self._run

    def _timed(self, label: str, fn: Callable[..., object]) -> Callable[..., object]:
        def wrapper(*args: object, **kwargs: object) -> object:
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.phases[label] = self.phases.get(label, 0.0) + time.perf_counter() - started
        return wrapper


class Stopwatch:
    """Wall time and CPU time (this process + the ffmpeg children it waited for) of one measurement.

    CPU seconds are printed next to wall seconds because the machine is shared: other work stretches
    wall time but hardly the CPU time that the encodes themselves need.
    """

    def __init__(self, key: str, wall: dict[str, list[float]], cpu: dict[str, list[float]]) -> None:
        self._key, self._wall, self._cpu = key, wall, cpu

    @staticmethod
    def _cpu_now() -> float:
        own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime

    def __enter__(self) -> Stopwatch:
        self._started, self._cpu_started = time.perf_counter(), self._cpu_now()
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            self._wall[self._key].append(time.perf_counter() - self._started)
            self._cpu[self._key].append(self._cpu_now() - self._cpu_started)


def fresh_dir(root: Path, name: str) -> Path:
    path = root / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir()
    return path


def main() -> int:
    settings = load_settings()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=X264_PRESETS, default=settings.transcode_preset)
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the generated source")
    parser.add_argument("--repeat", type=int, default=1, help="rounds of each measurement; medians are compared")
    args = parser.parse_args()
    if args.repeat < 1 or args.seconds < 1:
        parser.error("--repeat and --seconds must be at least 1")
    segment_seconds = settings.transcode_segment_seconds
    ffmpeg = ffmpeg_binary()

    load_before = os.getloadavg()[0]  # other work on the machine skews every figure below
    times: dict[str, list[float]] = {"pipeline": [], "bare": [], "three": []}
    cpu_times: dict[str, list[float]] = {"pipeline": [], "bare": [], "three": []}
    phases: list[dict[str, float]] = []
    root = Path(tempfile.mkdtemp(prefix="lustrax-bench-transcode-"))
    try:
        source = root / "source.mp4"
        print(f"generating a {args.seconds:g} s source under {root} ...", file=sys.stderr)
        make_source(ffmpeg, source, args.seconds)
        info = probe(source)  # for the baselines; the pipeline's own probe is timed
        renditions = choose_ladder(info.width, info.height, info.rotation, fps=info.fps, has_audio=info.has_audio)

        def pipeline() -> None:
            workdir = fresh_dir(root, "pipeline")
            with PhaseTimer() as timer, Stopwatch("pipeline", times, cpu_times):
                transcode_source(source, workdir, new_video_id(), info=probe(source), preset=args.preset,
                                 segment_seconds=segment_seconds, timeout_s=3600)
            phases.append(timer.phases)
            shutil.rmtree(workdir)

        def bare() -> None:
            outdir = fresh_dir(root, "bare")
            argv = hls_ladder_command(ffmpeg, source, outdir, renditions, info.has_audio, info.fps, segment_seconds,
                                      args.preset, input_format=info.container)
            with Stopwatch("bare", times, cpu_times):
                run_ffmpeg(argv)
            shutil.rmtree(outdir)

        def three_runs() -> None:
            outdir = fresh_dir(root, "three")
            argvs = [per_rendition_command(ffmpeg, source, outdir, r, info, segment_seconds, args.preset)
                     for r in renditions]
            for rendition in renditions:  # without %v in the path the hls muxer does not create it
                (outdir / rendition.name).mkdir()
            with Stopwatch("three", times, cpu_times):
                for argv in argvs:
                    run_ffmpeg(argv)
            shutil.rmtree(outdir)

        order = [pipeline, bare, three_runs]
        for round_no in range(args.repeat):
            # Reverse every other round so that neither side always runs on a warmer (or hotter) machine.
            for measure in (order if round_no % 2 == 0 else order[::-1]):
                print(f"round {round_no + 1}: {measure.__name__} ...", file=sys.stderr)
                measure()

        duration = info.duration_s
        median = {key: statistics.median(values) for key, values in times.items()}
        cpu = {key: statistics.median(values) for key, values in cpu_times.items()}
        affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        mbits = source.stat().st_size * 8 / 1e6 / duration
        print(f"source: {duration:.2f} s, {info.width}x{info.height}@{info.fps:g} {info.video_codec}, "
              f"audio={info.has_audio}, {mbits:.1f} Mbit/s  [{SOURCE_DESCRIPTION}]")
        print("ladder: " + ", ".join(f"{r.name} {r.width}x{r.height} {r.video_bitrate // 1000} kbit/s"
                                     for r in renditions) + f"; segments {segment_seconds} s")
        print(f"preset: {args.preset}   CPUs: {os.cpu_count()} (usable {affinity})   load average before/after: "
              f"{load_before:.2f}/{os.getloadavg()[0]:.2f}   repeat: {args.repeat} (medians)")
        labels = {"pipeline": "pipeline transcode_source()",
                  "bare": "bare hls_ladder_command (1 pass)",
                  "three": "3 per-rendition ffmpeg runs"}
        for key, label in labels.items():
            rounds = ", ".join(f"{value:.2f}" for value in times[key])
            print(f"{label:<33}: {median[key]:7.2f} s  {duration / median[key]:5.2f}x realtime   "
                  f"cpu {cpu[key]:7.2f} s   (wall rounds: {rounds})")
        split = {label: statistics.median(p.get(label, 0.0) for p in phases)
                 for label in ("probe", "ladder", "poster", "storyboard")}
        # Per round, then the median: medians of the parts need not add up to the median of the whole.
        other = statistics.median(total - sum(p.values()) for total, p in zip(times["pipeline"], phases))
        print("pipeline split (medians): " + ", ".join(f"{label} {value:.2f} s" for label, value in split.items())
              + f", rest {other:.2f} s")
        print(f"pipeline / bare:        {median['pipeline'] / median['bare']:.3f}   (goal <= 1.05)   "
              f"cpu {cpu['pipeline'] / cpu['bare']:.3f}")
        print(f"three runs / one pass:  {median['three'] / median['bare']:.3f}   (goal >= 1.2)    "
              f"cpu {cpu['three'] / cpu['bare']:.3f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
