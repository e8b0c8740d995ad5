"""Bearer tokens: forged lifetimes and issue times are refused with a clear 401 code."""

from __future__ import annotations

import jwt
import pytest

from common.errors import ApiError
from common.tokens import ALGORITHM, DEFAULT_MAX_TTL_S, MAX_CLOCK_SKEW_S, TokenVerifier, issue_token, verify_token

SECRET = "s" * 40
NOW = 1_800_000_000.0


def _forged(**claims: object) -> str:
    """A correctly signed token with exactly these claims (what a holder of the secret could mint)."""
    return f"Bearer {jwt.encode({'sub': 'alice', **claims}, SECRET, algorithm=ALGORITHM)}"


def _refusal(header: str, max_ttl_s: float = DEFAULT_MAX_TTL_S) -> str:
    with pytest.raises(ApiError) as raised:
        verify_token(SECRET, header, now=NOW, max_ttl_s=max_ttl_s)
    assert (raised.value.status, raised.value.field) == (401, "authorization")
    return raised.value.code


def test_a_token_of_the_maximum_lifetime_is_accepted_one_second_more_is_not() -> None:
    at_max = f"Bearer {issue_token(SECRET, 'alice', ttl_s=DEFAULT_MAX_TTL_S, now=NOW)}"
    assert verify_token(SECRET, at_max, now=NOW).user_id == "alice"
    beyond = f"Bearer {issue_token(SECRET, 'alice', ttl_s=DEFAULT_MAX_TTL_S + 1, now=NOW)}"
    assert _refusal(beyond) == "token_lifetime_too_long"


def test_the_maximum_is_the_verifiers_setting() -> None:
    header = f"Bearer {issue_token(SECRET, 'alice', ttl_s=600, now=NOW)}"
    assert _refusal(header, max_ttl_s=300) == "token_lifetime_too_long"
    with pytest.raises(ApiError) as raised:
        TokenVerifier(SECRET, max_ttl_s=300).verify(header, now=NOW)
    assert raised.value.code == "token_lifetime_too_long"
    assert TokenVerifier(SECRET, max_ttl_s=600).verify(header, now=NOW).user_id == "alice"


@pytest.mark.parametrize(
    ("claims", "code"),
    [
        ({"iat": NOW, "exp": 1e300}, "token_lifetime_too_long"),
        ({"iat": NOW, "exp": float("inf")}, "invalid_token"),  # json.loads reads `Infinity`
        ({"iat": NOW, "exp": float("nan")}, "invalid_token"),  # NaN compares false with every bound
        ({"iat": float("nan"), "exp": NOW + 60}, "invalid_token"),
        ({"iat": -1e300, "exp": NOW + 60}, "token_lifetime_too_long"),  # an old iat buys no lifetime
        ({"exp": NOW + 60}, "invalid_token"),  # no iat: the lifetime cannot be bounded
        ({"iat": "yesterday", "exp": NOW + 60}, "invalid_token"),
        ({"iat": True, "exp": NOW + 60}, "invalid_token"),
        ({"iat": NOW + MAX_CLOCK_SKEW_S + 1, "exp": NOW + 600}, "invalid_token"),  # issued in the future
        ({"iat": NOW - 600, "exp": NOW - 1}, "token_expired"),
    ],
)
def test_forged_lifetimes_and_issue_times_are_refused(claims: dict[str, object], code: str) -> None:
    assert _refusal(_forged(**claims)) == code


def test_an_issuer_clock_slightly_ahead_is_tolerated() -> None:
    header = _forged(iat=NOW + MAX_CLOCK_SKEW_S, exp=NOW + 600)
    assert verify_token(SECRET, header, now=NOW).user_id == "alice"


def test_the_message_says_the_limit() -> None:
    with pytest.raises(ApiError) as raised:
        verify_token(SECRET, _forged(iat=NOW, exp=1e300), now=NOW)
    assert str(DEFAULT_MAX_TTL_S) in raised.value.message
