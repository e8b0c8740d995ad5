"""DisplayText: display strings refuse control, bidi and other invisible characters, keep real text."""

from __future__ import annotations

import re
import unicodedata
from typing import Annotated

import pytest
from hypothesis import given, settings, strategies as st
from pydantic import TypeAdapter, ValidationError

from producers.events import validation_error
from producers.text import REFUSED_CATEGORIES, DisplayText, first_invisible

TITLE: TypeAdapter[str] = TypeAdapter(Annotated[str, DisplayText(200)])
ENGLAND = "\U0001f3f4\U000e0067\U000e0062\U000e0065\U000e006e\U000e0067\U000e007f"

# Printable text of any script: letters, marks, numbers, punctuation, symbols, spaces.
visible = st.text(st.characters(categories=("L", "M", "N", "P", "S", "Zs")), min_size=1, max_size=50)
invisible = st.characters(categories=tuple(REFUSED_CATEGORIES), exclude_characters="\u200c\u200d")


@pytest.mark.parametrize("char", ["\u202e", "\u202a", "\u2066", "\u2069", "\u200e", "\u200f", "\u061c",
                                  "\u200b", "\ufeff", "\u00ad", "\x00", "\t", "\n", "\x7f", "\x85",
                                  "\u2028", "\u2029", "\ue000", "\U000e0041"])
def test_known_tricks_are_refused(char: str) -> None:
    with pytest.raises(ValidationError) as raised:
        TITLE.validate_python(f"holiday{char}gpj.exe")
    error = validation_error(raised.value)
    assert (error.status, error.code) == (422, "invalid_value")
    assert f"U+{ord(char):04X}" in error.message and "position 7" in error.message


@pytest.mark.parametrize("title", ["Sunset över Åre", "شب\u200cبخیر", "\U0001f468\u200d\U0001f469\u200d\U0001f467",
                                   f"Go {ENGLAND}!", "東京の夜", "e\u0301te\u0301"])
def test_real_text_is_kept(title: str) -> None:
    assert TITLE.validate_python(f"  {title} ") == title


@given(visible)
def test_visible_text_is_accepted(text: str) -> None:
    assert first_invisible(text) is None


@given(visible, invisible, visible)
def test_one_invisible_character_anywhere_is_found(before: str, char: str, after: str) -> None:
    assert first_invisible(before + char + after) == (len(before), char)
    assert unicodedata.category(char) in REFUSED_CATEGORIES


def test_a_tag_character_outside_a_flag_sequence_is_refused() -> None:
    assert first_invisible(ENGLAND + "\U000e0067") == (len(ENGLAND), "\U000e0067")
    assert first_invisible("\U0001f3f4\U000e0067") == (1, "\U000e0067")  # no cancel tag: not a flag


# Any text, white space at the ends included; no surrogates (UTF-8 cannot carry them) and no emoji
# tag sequences (the one point where the document is stricter, docs/api.md).
any_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=60).filter(lambda t: "\U0001f3f4" not in t)
TAG: TypeAdapter[str] = TypeAdapter(Annotated[str, DisplayText(12, charset=r"\w\-")])


@pytest.mark.parametrize("adapter", [TITLE, TAG], ids=["title", "tag"])
@settings(deadline=None)  # the first call scans Unicode for the refused characters
@given(text=any_text)
def test_the_documented_pattern_accepts_exactly_what_validation_accepts(adapter: TypeAdapter[str], text: str) -> None:
    pattern = adapter.json_schema()["pattern"]
    try:
        adapter.validate_python(text)
        valid = True
    except ValidationError:
        valid = False
    assert (re.search(pattern, text) is not None) == valid, repr(text)


@pytest.mark.parametrize("text", ["", " ", "\t", "x" * 13, " x ", "x" * 12 + "\u3000", "\x1fx", "a\u00b2", "a b"])
def test_the_documented_pattern_on_the_edges(text: str) -> None:
    valid = True
    try:
        TAG.validate_python(text)
    except ValidationError:
        valid = False
    assert (re.search(TAG.json_schema()["pattern"], text) is not None) == valid, repr(text)
