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
from typing import Any

from annotated_types import GroupedMetadata
from pydantic import AfterValidator, StringConstraints
from pydantic_core import PydanticCustomError

REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Zl", "Zp"})
ALLOWED_FORMAT_CHARACTERS = frozenset({"\u200c", "\u200d"})
EMOJI_TAG_SEQUENCE = re.compile("\U0001f3f4[\U000e0020-\U000e007e]+\U000e007f")
INVALID_CHARACTERS = "invalid_characters"  # the pydantic error type; producers/events.py maps it to the API's


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
    pattern: str | None = None

    def __iter__(self) -> Iterator[Any]:
        yield StringConstraints(min_length=self.min_length, max_length=self.max_length, pattern=self.pattern,
                                strip_whitespace=True)
        yield AfterValidator(_check)
