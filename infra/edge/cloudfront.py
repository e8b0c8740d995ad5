"""CloudFront signed cookies: making them (botocore's CloudFrontSigner) and checking them the way
CloudFront does (the local edge). Pure functions: keys, times and URLs are given, nothing is read.

A custom policy grants one resource pattern until an expiry (optionally from one source IP range):
    {"Statement":[{"Resource":"https://cdn/premium/videos/ID/*",
                   "Condition":{"DateLessThan":{"AWS:EpochTime":N},"IpAddress":{"AWS:SourceIp":"a.b.c.d/32"}}}]}
The cookies carry the policy and its RSA-SHA1 signature in CloudFront's URL-safe base64 (+ -> -,
= -> _, / -> ~) and the id of the key pair that signed it.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from botocore.signers import CloudFrontSigner
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

POLICY_COOKIE = "CloudFront-Policy"
SIGNATURE_COOKIE = "CloudFront-Signature"
KEY_PAIR_COOKIE = "CloudFront-Key-Pair-Id"
COOKIE_NAMES = (POLICY_COOKIE, SIGNATURE_COOKIE, KEY_PAIR_COOKIE)
# Policies are a few hundred bytes; a cookie far larger is not ours (and not worth parsing).
MAX_COOKIE_CHARS = 4096
_TO_CLOUDFRONT = bytes.maketrans(b"+=/", b"-_~")
_FROM_CLOUDFRONT = bytes.maketrans(b"-_~", b"+=/")
_CLOUDFRONT_B64 = re.compile(r"[A-Za-z0-9~-]*_{0,2}")
_CONDITIONS = frozenset({"DateLessThan", "DateGreaterThan", "IpAddress"})


class CookieRefused(Exception):
    """The request's cookies do not grant it (the edge answers 403 with the reason)."""


@dataclass(frozen=True)
class SignedCookies:
    policy: str  # the policy JSON, for the record; the cookie holds it encoded
    expires_at: int  # epoch seconds: the policy's DateLessThan
    cookies: dict[str, str]  # cookie name -> value, ready for Set-Cookie


# -- keys ---------------------------------------------------------------------------------------
def load_private_key(pem: str) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("the CloudFront signing key must be an RSA private key")
    return key


def public_key_pem(private_key: rsa.RSAPrivateKey) -> str:
    """What goes into the CloudFront public key (and key group) for this private key."""
    return private_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo).decode()


# -- CloudFront's base64 ------------------------------------------------------------------------
def cloudfront_b64encode(data: bytes) -> str:
    return base64.b64encode(data).translate(_TO_CLOUDFRONT).decode("ascii")


def cloudfront_b64decode(text: str) -> bytes:
    """Strict: a character outside CloudFront's alphabet (standard base64's + = / included) is an
    error, not skipped, so that one policy has one spelling."""
    if not _CLOUDFRONT_B64.fullmatch(text):
        raise CookieRefused("a cookie is not CloudFront base64")
    try:
        return base64.b64decode(text.encode("ascii").translate(_FROM_CLOUDFRONT), validate=True)
    except binascii.Error:
        raise CookieRefused("a cookie is not CloudFront base64") from None


# -- signing (the API) ----------------------------------------------------------------------------
def sign_cookies(private_key: rsa.RSAPrivateKey, key_pair_id: str, resource: str, expires_at: int,
                 source_ip: str | None = None) -> SignedCookies:
    """Cookies granting `resource` (a URL pattern, `*` and `?` wildcards) until `expires_at`."""
    signer = CloudFrontSigner(key_pair_id, lambda message: private_key.sign(message, padding.PKCS1v15(),
                                                                              hashes.SHA1()))
    policy = signer.build_policy(resource, datetime.fromtimestamp(expires_at, UTC), ip_address=source_ip)
    signature = signer.rsa_signer(policy.encode())
    return SignedCookies(policy, expires_at, {
        POLICY_COOKIE: cloudfront_b64encode(policy.encode()),
        SIGNATURE_COOKIE: cloudfront_b64encode(signature),
        KEY_PAIR_COOKIE: key_pair_id,
    })


# -- verification (the edge) ----------------------------------------------------------------------
def resource_matches(pattern: str, url: str) -> bool:
    """CloudFront's wildcards: `*` any run of characters (also none), `?` exactly one; case-sensitive."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, url, flags=re.DOTALL) is not None


def _epoch(condition: Mapping[str, object], name: str) -> float:
    value = condition[name]
    moment = value.get("AWS:EpochTime") if isinstance(value, dict) else None
    # A bool is an int to Python, and json reads NaN: neither is a time.
    if not isinstance(moment, int | float) or isinstance(moment, bool) or not math.isfinite(moment):
        raise CookieRefused(f"the policy's {name} is not an AWS:EpochTime number")
    return float(moment)


def _statement(policy_bytes: bytes) -> Mapping[str, object]:
    try:
        policy = json.loads(policy_bytes)
    except ValueError:
        raise CookieRefused("the policy is not JSON") from None
    statements = policy.get("Statement") if isinstance(policy, dict) else None
    # CloudFront allows one statement per policy.
    if not isinstance(statements, list) or len(statements) != 1 or not isinstance(statements[0], dict):
        raise CookieRefused("the policy must hold exactly one statement")
    return statements[0]  # type: ignore[no-any-return]


def verify_cookies(cookies: Mapping[str, str], url: str, now: float, public_keys: Mapping[str, rsa.RSAPublicKey],
                   client_ip: str | None = None) -> float:
    """Whether the signed cookies grant a GET of `url` at `now` from `client_ip`, checked in
    CloudFront's order: the key pair is known, the signature is over the exact policy bytes, then
    the policy's resource and conditions. Returns the policy's expiry; raises CookieRefused."""
    missing = [name for name in COOKIE_NAMES if not cookies.get(name)]
    if missing:
        raise CookieRefused(f"missing cookie {', '.join(missing)}")
    if any(len(cookies[name]) > MAX_COOKIE_CHARS for name in COOKIE_NAMES):
        raise CookieRefused("a signed cookie is too long")
    public_key = public_keys.get(cookies[KEY_PAIR_COOKIE])
    if public_key is None:
        raise CookieRefused("unknown key pair id")
    policy_bytes = cloudfront_b64decode(cookies[POLICY_COOKIE])
    try:
        public_key.verify(cloudfront_b64decode(cookies[SIGNATURE_COOKIE]), policy_bytes, padding.PKCS1v15(),
                          hashes.SHA1())
    except InvalidSignature:
        raise CookieRefused("the signature does not match the policy") from None
    statement = _statement(policy_bytes)
    resource = statement.get("Resource")
    if not isinstance(resource, str) or not resource_matches(resource, url):
        raise CookieRefused("the policy's resource does not cover this URL")
    condition = statement.get("Condition")
    if not isinstance(condition, dict) or "DateLessThan" not in condition:
        raise CookieRefused("the policy has no DateLessThan condition")
    unknown = set(condition) - _CONDITIONS
    if unknown:
        raise CookieRefused(f"the policy has unknown conditions {sorted(unknown)}")
    expires_at = _epoch(condition, "DateLessThan")
    if now >= expires_at:
        raise CookieRefused("the policy has expired")
    if "DateGreaterThan" in condition and now < _epoch(condition, "DateGreaterThan"):
        raise CookieRefused("the policy is not valid yet")
    if "IpAddress" in condition:
        _check_source_ip(condition["IpAddress"], client_ip)
    return expires_at


def _check_source_ip(value: object, client_ip: str | None) -> None:
    source = value.get("AWS:SourceIp") if isinstance(value, dict) else None
    if not isinstance(source, str):
        raise CookieRefused("the policy's IpAddress has no AWS:SourceIp")
    try:
        network = ipaddress.ip_network(source, strict=False)
        address = ipaddress.ip_address(client_ip or "")
    except ValueError:
        raise CookieRefused("the policy's source IP range or the client address is not valid") from None
    if address not in network:
        raise CookieRefused("the request does not come from the policy's source IP range")
