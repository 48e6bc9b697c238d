"""Decoding register blocks: known vectors per byte order, and encode/decode round trips."""

import math
import struct

import pytest
from edgegw.drivers.modbus.codec import BlockDecoder, RegisterPoint, encode_value
from hypothesis import given, settings
from hypothesis import strategies as st

# 123.456 as float32 is 0x42F6E979: bytes A=42 B=F6 C=E9 D=79
F32 = {
    "ABCD": [0x42F6, 0xE979],
    "DCBA": [0x79E9, 0xF642],
    "BADC": [0xF642, 0x79E9],
    "CDAB": [0xE979, 0x42F6],
}


@pytest.mark.parametrize("order", list(F32))
def test_float32_byte_orders(order):
    p = RegisterPoint("x", "hr", 0, "float32", byte_order=order)
    (v,) = BlockDecoder(0, 2, [p]).decode(F32[order])
    assert v == pytest.approx(123.456, rel=1e-6)


def test_int32_cdab_and_uint64_and_strings_in_one_block():
    pts = [
        RegisterPoint("a", "hr", 0, "int32", byte_order="CDAB"),
        RegisterPoint("b", "hr", 2, "uint64"),
        RegisterPoint("s", "hr", 8, "string", length=3),
        RegisterPoint("bit3", "hr", 12, "bool", bit=3),
        RegisterPoint("word", "hr", 12, "uint16"),
        RegisterPoint("neg", "hr", 13, "int16"),
    ]
    regs = [0xFFFF, 0xFFFE, 0, 0, 1, 2, 0, 0, 0x534E, 0x2D31, 0x0000, 0, 0b1000, 0xFFFF]
    #       int32 = 0xFFFEFFFF = -65537 (CDAB)   uint64 = 0x0000000000010002   "SN-1"
    values = BlockDecoder(0, 14, pts).decode(regs)
    assert values == [-65537, 0x0000000100020000 >> 16, "SN-1", True, 8, -1]


def test_coils_decode_by_offset():
    pts = [RegisterPoint("c0", "co", 10, "bool"), RegisterPoint("c5", "co", 15, "bool")]
    bits = [True, False, False, False, False, True, False, False]
    assert BlockDecoder(10, 6, pts).decode(bits) == [True, True]


TYPES = {
    "int16": st.integers(-(2**15), 2**15 - 1),
    "uint16": st.integers(0, 2**16 - 1),
    "int32": st.integers(-(2**31), 2**31 - 1),
    "uint32": st.integers(0, 2**32 - 1),
    "int64": st.integers(-(2**63), 2**63 - 1),
    "uint64": st.integers(0, 2**64 - 1),
    "float32": st.floats(width=32, allow_nan=False),
    "float64": st.floats(allow_nan=False),
}


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from(sorted(TYPES)).flatmap(lambda t: st.tuples(st.just(t), TYPES[t])),
    st.sampled_from(["ABCD", "DCBA", "BADC", "CDAB"]),
    st.integers(0, 5),
)
def test_encode_decode_round_trip(type_and_value, order, gap):
    type_, value = type_and_value
    p = RegisterPoint("x", "hr", 100 + gap, type_, byte_order=order)
    regs = encode_value(p, value)
    block = [0] * gap + regs
    (decoded,) = BlockDecoder(100, len(block), [p]).decode(block)
    if type_.startswith("float") and math.isinf(value):
        assert decoded == value
    else:
        assert decoded == value or (
            type_ == "float32" and decoded == struct.unpack(">f", struct.pack(">f", value))[0]
        )


@settings(max_examples=100, deadline=None)
@given(
    st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=12),
    st.sampled_from(["ABCD", "BADC"]),
)
def test_string_round_trip(text, order):
    p = RegisterPoint("s", "hr", 0, "string", length=6, byte_order=order)
    assert BlockDecoder(0, 6, [p]).decode(encode_value(p, text)) == [text]
