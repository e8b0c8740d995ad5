"""`lustrax recs train`: ask the running recs worker to train now (it is the vector store's one writer)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from common.errors import LustraxError
from common.settings import Settings
from common.tokens import issue_token


def train_now(settings: Settings) -> dict[str, Any]:
    """The training's report, once the worker has trained."""
    token = issue_token(settings.jwt_signing_secret, "lustrax-cli", ("admin",), 900)
    url = f"http://127.0.0.1:{settings.recs_web_port}/v1/train"
    request = urllib.request.Request(url, method="POST", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=900) as response:
            return json.loads(response.read())  # type: ignore[no-any-return]
    except urllib.error.HTTPError as exc:
        error = json.loads(exc.read() or b"{}").get("error", {})
        raise LustraxError(f"training failed: {error.get('message', exc.reason)}") from None
    except OSError:
        raise LustraxError(f"the recs worker ({url}) does not answer: `lustrax up` starts it") from None
