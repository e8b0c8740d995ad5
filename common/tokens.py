"""Bearer tokens: HS256 JWTs whose `sub` is the user id (pure functions, no I/O)."""

from __future__ import annotations

import hashlib
import hmac
import math
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

import jwt

from common.age_policy import ASSURANCES, JURISDICTION, METHODS, AgePolicy, assurance_of
from common.errors import ApiError

ALGORITHM = "HS256"
PRIVILEGED_ROLES = frozenset({"admin", "service"})
MAX_SUBJECT_LENGTH = 128
# The default of Settings.jwt_max_ttl_s: a leaked token is good for a week at most.
DEFAULT_MAX_TTL_S = 7 * 24 * 3600
# Issuers' clocks drift: an `iat` this far ahead of ours is still accepted.
MAX_CLOCK_SKEW_S = 60


@dataclass(frozen=True)
class Principal:
    user_id: str
    roles: frozenset[str]
    expires_at: float = 0.0
    premium: bool = False  # the `premium: true` claim

    @property
    def entitled_to_premium(self) -> bool:
        """Premium playback (API.md): the `premium: true` claim or the `premium` role."""
        return self.premium or "premium" in self.roles

    @property
    def privileged(self) -> bool:
        """Admins and services may act for any user (e.g. the traffic simulator, back-office tools)."""
        return bool(self.roles & PRIVILEGED_ROLES)


def issue_token(secret: str, user_id: str, roles: tuple[str, ...] = (), ttl_s: int = 3600,
                now: float | None = None, premium: bool = False) -> str:
    issued = int(now if now is not None else time.time())
    claims: dict[str, object] = {"sub": user_id, "iat": issued, "exp": issued + ttl_s, "roles": list(roles)}
    if premium:
        claims["premium"] = True
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def _numeric_claim(claims: dict[str, object], name: str) -> float:
    value = claims[name]
    # json.loads reads NaN and Infinity: a forged `exp: NaN` compares false with everything.
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise ApiError(401, "invalid_token", f"the token's {name} must be a finite number", "authorization")
    return float(value)


def verify_token(secret: str, authorization: str | None, now: float | None = None,
                 max_ttl_s: float = DEFAULT_MAX_TTL_S) -> Principal:
    """The principal of an `Authorization: Bearer <jwt>` header; 401 when absent, invalid, expired,
    issued in the future or living longer than `max_ttl_s` (exp - iat)."""
    if not authorization:
        raise ApiError(401, "unauthenticated", "an Authorization: Bearer token is required", "authorization")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "unauthenticated", "the Authorization header must be `Bearer <token>`", "authorization")
    try:
        # exp and iat are checked below against `now`, so that it is the same clock as the verifier's cache.
        claims = jwt.decode(token.strip(), secret, algorithms=[ALGORITHM],
                            options={"require": ["sub", "exp", "iat"], "verify_exp": False, "verify_iat": False})
    except jwt.PyJWTError as exc:
        raise ApiError(401, "invalid_token", f"the token is not valid: {exc}", "authorization") from None
    now = time.time() if now is None else now
    expires_at, issued_at = _numeric_claim(claims, "exp"), _numeric_claim(claims, "iat")
    if expires_at <= now:
        raise ApiError(401, "token_expired", "the token has expired", "authorization")
    if issued_at > now + MAX_CLOCK_SKEW_S:
        raise ApiError(401, "invalid_token", "the token's iat lies in the future", "authorization")
    if expires_at - issued_at > max_ttl_s:
        raise ApiError(401, "token_lifetime_too_long",
                       f"the token's lifetime (exp - iat) exceeds the maximum of {max_ttl_s:.0f} s", "authorization")
    subject = claims["sub"]
    roles = claims.get("roles", [])
    if not isinstance(subject, str) or not subject or len(subject) > MAX_SUBJECT_LENGTH:
        raise ApiError(401, "invalid_token", "the token's subject is not a valid user id", "authorization")
    if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
        raise ApiError(401, "invalid_token", "the token's roles must be a list of strings", "authorization")
    premium = claims.get("premium", False)
    if not isinstance(premium, bool):
        raise ApiError(401, "invalid_token", "the token's premium claim must be true or false", "authorization")
    return Principal(subject, frozenset(roles), expires_at, premium)


class TokenVerifier:
    """verify_token with a bounded memory of tokens already verified.

    A signature check costs ~70 µs; clients send the same token on every request. A remembered
    token is still refused once it expires.
    """

    def __init__(self, secret: str, max_tokens: int = 10_000, max_ttl_s: float = DEFAULT_MAX_TTL_S) -> None:
        self.secret = secret
        self.max_tokens = max_tokens
        self.max_ttl_s = max_ttl_s
        self._verified: OrderedDict[str, Principal] = OrderedDict()

    def verify(self, authorization: str | None, now: float | None = None) -> Principal:
        now = time.time() if now is None else now
        principal = self._verified.get(authorization) if authorization else None
        if principal is None or principal.expires_at <= now:
            self._verified.pop(authorization or "", None)
            principal = verify_token(self.secret, authorization, now, self.max_ttl_s)
            self._verified[authorization] = principal  # type: ignore[index]
            if len(self._verified) > self.max_tokens:
                self._verified.popitem(last=False)
        return principal


def authorize_user(principal: Principal, user_id: str, field: str = "user_id") -> None:
    """An event's user must be the token's subject unless the token is privileged (403)."""
    if user_id != principal.user_id and not principal.privileged:
        raise ApiError(403, "forbidden", f"{field} must equal the token subject", field)


# -- age tokens (API.md "Age gate", docs/trust-and-safety.md) ---------------------------------------
# An age token says "someone passed the age gate by METHOD in JURISDICTION" and nothing about who:
# no subject, no IP, no session. It is signed with a key derived from its own secret (or, without
# one, from the JWT secret) under a label of its own, so no user token verifies as an age token
# nor an age token as a user token; the `typ` header and claim and the absent `sub` say it twice.
AGE_TOKEN_TYPE = "lustrax-age"
_AGE_KEY_LABEL = b"lustrax age token key v1"
AGE_TOKEN_FIELD = "age_token"
AGE_COOKIE = "lustrax_age"  # the cookie POST /v1/age-gate sets; the API and the gateway read it


@dataclass(frozen=True)
class AgeGrant:
    method: str
    assurance: str
    jurisdiction: str
    issued_at: float
    expires_at: float


def age_token_key(secret: str) -> str:
    """The age tokens' HS256 key: HMAC-SHA256(secret, label), never the secret itself."""
    return hmac.new(secret.encode(), _AGE_KEY_LABEL, hashlib.sha256).hexdigest()


def issue_age_token(key: str, method: str, jurisdiction: str, ttl_s: int,
                    now: float | None = None) -> tuple[str, AgeGrant]:
    """A signed age token for a gate passed by `method` (one of common.age_policy.METHODS)."""
    if method not in METHODS:
        raise ValueError(f"unknown age-assurance method {method!r}")
    issued = int(now if now is not None else time.time())
    grant = AgeGrant(method, assurance_of(method), jurisdiction, issued, issued + ttl_s)
    claims = {"typ": AGE_TOKEN_TYPE, "method": method, "assurance": grant.assurance, "jur": jurisdiction,
              "iat": issued, "exp": issued + ttl_s}
    return jwt.encode(claims, key, algorithm=ALGORITHM, headers={"typ": AGE_TOKEN_TYPE}), grant


def _age_refusal(reason: str) -> ApiError:
    return ApiError(401, "age_verification_required", f"pass the age gate (POST /v1/age-gate): {reason}",
                    AGE_TOKEN_FIELD)


def verify_age_token(key: str, token: str | None, now: float | None = None,
                     max_ttl_s: float = DEFAULT_MAX_TTL_S) -> AgeGrant:
    """The grant of an age token; 401 age_verification_required when it is absent, forged, of
    another type (a user token), expired, issued in the future, too long-lived or names an
    unknown method or an assurance its method does not give."""
    if not token:
        raise _age_refusal("no age token (X-Age-Token header or lustrax_age cookie)")
    try:
        if jwt.get_unverified_header(token).get("typ") != AGE_TOKEN_TYPE:
            raise _age_refusal("this is not an age token")
        claims = jwt.decode(token, key, algorithms=[ALGORITHM],
                            options={"require": ["typ", "method", "assurance", "jur", "exp", "iat"],
                                     "verify_exp": False, "verify_iat": False})
    except jwt.PyJWTError as exc:
        raise _age_refusal(f"the age token is not valid: {exc}") from None
    if claims["typ"] != AGE_TOKEN_TYPE or "sub" in claims:
        raise _age_refusal("this is not an age token")
    now = time.time() if now is None else now
    try:
        expires_at, issued_at = _numeric_claim(claims, "exp"), _numeric_claim(claims, "iat")
    except ApiError as exc:
        raise _age_refusal(exc.message) from None
    if expires_at <= now:
        raise _age_refusal("the age token has expired")
    if issued_at > now + MAX_CLOCK_SKEW_S or expires_at - issued_at > max_ttl_s:
        raise _age_refusal("the age token's iat or lifetime is out of bounds")
    method, assurance, jurisdiction = claims["method"], claims["assurance"], claims["jur"]
    if method not in METHODS or assurance not in ASSURANCES or assurance != assurance_of(method):
        raise _age_refusal("the age token names an unknown method or a wrong assurance")
    if not isinstance(jurisdiction, str) or not JURISDICTION.fullmatch(jurisdiction):
        raise _age_refusal("the age token's jurisdiction is not a country code")
    return AgeGrant(method, assurance, jurisdiction, issued_at, expires_at)


class AgeVerifier:
    """An age token checked against the policy: its method must suffice in the request's
    jurisdiction (read from `headers` as the policy says). One per API process and gateway."""

    def __init__(self, key: str, policy: AgePolicy, max_ttl_s: float) -> None:
        self.key = key
        self.policy = policy
        self.max_ttl_s = max_ttl_s

    def verify(self, token: str | None, headers: Mapping[str, str], now: float | None = None) -> AgeGrant:
        grant = verify_age_token(self.key, token, now, self.max_ttl_s)
        self.policy.require(self.policy.jurisdiction_of(headers), grant.method)
        return grant
