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
from processors.app import dead_letter, faust_app, raw_topic, send_event
from processors.moderation.backends import create_backend
from processors.moderation.moderate import ModerationFailure, Moderator
from processors.moderation.policy import load_policy
from processors.transcode.pipeline import retry_delay_s
from schemas.codec import decode
from schemas.errors import SchemaError
from schemas.topics import TOPIC_BY_SCHEMA

log = logging.getLogger(__name__)
CONSUMER = "moderation"


def create_moderation_app(settings: Settings) -> faust.App:
    app = faust_app("moderation", settings, settings.moderation_web_port, stream_buffer_maxsize=16)
    transcoded = raw_topic(app, TOPIC_BY_SCHEMA["VideoTranscoded"].name)
    outputs = {schema: raw_topic(app, TOPIC_BY_SCHEMA[schema].name)
               for schema in ("ModerationDecided", "VideoPublished", "ModerationReviewRequested")}
    # Loaded at start: a bad policy file or backend fails the worker at once, not per message.
    moderator = Moderator(settings, s3_client(settings), create_backend(settings), load_policy(settings.moderation_policy))

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

    @app.agent(transcoded)
    async def moderation(stream: faust.StreamT) -> None:
        async for message_event in stream.events():
            message = message_event.message
            try:
                _, event = decode(message.value, "VideoTranscoded")
            except SchemaError as exc:
                await dead_letter(app, message, CONSUMER, f"undecodable VideoTranscoded: {exc}")
                continue
            try:
                for schema, record in await moderate(event):
                    await send_event(outputs[schema], schema, record)  # in order: the decision first
            except ModerationFailure as failure:
                await dead_letter(app, message, CONSUMER, failure.reason)
            except Exception as exc:  # noqa: BLE001 - a bug must not stop the stream; park the message
                log.exception("unexpected error on %s", event.get("video_id"))
                await dead_letter(app, message, CONSUMER, f"unexpected {type(exc).__name__}: {exc}")

    return app


def run_worker(settings: Settings) -> None:
    app = create_moderation_app(settings)
    faust.Worker(app, loglevel="info").execute_from_commandline()
