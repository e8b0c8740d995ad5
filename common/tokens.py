"""Bearer tokens: HS256 JWTs whose `sub` is the user id (pure functions, no I/O)."""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from dataclasses import dataclass

import jwt

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
