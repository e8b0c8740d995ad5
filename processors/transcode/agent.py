"""The transcode worker: a Faust agent on the uploads topic.

For each VideoUploaded: run the pipeline in a thread (the event loop keeps heartbeating), report
progress on the progress topic, then emit VideoTranscoded, or TranscodeFailed once the error is
final. Transient errors (S3, timeouts) are retried with exponential backoff up to
LUSTRAX_TRANSCODE_MAX_ATTEMPTS; a corrupt or non-video source fails at once. A message that cannot
be decoded, or that breaks the worker in an unexpected way, goes to the dead-letter topic and the
agent moves on.

Limits: one transcode at a time per worker (run more workers for more: up to the uploads topic's
partition count); a video may last LUSTRAX_TRANSCODE_MAX_DURATION_S (3 h) and take
LUSTRAX_TRANSCODE_TIMEOUT_S (4 h) to transcode; the consumer's poll interval allows that.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import faust

from infra.s3.buckets import s3_client
from common.settings import Settings
from processors.app import faust_app, handle_each, raw_topic, send_event
from processors.transcode.pipeline import (FinalTranscodeFailure, TranscodePipeline, failed_record, progress_record,
                                           run_with_retries)
from schemas.topics import TOPIC_BY_SCHEMA

log = logging.getLogger(__name__)
CONSUMER = "transcode"
PROGRESS_EVERY_S = 2.0


def create_transcode_app(settings: Settings) -> faust.App:
    app = faust_app(
        "transcode", settings, settings.transcode_web_port,
        # A transcode may take hours: the group must not consider the worker dead meanwhile.
        broker_max_poll_interval=settings.transcode_timeout_s + 600,
        broker_commit_livelock_soft_timeout=settings.transcode_timeout_s + 600,
        stream_buffer_maxsize=16,
    )
    uploads = raw_topic(app, TOPIC_BY_SCHEMA["VideoUploaded"].name)
    pipeline = TranscodePipeline(settings, s3_client(settings))

    @app.task
    async def clean_workdir() -> None:
        pipeline.clean_stale_work()

    async def transcode_with_retries(upload: dict[str, Any]) -> None:
        video_id = upload["video_id"]
        loop = asyncio.get_running_loop()
        last_sent = 0.0

        def on_progress(percent: float) -> None:  # called from the pipeline's thread
            nonlocal last_sent
            now = time.monotonic()
            if now - last_sent >= PROGRESS_EVERY_S or percent >= 100:
                last_sent = now
                asyncio.run_coroutine_threadsafe(
                    send_event(app, "TranscodeProgress", progress_record(video_id, percent)), loop)

        try:
            event = await run_with_retries(lambda: asyncio.to_thread(pipeline.run, upload, on_progress),
                                           settings.transcode_max_attempts, settings.transcode_retry_base_s)
        except FinalTranscodeFailure as failure:
            log.warning("transcode of %s failed after %d attempt(s): %s", video_id, failure.attempt,
                        failure.error.reason)
            await send_event(app, "TranscodeFailed", failed_record(
                video_id, failure.error.reason, failure.error.retryable, failure.attempt))
            return
        await send_event(app, "VideoTranscoded", event)
        log.info("transcoded %s: %d renditions", video_id, len(event["renditions"]))

    @app.agent(uploads)
    async def transcode(stream: faust.StreamT) -> None:
        await handle_each(app, stream, "VideoUploaded", CONSUMER, transcode_with_retries)

    return app


def run_worker(settings: Settings) -> None:
    app = create_transcode_app(settings)
    faust.Worker(app, loglevel="info").execute_from_commandline()
