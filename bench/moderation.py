"""Moderation benchmark: the moderation step per minute of video against bare model inference on
the same frames, in the same run.

    .venv/bin/python -m bench.moderation [--seconds 60] [--repeat 3]

A synthetic 1080p30 source (bench.transcode.make_source: testsrc2 + grain) is transcoded once
(ultrafast; not timed) and its ladder put into the staging bucket of a versitygw server started
for the run (loopback, temp dir). Then, with the local backend (NudeNet) and the default policy:

1. moderation: `Moderator.run(VideoTranscoded)` wall time, what the worker does per video: read the
   decision record, the upload manifest, the poster and the lowest rendition from S3, sample a frame
   every LUSTRAX_MODERATION_SAMPLE_INTERVAL_S with ffmpeg, the model on every frame, the policy,
   the decision record, the server-side copy of the ladder into the public bucket. The record is
   removed between rounds, so that every round decides anew.
2. bare: the model alone (`NudeDetector.detect`) on exactly those frames (the poster and the frames
   sampled by the same function), already on local disk.

Prints the frame count, medians of both (wall and CPU seconds: the machine is shared), moderation
seconds per minute of video (goal < 3 s) and moderation / bare (goal <= 1.3), and a breakdown of one
round by step.

    .venv/bin/python -m bench.moderation --end-to-end [--seconds 30]

The whole path on a local stack started for the run (Kafka, versitygw; the ingest API, the transcode
and the moderation workers as their own processes, default settings): a 1080p30 clip is uploaded
through the API and the time from `POST .../complete` to VideoPublished on Kafka is measured (with
when VideoTranscoded appeared), against the bare one-pass ffmpeg ladder command of the same clip
(`hls_ladder_command`, as bench/transcode.py runs it) in the same run. Goal: at most 1.25x.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.transcode import Stopwatch, make_source
from common.process import free_port
from common.settings import Settings, load_settings
from infra.s3.buckets import ensure_buckets, s3_client
from infra.s3.layout import moderation_record_key, new_video_id
from infra.s3.server import VersityGateway
from infra.s3.uploads import UploadManifest, write_manifest
from processors.moderation.backends.local import LocalBackend
from processors.moderation.frames import fetch_rendition, sample_frames
from processors.moderation.moderate import Moderator
from processors.moderation.policy import load_policy
from processors.moderation.publish import publish_ladder
from processors.transcode.ffmpeg.binary import ffmpeg_binary
from processors.transcode.ffmpeg.probe import probe
from processors.transcode.job import transcode_source
from processors.transcode.pipeline import transcoded_record
from processors.transcode.storage import upload_ladder


def stage_video(settings: Settings, s3: Any, source: Path, workdir: Path) -> dict[str, Any]:
    """Transcode `source` and stage its ladder and manifest like the pipeline does; its VideoTranscoded."""
    video_id = new_video_id()
    output = transcode_source(source, workdir, video_id, info=probe(source), preset="ultrafast", timeout_s=3600)
    upload_ladder(s3, settings.s3_staging_bucket, video_id, output)
    write_manifest(s3, settings.s3_uploads_bucket, UploadManifest(
        video_id, "bench", "Bench clip", "video/mp4", source.stat().st_size, False, [], datetime.now(UTC).isoformat()))
    return transcoded_record(video_id, settings.s3_staging_bucket, output, uuid.uuid4().hex)


def breakdown(moderator: Moderator, backend: LocalBackend, event: dict[str, Any], scratch: Path) -> dict[str, float]:
    """One round's steps, timed one by one (the same calls the Moderator makes)."""
    s3, settings, times = moderator.s3, moderator.settings, {}
    scratch.mkdir()
    started = time.perf_counter()
    s3.download_file(event["bucket"], event["poster_key"], str(scratch / "poster.jpg"))
    playlist = fetch_rendition(s3, event["bucket"], event["renditions"][0]["playlist_key"], scratch / "r")
    times["fetch (poster + lowest rendition)"] = time.perf_counter() - started
    started = time.perf_counter()
    frames = sample_frames(playlist, scratch / "f", settings.moderation_sample_interval_s)
    times["sample frames (ffmpeg)"] = time.perf_counter() - started
    started = time.perf_counter()
    for frame in [scratch / "poster.jpg", *(f.path for f in frames)]:
        backend.analyze(frame)
    times["model + taxonomy mapping"] = time.perf_counter() - started
    started = time.perf_counter()
    publish_ladder(s3, settings.s3_staging_bucket, settings.s3_public_bucket, event["video_id"], False,
                   event["poster_key"])
    times["publish (server-side copies)"] = time.perf_counter() - started
    return times


def end_to_end(seconds: float) -> int:
    """Upload-complete -> VideoPublished on the real stack vs the bare ladder ffmpeg run."""
    import httpx
    from confluent_kafka import OFFSET_END, Consumer, TopicPartition

    from common.tokens import issue_token
    from lustrax.services import PROJECT_SERVICES, ServiceProcess
    from lustrax.stack import LocalStack
    from processors.transcode.ffmpeg.commands import hls_ladder_command
    from processors.transcode.ffmpeg.ladder import choose_ladder
    from processors.moderation.frames import run_ffmpeg
    from schemas.codec import decode
    from schemas.topics import TOPIC_BY_SCHEMA

    with tempfile.TemporaryDirectory(prefix="lustrax-bench-e2e-") as tmp:
        root = Path(tmp)
        settings = load_settings(
            home=root / "home", kafka_bootstrap=f"127.0.0.1:{free_port()}", kafka_controller_port=free_port(),
            s3_endpoint=f"http://127.0.0.1:{free_port()}", ingest_port=free_port(), transcode_web_port=free_port(),
            moderation_web_port=free_port())
        source = root / "source.mp4"
        print(f"generating a {seconds:g} s 1080p30 source (not timed)...", flush=True)
        make_source(ffmpeg_binary(), source, seconds)
        stack = LocalStack(settings, with_services=False)
        stack.start()
        services = [ServiceProcess(settings, PROJECT_SERVICES[name], "127.0.0.1", port) for name, port in (
            ("ingest", settings.ingest_port), ("transcode", settings.transcode_web_port),
            ("moderation", settings.moderation_web_port))]
        try:
            for service in services:
                service.start()
            for service in services:
                service.wait_ready()
            topics = [TOPIC_BY_SCHEMA[schema].name for schema in ("VideoTranscoded", "VideoPublished")]
            consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": uuid.uuid4().hex})
            consumer.assign([TopicPartition(topic, p, OFFSET_END) for topic in topics
                             for p in consumer.list_topics(topic, timeout=10).topics[topic].partitions])
            token = issue_token(settings.jwt_signing_secret, "bench")
            with httpx.Client(base_url=f"http://127.0.0.1:{settings.ingest_port}", timeout=60,
                              headers={"Authorization": f"Bearer {token}"}) as api:
                data = source.read_bytes()
                ticket = api.post("/v1/uploads", json={"title": "bench", "content_type": "video/mp4",
                                                        "size_bytes": len(data)}).json()
                httpx.put(ticket["upload_url"], content=data, headers=ticket["upload_headers"],
                          timeout=60).raise_for_status()
                consumer.poll(1.0)  # the assignment takes effect before the clock starts
                started = time.perf_counter()
                api.post(f"/v1/uploads/{ticket['video_id']}/complete").raise_for_status()
            seen: dict[str, float] = {}
            deadline = started + 1800
            while "VideoPublished" not in seen and time.perf_counter() < deadline:
                msg = consumer.poll(0.2)
                if msg is None or msg.error():
                    continue
                schema, record = decode(msg.value())
                if record["video_id"] == ticket["video_id"]:
                    seen.setdefault(schema, time.perf_counter() - started)
            consumer.close()
        finally:
            for service in services:
                if service.process is not None:
                    service.process.stop()
            stack.stop()
        if "VideoPublished" not in seen:
            print("the video was not published within 30 minutes")
            return 1
        info = probe(source)
        renditions = choose_ladder(info.width, info.height, info.rotation, fps=info.fps, has_audio=info.has_audio)
        (root / "bare").mkdir()
        bare_started = time.perf_counter()
        run_ffmpeg(hls_ladder_command(ffmpeg_binary(), source, root / "bare", renditions, info.has_audio, info.fps,
                                      settings.transcode_segment_seconds, settings.transcode_preset,
                                      input_format=info.container))
        bare = time.perf_counter() - bare_started
    published = seen["VideoPublished"]
    print(f"source: {seconds:g} s 1080p30; preset {settings.transcode_preset}; {os.cpu_count()} CPUs; "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"upload complete -> VideoTranscoded {seen.get('VideoTranscoded', float('nan')):.2f} s, "
          f"-> VideoPublished {published:.2f} s")
    print(f"bare one-pass ladder ffmpeg: {bare:.2f} s; published / bare: {published / bare:.2f} (goal <= 1.25)")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=None, help="source duration (default 60; 30 end to end)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--end-to-end", action="store_true", help="upload-complete -> published vs bare transcode")
    args = parser.parse_args()
    if args.end_to_end:
        return end_to_end(args.seconds or 30.0)
    args.seconds = args.seconds or 60.0
    with tempfile.TemporaryDirectory(prefix="lustrax-bench-moderation-") as tmp:
        root = Path(tmp)
        settings = load_settings(home=root / "home", s3_endpoint=f"http://127.0.0.1:{free_port()}")
        gateway = VersityGateway(settings)
        gateway.start()
        try:
            gateway.wait_ready()
            s3 = s3_client(settings)
            ensure_buckets(settings, s3)
            source = root / "source.mp4"
            print(f"generating and transcoding a {args.seconds:g} s 1080p30 source (not timed)...", flush=True)
            make_source(ffmpeg_binary(), source, args.seconds)
            (root / "work").mkdir()
            event = stage_video(settings, s3, source, root / "work")
            backend = LocalBackend()  # loaded once, as the worker does at start
            moderator = Moderator(settings, s3, backend, load_policy())
            moderator.run(event)  # warm-up: ONNX session, page cache
            wall: dict[str, list[float]] = {"moderation": [], "bare": []}
            cpu: dict[str, list[float]] = {"moderation": [], "bare": []}
            scratch = root / "frames"
            s3.download_file(event["bucket"], event["poster_key"], str(root / "poster.jpg"))
            playlist = fetch_rendition(s3, event["bucket"], event["renditions"][0]["playlist_key"], root / "r")
            frames = [root / "poster.jpg",
                      *(f.path for f in sample_frames(playlist, scratch, settings.moderation_sample_interval_s))]
            for _ in range(args.repeat):
                s3.delete_object(Bucket=settings.s3_staging_bucket, Key=moderation_record_key(event["video_id"]))
                with Stopwatch("moderation", wall, cpu):
                    events = moderator.run(event)
                assert events[0][1]["frames_checked"] == len(frames), (events[0][1]["frames_checked"], len(frames))
                with Stopwatch("bare", wall, cpu):
                    for frame in frames:
                        backend.detector.detect(str(frame))
            steps = breakdown(moderator, backend, event, root / "breakdown")
        finally:
            assert gateway.process is not None
            gateway.process.stop()
    minutes = args.seconds / 60
    moderation, bare = statistics.median(wall["moderation"]), statistics.median(wall["bare"])
    print(f"source: {args.seconds:g} s 1080p30; lowest rendition sampled every "
          f"{settings.moderation_sample_interval_s:g} s: {len(frames)} frames (poster included); "
          f"{os.cpu_count()} CPUs; {args.repeat} rounds, medians")
    print(f"moderation (Moderator.run): {moderation:.2f} s wall, {statistics.median(cpu['moderation']):.2f} s CPU"
          f" = {moderation / minutes:.2f} s per minute of video (goal < 3)")
    print(f"bare NudeNet on the same frames: {bare:.2f} s wall, {statistics.median(cpu['bare']):.2f} s CPU "
          f"({1000 * bare / len(frames):.0f} ms per frame)")
    print(f"moderation / bare: {moderation / bare:.2f} wall, "
          f"{statistics.median(cpu['moderation']) / statistics.median(cpu['bare']):.2f} CPU (goal <= 1.3)")
    print("one round by step: " + ", ".join(f"{name} {seconds:.2f} s" for name, seconds in steps.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
