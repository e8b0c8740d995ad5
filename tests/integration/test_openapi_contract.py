"""The OpenAPI document is the contract (docs/api.md): schemathesis fuzzes every operation of the
real API, on the real stack, with all of its checks.

The operations come from the served /openapi.json, so a router added later is fuzzed by
construction. The rules JSON Schema cannot state are kept by tests/openapi_hooks.py (through
schemathesis.toml); nothing else is configured away.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig

from common.settings import Settings
from common.tokens import issue_token

pytestmark = pytest.mark.integration
CONFIG = Path(__file__).resolve().parents[2] / "schemathesis.toml"
# Fuzzed cases per operation beyond the examples and the coverage phase's own cases: the budget.
MAX_EXAMPLES = 20
STATEFUL = settings(max_examples=10, stateful_step_count=4, deadline=None,
                    suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def contract(ingest_api: str, stack: Settings) -> Any:
    """The served document, fuzzed against the same API with an admin's token (every operation is
    reachable; schemathesis also tries each without it and with a bad one)."""
    schema = schemathesis.openapi.from_url(f"{ingest_api}/openapi.json",
                                           config=SchemathesisConfig.from_path(str(CONFIG)))
    token = issue_token(stack.jwt_signing_secret, "contract-admin", ("admin",), 3600)
    schema.config.update(headers={"Authorization": f"Bearer {token}"})
    return schema


lazy = schemathesis.pytest.from_fixture("contract")


@lazy.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None)
def test_every_operation_answers_as_documented(case: Any) -> None:
    case.call_and_validate()


def test_sequences_of_operations_answer_as_documented(contract: Any) -> None:
    contract.as_state_machine().run(settings=STATEFUL)
