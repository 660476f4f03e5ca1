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


# -- the rule of every text staff write for others to read (refused_text; multi-line texts keep line feeds) ----
_REFUSED_EVERYWHERE = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c\u200b\u200d\ufeff\r\t"


@given(st.text(min_size=1), st.sampled_from(_REFUSED_EVERYWHERE), st.booleans())
def test_bidi_zero_width_and_control_characters_are_refused_naming_them(text: str, ch: str, lines: bool) -> None:
    from sonae.nametext import refused_text

    why = refused_text("area_desc", "町" + text + ch, line_breaks=lines)
    assert why is not None and why.startswith("area_desc ")
    assert "U+" in why  # the first refused character, which may be one of text's own


@given(st.lists(st.text(alphabet=st.characters(categories=["L", "N", "P", "S", "Zs"]), min_size=1), min_size=1))
def test_a_multi_line_text_keeps_its_line_feeds_a_one_line_text_does_not(lines: list[str]) -> None:
    from sonae.nametext import refused_text, shown_text

    text = "\n".join(lines) + "\n"
    if hidden_character(text.replace("\n", ""), line_breaks=False) is None:
        assert refused_text("area_desc", text, line_breaks=True) is None
        assert shown_text(text, line_breaks=True) == text
    assert refused_text("display_name", text) is not None


@given(st.text())
def test_a_multi_line_text_as_it_shows_holds_nothing_refused_and_keeps_what_showed(text: str) -> None:
    from sonae.nametext import shown_text

    shown = shown_text(text, line_breaks=True)
    assert shown == "" or hidden_character(shown, line_breaks=True) is None
    assert shown.count("\n") <= text.count("\n")
