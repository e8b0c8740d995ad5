"""Which age-assurance methods are accepted where (pure: values in, values out; docs/trust-and-safety.md).

The methods are those Ofcom lists as capable of being highly effective (Protection of Children
Codes / Part 5 guidance: facial age estimation, photo-ID matching, open banking, mobile-network-
operator checks, credit-card checks, digital identity services), plus self-declaration, which is
not. By default every jurisdiction accepts self-declaration (the seed's "I am 18" gate); each
jurisdiction named in `strict` (ISO 3166-1 alpha-2 codes, LUSTRAX_AGE_GATE_STRICT_JURISDICTIONS)
accepts only the highly effective ones.

A request's jurisdiction is the country the CDN edge says the viewer is in (a header such as
CloudFront-Viewer-Country), read only when LUSTRAX_AGE_GATE_JURISDICTION_HEADER names it, that is
when the operator says a trusted proxy sets it and strips it from clients; otherwise it is
LUSTRAX_AGE_GATE_DEFAULT_JURISDICTION.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from common.errors import ApiError

SELF_DECLARATION = "self_declaration"
HIGHLY_EFFECTIVE_METHODS = frozenset({
    "facial_age_estimation", "photo_id_matching", "open_banking", "mobile_network_operator", "credit_card",
    "digital_identity",
})
METHODS = frozenset({SELF_DECLARATION, *HIGHLY_EFFECTIVE_METHODS})
SELF_DECLARED, HIGHLY_EFFECTIVE = "self_declared", "highly_effective"
ASSURANCES = frozenset({SELF_DECLARED, HIGHLY_EFFECTIVE})
# ISO 3166-1 alpha-2; "ZZ" (user-assigned) stands for "unknown".
JURISDICTION = re.compile(r"[A-Z]{2}")
UNKNOWN_JURISDICTION = "ZZ"


def assurance_of(method: str) -> str:
    """What a method's pass is worth: `highly_effective` for Ofcom's list, else `self_declared`."""
    return HIGHLY_EFFECTIVE if method in HIGHLY_EFFECTIVE_METHODS else SELF_DECLARED


def parse_jurisdictions(text: str) -> frozenset[str]:
    """'GB, fr' -> {'GB', 'FR'}; a ValueError names an entry that is not an alpha-2 code."""
    codes = {entry.strip().upper() for entry in text.split(",") if entry.strip()}
    bad = sorted(code for code in codes if not JURISDICTION.fullmatch(code))
    if bad:
        raise ValueError(f"not ISO 3166-1 alpha-2 country codes: {', '.join(bad)}")
    return frozenset(codes)


@dataclass(frozen=True)
class AgePolicy:
    strict: frozenset[str] = frozenset()  # jurisdictions that require a highly effective method
    default_jurisdiction: str = UNKNOWN_JURISDICTION
    jurisdiction_header: str | None = None  # set by a trusted edge; None: never read

    def accepted_methods(self, jurisdiction: str) -> frozenset[str]:
        return HIGHLY_EFFECTIVE_METHODS if jurisdiction in self.strict else METHODS

    def accepts(self, jurisdiction: str, method: str) -> bool:
        return method in self.accepted_methods(jurisdiction)

    def jurisdiction_of(self, headers: Mapping[str, str]) -> str:
        """The request's jurisdiction: the trusted edge header when configured and well formed, else the default."""
        if self.jurisdiction_header is None:
            return self.default_jurisdiction
        value = (headers.get(self.jurisdiction_header.lower()) or headers.get(self.jurisdiction_header) or "")
        value = value.strip().upper()
        return value if JURISDICTION.fullmatch(value) else self.default_jurisdiction

    def require(self, jurisdiction: str, method: str) -> None:
        """401 age_verification_required unless `method` suffices in `jurisdiction`."""
        if not self.accepts(jurisdiction, method):
            raise ApiError(401, "age_verification_required",
                           f"{method} is not accepted in {jurisdiction}: a highly effective age check is required "
                           f"({', '.join(sorted(HIGHLY_EFFECTIVE_METHODS))})", "age_token")
