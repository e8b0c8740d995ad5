"""The moderation worker: a Faust agent on VideoTranscoded.

For each: run the Moderator in a thread (blocking S3, ffmpeg and the model), send the events it
returns (ModerationDecided, then VideoPublished or ModerationReviewRequested), then move on. A
transient failure (S3, Rekognition throttling past the backend's own retries) is retried with
backoff up to LUSTRAX_MODERATION_MAX_ATTEMPTS; what still fails, or cannot be decoded, goes to the
dead-letter topic (`lustrax dead-letters replay` once the cause is fixed).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import faust

from common.settings import Settings
from infra.s3.buckets import s3_client
from processors.app import faust_app, handle_each, raw_topic, send_event
from processors.moderation.backends import create_backend
from processors.moderation.moderate import ModerationFailure, Moderator
from processors.moderation.policy import load_policy
from processors.transcode.pipeline import retry_delay_s
from schemas.topics import TOPIC_BY_SCHEMA

log = logging.getLogger(__name__)
CONSUMER = "moderation"


def create_moderation_app(settings: Settings) -> faust.App:
    policy = load_policy(settings.moderation_policy)  # a bad policy file stops the worker at once
    app = faust_app("moderation", settings, settings.moderation_web_port, stream_buffer_maxsize=16)
    transcoded = raw_topic(app, TOPIC_BY_SCHEMA["VideoTranscoded"].name)
    moderator = Moderator(settings, s3_client(settings), create_backend(settings), policy)

    async def moderate(event: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        for attempt in range(1, settings.moderation_max_attempts + 1):
            try:
                return await asyncio.to_thread(moderator.run, event)
            except ModerationFailure as failure:
                if not failure.retryable or attempt == settings.moderation_max_attempts:
                    raise
                log.warning("moderation attempt %d of %s failed, retrying: %s", attempt, event["video_id"],
                            failure.reason)
                await asyncio.sleep(retry_delay_s(attempt, settings.moderation_retry_base_s))
        raise AssertionError("unreachable: max_attempts >= 1")

    async def decide_and_publish(event: dict[str, Any]) -> None:
        for schema, record in await moderate(event):
            await send_event(app, schema, record)  # in order: the decision first

    @app.agent(transcoded)
    async def moderation(stream: faust.StreamT) -> None:
        await handle_each(app, stream, "VideoTranscoded", CONSUMER, decide_and_publish, parked=(ModerationFailure,))

    return app


def run_worker(settings: Settings) -> None:
    app = create_moderation_app(settings)
    faust.Worker(app, loglevel="info").execute_from_commandline()
