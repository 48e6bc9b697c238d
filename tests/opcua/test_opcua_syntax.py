"""`validate` checks OPC UA node ids without asyncua (drivers/opcua/syntax.py); it must accept
exactly what asyncua's parser accepts, so a config that validates never fails at connect."""

from __future__ import annotations

import pytest
from asyncua import ua
from edgegw.drivers.opcua.syntax import node_problem
from hypothesis import given, settings
from hypothesis import strategies as st

PARTS = st.sampled_from(
    [
        "ns=2",
        "ns=x",
        "ns=",
        "nsu=urn:acme",
        "srv=1",
        "srv=a",
        "i=1001",
        "i=-3",
        "i=x",
        "s=Spindle.Speed",
        "s=a;b=c",
        "s=",
        "g=09087e75-8e5e-499b-954f-f2a9603db28a",
        "g=not-a-guid",
        "b=M/RbKBsRVkePCePcx24oRA==",
        "b=0x0a0b",
        "b=0xzz",
        "b=ü",
        "x=1",
        "novalue",
        "",
        " ",
    ]
)


def asyncua_accepts(text: str) -> bool:
    try:
        ua.NodeId.from_string(text.strip())
    except Exception:
        return False
    return True


@settings(max_examples=400, deadline=None)
@given(st.lists(PARTS, min_size=1, max_size=4))
def test_the_same_node_ids_as_asyncua(parts: list[str]) -> None:
    text = ";".join(parts)
    if not text.strip():
        assert node_problem(text) == "empty node id"
        return
    assert (node_problem(text) is None) == asyncua_accepts(text), text


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=30))
def test_any_text_the_same_as_asyncua(text: str) -> None:
    if not text.strip() or text.strip().startswith("/"):
        return
    assert (node_problem(text) is None) == asyncua_accepts(text), repr(text)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("/Objects/2:CNC/Speed", None),
        ("/Objects//Speed", "empty element in browse path '/Objects//Speed'"),
        ("ns=2;s=Barrel.Zone1", None),
        ("ns=2;i=abc", "'ns=2;i=abc' is not a node id"),
    ],
)
def test_messages(text: str, problem: str | None) -> None:
    got = node_problem(text)
    assert got == problem if problem is None else (got is not None and got.startswith(problem))
