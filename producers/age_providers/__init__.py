"""Age-verification providers behind one interface (docs/trust-and-safety.md, "Provider flow").

A provider hosts the check: the API creates a session, the user is sent to the provider's page,
and the outcome comes back by the provider's signed webhook or by asking the provider for the
session's result. The provider is the source of truth: no session state is kept here beyond a
bounded memory of webhook results (`RecordedResults`), which only spares a poll. A restarted API,
or another API process, asks the provider instead, and gets the same answer.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

from common.errors import ApiError
from common.settings import Settings

# Our session id is "<provider>.<the provider's session id>": the exchange knows whom to ask.
SESSION_ID = re.compile(r"(?P<provider>[a-z]{2,16})\.(?P<id>[A-Za-z0-9-]{1,64})")
SESSION_ID_PATTERN = SESSION_ID.pattern


@dataclass(frozen=True)
class ProviderSession:
    session_id: str  # the provider's
    redirect_url: str  # the provider's hosted page for this session


@dataclass(frozen=True)
class ProviderResult:
    session_id: str  # the provider's
    status: str  # the provider's word for it (Yoti: PENDING, IN_PROGRESS, COMPLETE, FAIL, ERROR, ...)
    passed: bool  # over the age threshold by a method we know
    method: str | None  # common.age_policy.METHODS, None for a method we do not map
    at: float  # epoch s: when the session was created (polled) or the notification sent (webhook)

    @property
    def pending(self) -> bool:
        return self.status in ("PENDING", "IN_PROGRESS")


class AgeProvider(Protocol):
    name: str

    async def create_session(self) -> ProviderSession: ...

    async def result(self, session_id: str) -> ProviderResult: ...

    def notification(self, body: bytes) -> ProviderResult:
        """A webhook's result once its signature is verified; ApiError 403 `invalid_signature` otherwise."""
        ...

    async def close(self) -> None: ...


def split_session_id(session_id: str) -> tuple[str, str]:
    """'yoti.<uuid>' -> ('yoti', '<uuid>'); anything else names no session: 404."""
    match = SESSION_ID.fullmatch(session_id)
    if match is None:
        raise ApiError(404, "not_found", "no age-verification session with this session_id", "session_id")
    return match["provider"], match["id"]


class RecordedResults:
    """Passing webhook results by (provider, session id), at most `max_entries` (oldest forgotten:
    the exchange then polls the provider)."""

    def __init__(self, max_entries: int = 10_000) -> None:
        self.max_entries = max_entries
        self._results: OrderedDict[tuple[str, str], ProviderResult] = OrderedDict()

    def record(self, provider: str, result: ProviderResult) -> None:
        self._results[(provider, result.session_id)] = result
        self._results.move_to_end((provider, result.session_id))
        while len(self._results) > self.max_entries:
            self._results.popitem(last=False)

    def get(self, provider: str, session_id: str) -> ProviderResult | None:
        return self._results.get((provider, session_id))


def configured_providers(settings: Settings) -> dict[str, AgeProvider]:
    """The providers whose credentials are set, by name (Yoti: LUSTRAX_YOTI_SDK_ID and _API_KEY)."""
    from producers.age_providers.yoti import YotiClient

    providers: dict[str, AgeProvider] = {}
    if settings.yoti_sdk_id and settings.yoti_api_key:
        providers[YotiClient.name] = YotiClient(settings, settings.yoti_sdk_id, settings.yoti_api_key)
    return providers
