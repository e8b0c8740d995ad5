"""Build versitygw with `go install` at a pinned version into the cache directory (once)."""

from __future__ import annotations

import os
from pathlib import Path

from infra.tools import require_tool, run_logged
from common.settings import Settings

MODULE = "github.com/versity/versitygw/cmd/versitygw"


def versitygw_binary(settings: Settings) -> Path:
    return settings.cache_dir / "bin" / f"versitygw-{settings.versitygw_version}" / "versitygw"


def ensure_versitygw(settings: Settings) -> Path:
    binary = versitygw_binary(settings)
    if binary.exists():
        return binary
    go = require_tool("s3", "go", "install Go 1.24+ (Debian: golang) or put versitygw at " + str(binary))
    env = {**os.environ, "GOBIN": str(binary.parent), "CGO_ENABLED": "0"}
    run_logged("s3", [go, "install", f"{MODULE}@{settings.versitygw_version}"],
               settings.logs_dir / "setup-s3.log", env=env)
    return binary
