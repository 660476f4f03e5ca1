"""sonae.nametext: the characters a shown name may not hold (pure logic; hypothesis)."""

from __future__ import annotations

import unicodedata

from hypothesis import given
from hypothesis import strategies as st

from sonae.nametext import hidden_character

# Unicode's Default_Ignorable_Code_Point (DerivedCoreProperties.txt) outside the categories refused whole
# (Cf, Cn), as listed there: the oracle for the letters and marks that show nothing
_IGNORABLE_LETTERS_AND_MARKS = "\u034f\u115f\u1160\u17b4\u17b5\u180b\u180c\u180d\u180f\u3164\uffa0"


def test_place_names_with_variation_sequences_are_kept() -> None:
    assert hidden_character("葛\U000e0100飾") is None  # an ideographic variation sequence (IVS) of 葛
    assert hidden_character("♨\ufe0f温泉") is None
    assert hidden_character("阿武隈川 (本宮)") is None and hidden_character("Motomiya Bridge") is None


def test_every_default_ignorable_letter_or_mark_is_refused() -> None:
    for ch in _IGNORABLE_LETTERS_AND_MARKS + "\u2800":
        assert hidden_character(f"本{ch}宮") is not None, f"U+{ord(ch):04X}"


@given(st.text(alphabet=st.characters(categories=["Zs", "Mn", "Me", "Mc"]), min_size=1))
def test_a_name_of_spaces_and_marks_alone_shows_nothing(text: str) -> None:
    assert hidden_character(text) is not None


@given(st.text(min_size=1))
def test_an_accepted_name_shows_something_and_holds_nothing_hidden(text: str) -> None:
    if hidden_character(text) is None:
        categories = [unicodedata.category(ch) for ch in text]
        assert any(c[0] not in "ZM" for c in categories)
        assert not any(c in ("Cc", "Cf", "Cn", "Co", "Cs", "Zl", "Zp") for c in categories)
        assert not set(text) & set(_IGNORABLE_LETTERS_AND_MARKS)
