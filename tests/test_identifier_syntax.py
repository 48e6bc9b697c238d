"""Identifier syntax (the README's "Identifiers"), including properties over generated identifiers."""

from __future__ import annotations

import string

import pytest
from edgegw.identifier.syntax import IdentifierError, parse
from hypothesis import given
from hypothesis import strategies as st

SUFFIX_CHARS = string.ascii_letters + string.digits + "-_.:"
prefixes = (
    st.lists(st.integers(0, 99999).map(str), min_size=1, max_size=6)
    .map(".".join)
    .filter(lambda p: len(p) <= 64)
)
suffixes = st.text(SUFFIX_CHARS, min_size=1, max_size=128).filter(
    lambda s: not s.startswith(".") and not s.endswith(".")
)


@given(prefixes, suffixes)
def test_every_well_formed_identifier_parses_and_round_trips(prefix: str, suffix: str) -> None:
    ident = parse(f"{prefix}/{suffix}")
    assert (ident.prefix, ident.suffix) == (prefix, suffix)
    assert str(ident) == f"{prefix}/{suffix}"
    assert parse(str(ident).upper()).key == ident.key  # ASCII compares case-insensitively


@given(
    prefixes, suffixes, st.characters(blacklist_characters=SUFFIX_CHARS + "/", blacklist_categories=("Cs",))
)
def test_a_character_outside_the_suffix_alphabet_is_refused(prefix: str, suffix: str, bad: str) -> None:
    with pytest.raises(IdentifierError, match="contains"):
        parse(f"{prefix}/{suffix[:60]}{bad}{suffix[60:]}")


@given(st.text(max_size=300))
def test_any_text_either_parses_or_says_why(text: str) -> None:
    try:
        ident = parse(text)
    except IdentifierError as exc:
        assert str(exc)
    else:
        assert str(ident) == text and len(text) <= 255


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("88.118.8", "no '/'"),
        ("/SN-1", "prefix is empty"),
        ("88.118.8/", "suffix after '/' is empty"),
        ("88.a.8/SN-1", "dot-separated digits"),
        ("88..8/SN-1", "dot-separated digits"),
        ("88.118.8/.SN", "starts or ends with '.'"),
        ("88.118.8/SN.", "starts or ends with '.'"),
        ("88.118.8/SN 1", "contains ' '"),
        ("88.118.8/SN/1", "contains '/'"),
        ("8" * 65 + "/SN", "at most 64"),
        ("88.118.8/" + "S" * 129, "at most 128"),
        ("1" * 64 + "/" + "S" * 128 + "x" * 70, "at most 255"),
    ],
)
def test_malformed_identifiers_are_refused_with_the_reason(text: str, why: str) -> None:
    with pytest.raises(IdentifierError, match=why.replace(".", r"\.").replace("(", r"\(")):
        parse(text)
