"""Broker stopped: 503 with Retry-After and no false acknowledgement; recovery once it is back."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import httpx
import pytest

from infra.kafka.broker import KafkaBroker
from infra.kafka.topics import ensure_topics
from common.process import free_port
from common.settings import Settings, load_settings
from producers.app import create_app
from schemas.topics import TOPIC_BY_SCHEMA
from tests.helpers import served
from tests.integration.test_ingest_api import consume_ids, token

pytestmark = pytest.mark.integration


def _view(user: str) -> dict[str, str]:
    return {"type": "view", "video_id": "v-down", "user_id": user, "session_id": "s",
            "event_id": str(uuid.uuid4())}


def test_broker_stopped_gives_503_and_nothing_is_acknowledged(stack: Settings, tmp_path: Path) -> None:
    settings = load_settings(
        home=tmp_path, kafka_bootstrap=f"127.0.0.1:{free_port()}", kafka_controller_port=free_port(),
        s3_endpoint=stack.s3_endpoint, s3_access_key=stack.s3_credentials[0],
        s3_secret_key=stack.s3_credentials[1], jwt_secret=stack.jwt_signing_secret,
        ingest_delivery_timeout_ms=2000,
    )
    broker = KafkaBroker(settings)
    broker.start()
    try:
        broker.wait_ready()
        ensure_topics(settings.kafka_bootstrap)
        with served(create_app(settings)) as url, httpx.Client(base_url=url, timeout=30) as api:
            before = _view("u")
            assert api.post("/v1/events", json=before, headers=token(settings, "u")).status_code == 202

            assert broker.process is not None
            broker.process.stop()
            during = _view("u")
            started = time.monotonic()
            refused = api.post("/v1/events", json=during, headers=token(settings, "u"))
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"]["code"] == "broker_unavailable"
            assert int(refused.headers["Retry-After"]) > 0
            assert time.monotonic() - started < 10  # bounded by the delivery timeout, not hanging
            assert api.get("/readyz").status_code == 503

            broker.start()
            broker.wait_ready()
            after = _view("u")
            response = api.post("/v1/events", json=after, headers=token(settings, "u"))
            assert response.status_code == 202, response.text
            found = consume_ids(settings, TOPIC_BY_SCHEMA["VideoView"].name, [before["event_id"], after["event_id"]])
            assert set(found) == {before["event_id"], after["event_id"]}
            # The refused event was never acknowledged; the client retries it with the same event_id.
            retry = api.post("/v1/events", json=during, headers=token(settings, "u"))
            assert retry.status_code == 202
    finally:
        if broker.process is not None:
            broker.process.stop()
