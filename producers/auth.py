"""Bearer tokens: HS256 JWTs whose `sub` is the user id (pure functions, no I/O)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import jwt

from producers.errors import ApiError

ALGORITHM = "HS256"
PRIVILEGED_ROLES = frozenset({"admin", "service"})
MAX_SUBJECT_LENGTH = 128


@dataclass(frozen=True)
class Principal:
    user_id: str
    roles: frozenset[str]

    @property
    def privileged(self) -> bool:
        """Admins and services may act for any user (e.g. the traffic simulator, back-office tools)."""
        return bool(self.roles & PRIVILEGED_ROLES)


def issue_token(secret: str, user_id: str, roles: tuple[str, ...] = (), ttl_s: int = 3600,
                now: float | None = None) -> str:
    issued = int(now if now is not None else time.time())
    claims = {"sub": user_id, "iat": issued, "exp": issued + ttl_s, "roles": list(roles)}
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def verify_token(secret: str, authorization: str | None) -> Principal:
    """The principal of an `Authorization: Bearer <jwt>` header; 401 when absent, invalid or expired."""
    if not authorization:
        raise ApiError(401, "unauthenticated", "an Authorization: Bearer token is required", "authorization")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "unauthenticated", "the Authorization header must be `Bearer <token>`", "authorization")
    try:
        claims = jwt.decode(token.strip(), secret, algorithms=[ALGORITHM],
                            options={"require": ["sub", "exp"]})
    except jwt.ExpiredSignatureError:
        raise ApiError(401, "token_expired", "the token has expired", "authorization") from None
    except jwt.PyJWTError as exc:
        raise ApiError(401, "invalid_token", f"the token is not valid: {exc}", "authorization") from None
    subject = claims["sub"]
    roles = claims.get("roles", [])
    if not isinstance(subject, str) or not subject or len(subject) > MAX_SUBJECT_LENGTH:
        raise ApiError(401, "invalid_token", "the token's subject is not a valid user id", "authorization")
    if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
        raise ApiError(401, "invalid_token", "the token's roles must be a list of strings", "authorization")
    return Principal(subject, frozenset(roles))


def authorize_user(principal: Principal, user_id: str, field: str = "user_id") -> None:
    """An event's user must be the token's subject unless the token is privileged (403)."""
    if user_id != principal.user_id and not principal.privileged:
        raise ApiError(403, "forbidden", f"{field} must equal the token subject", field)
