"""The age gate (API.md "Age gate", docs/trust-and-safety.md): a self-declaration, or a provider's
check, exchanged for a signed, expiring age token, also set as the `lustrax_age` cookie.

`POST /v1/age-gate` takes the seed's "I am 18" self-declaration where the request's jurisdiction
accepts it. The provider flow: `POST /v1/age-gate/sessions` creates a session at the provider and
answers the page to send the user to; the provider's webhook lands at
`POST /v1/age-gate/callbacks/{provider}` (signature checked: a bad one is a 403 and changes
nothing); `POST /v1/age-gate/sessions/{session_id}/token` exchanges a passed session for a token,
from a recorded webhook result or else by asking the provider. Every route is public (no account:
the token says nothing about who passed); the provider routes are rate-limited per client address.
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from common.age_policy import ASSURANCES, SELF_DECLARATION
from common.errors import ApiError
from common.settings import Settings
from common.tokens import issue_age_token
from producers.age_providers import SESSION_ID_PATTERN, AgeProvider, ProviderResult, RecordedResults, \
    split_session_id
from producers.deps import AGE_COOKIE, JsonBody, ServiceDep, set_kind
from producers.events import validation_error
from producers.limits import TokenBucketLimiter
from producers.openapi import operation

router = APIRouter(prefix="/v1/age-gate")
KIND = "age_gate"
# A provider session may be exchanged this long after its session's lifetime (the user was slow).
EXCHANGE_GRACE_S = 600
SessionIdPath = Annotated[str, Path(description="`<provider>.<the provider's session id>`, as created here.",
                                    json_schema_extra={"pattern": f"^{SESSION_ID_PATTERN}$"})]


class AgeDeclaration(BaseModel):
    """The seed's "I am 18 or older" gate."""

    model_config = ConfigDict(extra="forbid")
    method: Literal["self_declaration"]
    confirm_over_18: Literal[True]


class SessionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    provider: Literal["yoti"]


class AgeToken(BaseModel):
    age_token: str
    expires_at: datetime
    method: str
    assurance: Literal[tuple(sorted(ASSURANCES))]  # type: ignore[valid-type]


class AgeSession(BaseModel):
    session_id: str
    redirect_url: str


class NotificationReceived(BaseModel):
    recorded: bool  # a passing result, now remembered for the exchange


NOTIFICATION = ("ProviderNotification", TypeAdapter(dict[str, Any]))


class AgeGate:
    """What the age gate's routes share, one per process (producers/app.py builds it)."""

    def __init__(self, settings: Settings, providers: dict[str, AgeProvider]) -> None:
        self.settings = settings
        self.providers = providers
        self.limiter = TokenBucketLimiter(settings.age_gate_burst, settings.age_gate_rate_per_min / 60)
        self.results = RecordedResults()

    def provider(self, name: str) -> AgeProvider:
        provider = self.providers.get(name)
        if provider is None:
            raise ApiError(404, "provider_not_configured", f"no age-verification provider {name[:32]!r} is "
                           "configured here", "provider")
        return provider

    def limit(self, request: Request) -> None:
        address = request.client.host if request.client else "unknown"
        wait_s = self.limiter.try_acquire({address: 1}, time.monotonic())
        if wait_s > 0:
            raise ApiError(429, "rate_limited", "too many age-verification requests from this address", None,
                           retry_after_s=max(1, math.ceil(min(wait_s, 3600))))

    async def close(self) -> None:
        for provider in self.providers.values():
            await provider.close()


def gate_of(request: Request) -> AgeGate:
    return request.app.state.age_gate  # type: ignore[no-any-return]


def _parse(model: type[BaseModel], body: bytes) -> Any:
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise validation_error(exc) from None


def granted(request: Request, settings: Settings, method: str) -> JSONResponse:
    """The token in the body and as the lustrax_age cookie (HttpOnly, Secure, SameSite=Lax), where
    the request's jurisdiction accepts `method`; 403 `method_not_accepted` otherwise."""
    policy = settings.age_policy
    jurisdiction = policy.jurisdiction_of(request.headers)
    if not policy.accepts(jurisdiction, method):
        accepted = ", ".join(sorted(policy.accepted_methods(jurisdiction)))
        raise ApiError(403, "method_not_accepted", f"{method} is not accepted in {jurisdiction}; accepted: "
                       f"{accepted} (a provider's check: POST /v1/age-gate/sessions)", "method")
    token, grant = issue_age_token(settings.age_token_key, method, jurisdiction, settings.age_token_ttl_s)
    expires_at = datetime.fromtimestamp(grant.expires_at, UTC).isoformat().replace("+00:00", "Z")
    response = JSONResponse({"age_token": token, "expires_at": expires_at, "method": method,
                             "assurance": grant.assurance}, headers={"Cache-Control": "no-store"})
    response.set_cookie(AGE_COOKIE, token, max_age=settings.age_token_ttl_s, path="/", secure=True, httponly=True,
                        samesite="lax")
    return response


@router.post("", **operation(200, AgeToken, body=AgeDeclaration, errors=(403,),
                             description="An age token for a self-declaration, also as the `lustrax_age` cookie."),
             description="`confirm_over_18` must be true (422 naming it otherwise). 403 `method_not_accepted` where "
                         "the request's jurisdiction requires a highly effective method (docs/trust-and-safety.md).")
async def declare(request: Request, service: ServiceDep, body: JsonBody) -> JSONResponse:
    set_kind(request, KIND)
    _parse(AgeDeclaration, body)
    return granted(request, service.settings, SELF_DECLARATION)


@router.post("/sessions", **operation(201, AgeSession, body=SessionRequest, errors=(404, 429, 503),
                                      description="A session at the provider and the page to send the user to."),
             description="404 `provider_not_configured` when the provider's credentials are not set.")
async def create_session(request: Request, body: JsonBody) -> JSONResponse:
    set_kind(request, KIND)
    wanted = _parse(SessionRequest, body)
    gate = gate_of(request)
    provider = gate.provider(wanted.provider)
    gate.limit(request)
    session = await provider.create_session()
    return JSONResponse({"session_id": f"{provider.name}.{session.session_id}", "redirect_url": session.redirect_url},
                        status_code=201, headers={"Cache-Control": "no-store"})


@router.post("/callbacks/{provider}", **operation(
    200, NotificationReceived, body=NOTIFICATION, errors=(403, 404),
    description="The provider's webhook; a passing result is remembered for the exchange."),
    description="403 `invalid_signature` for a notification the provider did not sign: nothing changes.")
async def callback(provider: str, request: Request, body: JsonBody) -> dict[str, bool]:
    set_kind(request, KIND)
    gate = gate_of(request)
    source = gate.provider(provider)
    result = source.notification(body)
    fresh = time.time() - result.at <= gate.settings.age_gate_session_ttl_s + EXCHANGE_GRACE_S
    if result.passed and fresh:
        gate.results.record(source.name, result)
    return {"recorded": result.passed and fresh}


def exchangeable_method(result: ProviderResult, now: float, window_s: float) -> str:
    """The method of a passed session recent enough (pure): 409 while pending, 403 when failed or stale."""
    if result.pending:
        raise ApiError(409, "verification_pending", "the age check is not finished yet: retry shortly", "session_id")
    if not result.passed:
        raise ApiError(403, "age_verification_failed", f"the age check did not pass ({result.status or 'unknown'})",
                       "session_id")
    if now - result.at > window_s:
        raise ApiError(403, "session_expired", "this age check is too old to exchange: start a new one", "session_id")
    if result.method is None:  # parsers pass only methods they map; kept as a check, not an assumption
        raise ApiError(403, "age_verification_failed", "the age check used a method this API does not know",
                       "session_id")
    return result.method


@router.post("/sessions/{session_id}/token", **operation(
    200, AgeToken, errors=(403, 404, 409, 429, 503),
    description="An age token for a passed provider session, also as the `lustrax_age` cookie."),
    description="409 `verification_pending` until the provider has a result; 403 `age_verification_failed`, "
                "`session_expired`, or `method_not_accepted` when the method does not suffice in the request's "
                "jurisdiction.")
async def exchange(session_id: SessionIdPath, request: Request, service: ServiceDep) -> JSONResponse:
    set_kind(request, KIND)
    gate = gate_of(request)
    name, provider_session = split_session_id(session_id)
    provider = gate.provider(name)
    gate.limit(request)
    result = gate.results.get(provider.name, provider_session) or await provider.result(provider_session)
    settings = service.settings
    method = exchangeable_method(result, time.time(), settings.age_gate_session_ttl_s + EXCHANGE_GRACE_S)
    return granted(request, settings, method)
