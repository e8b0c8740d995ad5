"""Display strings (titles, tags, later complaint texts): one annotated type refusing invisible characters.

A title is shown to other people. Control characters break logs and terminals; bidirectional
overrides (U+202E...) make `gpj.exe` read as `exe.jpg`; zero-width and tag characters hide text
from moderation and search. So a display string refuses every character of the Unicode categories
Cc (controls, tab and newline included: display strings are one line), Cf (format), Cs
(surrogates), Co (private use), Zl and Zp (line and paragraph separators), except:

- U+200C and U+200D (zero-width non-joiner and joiner): Persian and Indic scripts and emoji
  sequences (family, profession, skin-tone emoji) need them;
- tag characters inside an emoji tag sequence (the flags of England, Scotland, Wales:
  U+1F3F4, tags, U+E007F).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from annotated_types import GroupedMetadata
from pydantic import AfterValidator, GetJsonSchemaHandler, StringConstraints
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, PydanticCustomError

REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Zl", "Zp"})
ALLOWED_FORMAT_CHARACTERS = frozenset({"\u200c", "\u200d"})
EMOJI_TAG_SEQUENCE = re.compile("\U0001f3f4[\U000e0020-\U000e007e]+\U000e007f")
INVALID_CHARACTERS = "invalid_characters"  # the pydantic error type; producers/events.py maps it to the API's
# Unicode White_Space: what pydantic's strip_whitespace trims (Rust's str::trim), as a regex class body.
WHITE_SPACE = "\\t\\n\\x0b\\x0c\\r \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000"


def first_invisible(text: str) -> tuple[int, str] | None:
    """(position, character) of the first refused character of `text`, or None."""
    # Emoji tag sequences become a plain (allowed) character of the same length, keeping positions.
    scrubbed = EMOJI_TAG_SEQUENCE.sub(lambda m: "x" * len(m.group()), text) if "\U0001f3f4" in text else text
    for position, char in enumerate(scrubbed):
        if unicodedata.category(char) in REFUSED_CATEGORIES and char not in ALLOWED_FORMAT_CHARACTERS:
            return position, char
    return None


def _check(text: str) -> str:
    found = first_invisible(text)
    if found is not None:
        position, char = found
        name = unicodedata.name(char, "a control character")
        raise PydanticCustomError(INVALID_CHARACTERS,
                                  "must not contain control or invisible formatting characters "
                                  "({code} {name} at position {position})",
                                  {"code": f"U+{ord(char):04X}", "name": name, "position": position})
    return text


@dataclass(frozen=True)
class DisplayText(GroupedMetadata):
    """`title: Annotated[str, DisplayText(200)]`: a one-line display string of 1 to 200 characters.

    Whitespace at either end is stripped first, then the length and `pattern` are checked, then
    the characters.
    """

    max_length: int
    min_length: int = 1
    charset: str | None = None  # a regex class body (r"\w\-"): the only characters allowed besides the space

    def __iter__(self) -> Iterator[Any]:
        yield StringConstraints(min_length=self.min_length, max_length=self.max_length, strip_whitespace=True)
        if self.charset is not None:
            yield AfterValidator(_charset_check(self.charset))
        yield AfterValidator(_check)
        yield _DocumentedAs(self)

    def document_pattern(self) -> str:
        """The whole rule as one regex for the OpenAPI document, on the string as sent: white space at
        either end, then `min_length` to `max_length` allowed characters that neither begin nor end
        with white space. Stricter in one point only: emoji tag sequences (flags) are left out."""
        if self.charset is None:
            inner, edge = f"[^{_refused_class()}]", f"[^{_refused_class()}{WHITE_SPACE}]"
        else:
            inner, edge = f"[{self.charset} ]", f"[{self.charset}]"
        if self.max_length == 1:
            core = edge
        else:
            low, high = max(self.min_length - 2, 0), self.max_length - 2
            core = f"{edge}(?:{inner}{{{low},{high}}}{edge})" + ("" if self.min_length >= 2 else "?")
        return f"^[{WHITE_SPACE}]*{core}[{WHITE_SPACE}]*$"


def _charset_check(charset: str) -> Any:
    # Python's `re`, the engine the document's readers (schemathesis, hypothesis) use for `\w` too.
    allowed = re.compile(f"[{charset} ]*")

    def check(text: str) -> str:
        if allowed.fullmatch(text) is None:
            raise PydanticCustomError("string_pattern_mismatch", "may hold only the characters [{charset} ]",
                                      {"charset": charset})
        return text

    return check


@dataclass(frozen=True)
class _DocumentedAs:
    """The JSON schema of a DisplayText: its regex instead of lengths the raw string does not obey."""

    text: DisplayText

    def __get_pydantic_json_schema__(self, core_schema: CoreSchema, handler: GetJsonSchemaHandler
                                     ) -> JsonSchemaValue:
        schema = handler(core_schema)
        schema.pop("minLength", None)
        schema.pop("maxLength", None)
        schema["pattern"] = self.text.document_pattern()
        schema.setdefault("description", f"{self.text.min_length} to {self.text.max_length} characters once "
                                         "trimmed, one line, no control or invisible formatting characters.")
        return schema


def _class_item(start: int, end: int) -> str:
    """A regex class range; astral characters literally, as both Python and ECMA (u flag) read them."""
    def one(code: int) -> str:
        return f"\\u{code:04x}" if code <= 0xFFFF else chr(code)
    return one(start) if start == end else f"{one(start)}-{one(end)}"


@lru_cache(maxsize=1)
def _refused_class() -> str:
    """Every character first_invisible refuses, as a regex class body (computed: it follows unicodedata)."""
    ranges: list[list[int]] = []
    for code in range(0x110000):
        char = chr(code)
        category = unicodedata.category(char)
        # Surrogates (Cs) are no Unicode scalar values: UTF-8 cannot carry them, regex engines on
        # scalar values (the Rust one schemathesis validates with) refuse them in a class.
        if category in REFUSED_CATEGORIES and category != "Cs" and char not in ALLOWED_FORMAT_CHARACTERS:
            if ranges and ranges[-1][1] == code - 1:
                ranges[-1][1] = code
            else:
                ranges.append([code, code])
    return "".join(_class_item(start, end) for start, end in ranges)
