"""The OpenAPI document is the contract (docs/api.md): schemathesis fuzzes every operation of the
real API, on the real stack, with all of its checks.

The operations are those of the app's own document (collected before the stack is up, so each is a
test of its own: a router added later is fuzzed by construction), and the first test proves that
document is the one the API serves. The rules JSON Schema cannot state are kept by
tests/openapi_hooks.py (through schemathesis.toml); nothing else is configured away.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis.strategies._internal import regex as hypothesis_regex
from schemathesis.config import SchemathesisConfig

from common.settings import Settings, load_settings
from common.tokens import issue_token
from infra.milvus.store import LiteServer, VectorStore
from processors.sink.query_server import start_query_server
from processors.sink.service import sink_health
from producers.app import create_app
from tests.helpers import age_headers
from tests.integration.test_catalog_api import produce
from tests.lifecycle import Video
from tests.openapi_hooks import PUBLIC_VIDEO_ID

pytestmark = pytest.mark.integration
CONFIG = Path(__file__).resolve().parents[2] / "schemathesis.toml"
# Fuzzed cases per operation, beyond the examples and the coverage phase's own cases: the budget.
MAX_EXAMPLES = 5
# Hypothesis' health checks judge the generator (slow on a busy machine, with the display-text
# patterns), not the API: every check of schemathesis' stays on.
GENERATION = settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
STATEFUL = settings(GENERATION, max_examples=8, stateful_step_count=4)

# Hypothesis builds a pattern's strategy anew for each compiled regex schemathesis hands it (its own
# cache keys only plain strings): 2-3 s each for the display-text patterns, whose private-use ranges
# it adds one character at a time, dozens of times per operation. The same strategy for the same
# pattern, flags and alphabet, as hypothesis' cache does for a pattern given as a string.
# A hypothesis internal: if a release renames it, the test runs uncached (slower), never wrongly.
_BUILD_REGEX_STRATEGY = getattr(hypothesis_regex, "regex_strategy", None)
_REGEX_STRATEGIES: dict[tuple[Any, ...], Any] = {}


def _regex_strategy(regex: Any, fullmatch: bool, **options: Any) -> Any:
    assert _BUILD_REGEX_STRATEGY is not None
    compiled = regex if isinstance(regex, re.Pattern) else re.compile(regex)
    key = (compiled.pattern, compiled.flags, fullmatch, repr(sorted(options.items())))
    if key not in _REGEX_STRATEGIES:
        _REGEX_STRATEGIES[key] = _BUILD_REGEX_STRATEGY(compiled, fullmatch, **options)
    return _REGEX_STRATEGIES[key]


if _BUILD_REGEX_STRATEGY is not None:
    hypothesis_regex.regex_strategy = _regex_strategy

# Building the document touches nothing (no secret, no broker): the app's start-up does that.
DOCUMENT = create_app(load_settings()).openapi()
schema = schemathesis.openapi.from_dict(DOCUMENT, config=SchemathesisConfig.from_path(str(CONFIG)))


@pytest.fixture(scope="module", autouse=True)
def sink_queries(stack: Settings, sink: Any) -> Iterator[None]:
    """The sink's query endpoint the API asks for `GET /v1/trending` (the sink in this process)."""
    server = start_query_server("127.0.0.1", stack.sink_query_port, stack, lambda: sink_health(sink))
    yield
    server.shutdown()


@pytest.fixture(scope="module", autouse=True)
def vector_store(stack: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Milvus for `GET /v1/reels`: Milvus Lite served here, as the recs worker serves it."""
    lite = LiteServer(tmp_path_factory.mktemp("milvus"), stack.recs_milvus_port)
    store = VectorStore(stack)
    store.ensure_collections()
    store.close()
    yield
    lite.stop()


@pytest.fixture(scope="module", autouse=True)
def public_video(stack: Settings, ingest_api: str) -> None:
    """The published video the hooks' DMCA notices and complaints name (a rule of theirs: the video
    must be public), in the API's catalog before the fuzzing starts."""
    video = Video(video_id=PUBLIC_VIDEO_ID)
    produce(stack, [video.uploaded(), video.published()])
    deadline = time.monotonic() + 30
    while httpx.get(f"{ingest_api}/v1/videos/{PUBLIC_VIDEO_ID}", headers=age_headers(stack)).status_code != 200:
        assert time.monotonic() < deadline, "the catalog did not show the contract's video"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def admin(stack: Settings) -> dict[str, str]:
    """An admin's token and an age token: every operation is reachable (schemathesis also tries each
    one without them and with bad ones)."""
    token = issue_token(stack.jwt_signing_secret, "contract-admin", ("admin",), 3600)
    return age_headers(stack, Authorization=f"Bearer {token}")


def test_the_api_serves_the_document_fuzzed_here(ingest_api: str) -> None:
    assert httpx.get(f"{ingest_api}/openapi.json").json() == DOCUMENT


@schema.parametrize()
@GENERATION
def test_every_operation_answers_as_documented(case: Any, ingest_api: str, admin: dict[str, str]) -> None:
    case.call_and_validate(base_url=ingest_api, headers=admin)


def test_sequences_of_operations_answer_as_documented(ingest_api: str, admin: dict[str, str]) -> None:
    # Chains along the document's links (a created video's id into its record, playback, review...).
    # That valid data gets past authentication and validation is each operation's own check above
    # (positive data accepted); here every answer of every step is checked as well.
    schema.config.update(base_url=ingest_api, headers=admin)
    schema.as_state_machine().run(settings=STATEFUL)
