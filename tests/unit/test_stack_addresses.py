"""The local stack listens on loopback only: anything else is refused before a process starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.errors import ComponentError
from common.settings import load_settings
from lustrax.stack import LocalStack


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.5", "example.com"])
def test_a_service_on_a_non_loopback_host_is_refused(tmp_path: Path, host: str) -> None:
    stack = LocalStack(load_settings(home=tmp_path, ingest_host=host), tie_to_parent=False)
    with pytest.raises(ComponentError, match="loopback only"):
        stack.check_addresses()
    assert stack.started == []
