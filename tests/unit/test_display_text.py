"""DisplayText: display strings refuse control, bidi and other invisible characters, keep real text."""

from __future__ import annotations

import unicodedata
from typing import Annotated

import pytest
from hypothesis import given, strategies as st
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
