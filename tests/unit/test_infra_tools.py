"""Setup commands (infra/tools.py): a failure says why, not only that it failed."""

from __future__ import annotations

import sys
from pathlib import Path
import pytest
from infra.errors import InstallError
from infra.tools import run_logged

def test_a_failed_setup_command_names_its_last_output(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    with pytest.raises(InstallError) as error:
        run_logged("kafka", [sys.executable, "-c", "import sys; print('Could not reserve heap'); sys.exit(1)"], log)
    assert "exit code 1" in str(error.value) and "Could not reserve heap" in str(error.value)
