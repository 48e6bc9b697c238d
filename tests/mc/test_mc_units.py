"""The MC plugin's pure parts: the 3E codec against the manual's published frames, property
tests of the codec and the planner, addresses per PLC family, and the reply parser fed with
whatever a device might send.

The pinned frames are the examples of the MELSEC Communication Protocol Reference Manual
(SH-080008): "batch read in word units" (D100 to D102 = 1995H, 1202H, 1130H), "batch read in
bit units" (M100 to M107 = 0,0,0,1,0,0,1,1), "batch write in word units" (D100 to D102), the
random read example (D0, T0, M100, X20 as words; D1500, Y160, M1111 as double words), and
the random bit write example (M50 off, Y2F on), each wrapped in the 3E frame to the connected
station (network 00, PC FF, I/O 03FF, station 00, monitoring timer 0010H) as the manual's
3E frame chapter lays it out.
"""

from __future__ import annotations

import contextlib
import struct

import pytest
from edgegw.drivers.mc.address import DEVICES, AddressError, McAddress, parse_address, type_problem
from edgegw.drivers.mc.codec import (
    Codec,
    EncodeError,
    EndCodeError,
    Malformed,
    McPoint,
    decode_words,
    encode_words,
    end_code_reason,
    parse_request,
)
from edgegw.drivers.mc.planner import Span, plan_reads
from edgegw.drivers.mc.response import RangeDecoder
from edgegw.drivers.mc.simulator import McServer, SimulatedPlc
from hypothesis import given, settings
from hypothesis import strategies as st

D, M, X, Y, TN = DEVICES["D"], DEVICES["M"], DEVICES["X"], DEVICES["Y"], DEVICES["TN"]
BIN, ASC = Codec("binary"), Codec("ascii")


def h(text: str) -> bytes:
    return bytes.fromhex(text)


# ---- the manual's frames, byte for byte ----


def test_batch_read_words_binary_as_published() -> None:
    assert BIN.batch_read(D, 100, 3) == h("50 00 00 FF FF 03 00 0C 00 10 00 01 04 00 00 64 00 00 A8 03 00")
    reply = h("D0 00 00 FF FF 03 00 08 00 00 00 95 19 02 12 30 11")
    assert BIN.body_length(reply[:9]) == 8
    assert BIN.words(BIN.payload(reply[9:]), 3) == [0x1995, 0x1202, 0x1130]


def test_batch_read_words_ascii_as_published() -> None:
    assert ASC.batch_read(D, 100, 3) == b"500000FF03FF000018001004010000D*0001000003"
    reply = b"D00000FF03FF0000100000199512021130"
    assert ASC.body_length(reply[:18]) == 16
    assert ASC.words(ASC.payload(reply[18:]), 3) == [0x1995, 0x1202, 0x1130]


def test_batch_read_bits_as_published() -> None:
    assert BIN.batch_read(M, 100, 8, bits=True) == h(
        "50 00 00 FF FF 03 00 0C 00 10 00 01 04 01 00 64 00 00 90 08 00"
    )
    assert BIN.bits(h("00 01 00 11"), 8) == [False, False, False, True, False, False, True, True]
    assert ASC.batch_read(M, 100, 8, bits=True) == b"500000FF03FF000018001004010001M*0001000008"
    assert ASC.bits(b"00010011", 8) == [False, False, False, True, False, False, True, True]
    assert BIN.bits(h("10 10 10"), 5) == [True, False, True, False, True]  # odd count


def test_writes_as_published() -> None:
    assert BIN.batch_write_words(D, 100, [0x1995, 0x1202, 0x1130]) == h(
        "50 00 00 FF FF 03 00 12 00 10 00 01 14 00 00 64 00 00 A8 03 00 95 19 02 12 30 11"
    )
    assert ASC.batch_write_words(D, 100, [0x1995, 0x1202, 0x1130]) == (
        b"500000FF03FF000024001014010000D*0001000003199512021130"
    )
    assert BIN.batch_write_bits(M, 100, [True, True, False, False, True, True, False, False]) == h(
        "50 00 00 FF FF 03 00 10 00 10 00 01 14 01 00 64 00 00 90 08 00 11 00 11 00"
    )
    # random write in bit units: M50 off, Y2F on (request data as the manual prints it)
    frame = BIN.random_write_bits([(M, 50, False), (Y, 0x2F, True)])
    assert frame[11:] == h("02 14 01 00 02 32 00 00 90 00 2F 00 00 9D 01")


def test_random_read_as_published() -> None:
    frame = BIN.random_read([(D, 0), (TN, 0), (M, 100), (X, 0x20)], [(D, 1500), (Y, 0x160), (M, 1111)])
    assert frame == h(
        "50 00 00 FF FF 03 00 24 00 10 00 03 04 00 00 04 03 00 00 00 A8 00 00 00 C2 64 00 00 90 "
        "20 00 00 9C DC 05 00 A8 60 01 00 9D 57 04 00 90"
    )
    ascii_frame = ASC.random_read([(D, 0), (TN, 0), (M, 100), (X, 0x20)], [(D, 1500), (Y, 0x160), (M, 1111)])
    assert (
        ascii_frame
        == b"500000FF03FF0000480010040300000403D*000000TN000000M*000100X*000020D*001500Y*000160M*001111"
    )


def test_iqr_subcommands_as_published() -> None:
    iqr = Codec("binary", iqr=True)
    assert iqr.batch_read(D, 100, 3) == h(
        "50 00 00 FF FF 03 00 0E 00 10 00 01 04 02 00 64 00 00 00 A8 00 03 00"
    )
    assert iqr.batch_read(M, 100, 8, bits=True) == h(
        "50 00 00 FF FF 03 00 0E 00 10 00 01 04 03 00 64 00 00 00 90 00 08 00"
    )
    assert Codec("ascii", iqr=True).batch_read(D, 100, 3) == b"500000FF03FF00001C001004010002D***000001000003"


def test_an_end_code_is_named() -> None:
    reply = h("D0 00 00 FF FF 03 00 0B 00 51 C0 00 FF FF 03 00 01 04 00 00")
    with pytest.raises(EndCodeError) as err:
        BIN.payload(reply[9:])
    assert err.value.code == 0xC051 and str(err.value).startswith("C051: too many points")
    with pytest.raises(EndCodeError, match="C051"):
        ASC.payload(b"D00000FF03FF000016C05100FF03FF0004010000"[18:])
    assert end_code_reason(0xC056) == "C056: request exceeds the maximum address"
    assert end_code_reason(0xC0FF).startswith("C0FF: refused by the PLC")


def test_the_wrong_code_is_named() -> None:
    with pytest.raises(Malformed, match="set code: ascii"):
        BIN.body_length(b"D00000FF0")
    with pytest.raises(Malformed, match="set code: binary"):
        ASC.body_length(h("D0 00 00 FF FF 03 00 08 00") + b"0" * 9)


# ---- codec properties ----

WORD_TYPES = ["int16", "uint16", "int32", "uint32", "float32", "int64", "uint64", "float64"]
LIMITS = {"int16": 15, "int32": 31, "int64": 63}


@st.composite
def typed_values(draw: st.DrawFn) -> tuple[McPoint, object]:
    t = draw(st.sampled_from(WORD_TYPES))
    order = draw(st.sampled_from(["CDAB", "ABCD", "BADC", "DCBA"]))
    p = McPoint("p", "D", 0, t, byte_order=order)
    if t.startswith("float"):
        v: object = draw(st.floats(allow_nan=False, width=32 if t == "float32" else 64))
    elif t.startswith("u"):
        v = draw(st.integers(0, 2 ** (16 * p.words) - 1))
    else:
        v = draw(st.integers(-(2 ** LIMITS[t]), 2 ** LIMITS[t] - 1))
    return p, v


@given(typed_values())
def test_values_round_trip_through_words(pv: tuple[McPoint, object]) -> None:
    p, v = pv
    words = encode_words(p, v)
    assert len(words) == p.words and all(0 <= w <= 0xFFFF for w in words)
    assert decode_words(p, words) == v


def test_low_word_first_is_the_default_and_abcd_swaps() -> None:
    p = McPoint("p", "D", 0, "uint32")
    assert encode_words(p, 0x12345678) == [0x5678, 0x1234]
    assert encode_words(McPoint("p", "D", 0, "uint32", byte_order="ABCD"), 0x12345678) == [0x1234, 0x5678]
    assert encode_words(McPoint("p", "D", 0, "float32"), 1.0) == [0x0000, 0x3F80]
    s = McPoint("s", "D", 0, "string", length=3)
    assert encode_words(s, "ABC") == [0x4241, 0x0043]  # first character in the low byte
    assert decode_words(s, [0x4241, 0x0043]) == "ABC"
    with pytest.raises(EncodeError):
        encode_words(s, "ABCD")


@given(
    st.sampled_from(["binary", "ascii"]),
    st.booleans(),
    st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=40),
)
def test_write_frames_parse_back_in_the_simulator(code: str, iqr: bool, words: list[int]) -> None:
    codec = Codec(code, iqr, "iQ-R" if iqr else "Q")
    plc = SimulatedPlc("p", "iQ-R" if iqr else "Q", code, iqr, [])
    server = McServer(plc)
    got_code, cmd, sub, rest = parse_request(codec.batch_write_words(D, 500, words))
    assert got_code == code
    reply = server.answer(code, cmd, sub, rest)
    n = codec.body_length(reply[: 9 if code == "binary" else 18])
    assert codec.payload(reply[-n:]) == b""
    assert list(plc.memory["D"][500 : 500 + len(words)]) == words
    _, cmd, sub, rest = parse_request(codec.batch_read(D, 500, len(words)))
    reply = server.answer(code, cmd, sub, rest)
    assert codec.words(codec.payload(reply[9 if code == "binary" else 18 :]), len(words)) == words


@given(
    st.sampled_from(["binary", "ascii"]),
    st.lists(st.booleans(), min_size=1, max_size=64),
    st.integers(0, 7000),
)
def test_bit_frames_round_trip(code: str, bits: list[bool], start: int) -> None:
    codec = Codec(code)
    plc = SimulatedPlc("p", "Q", code, False, [])
    server = McServer(plc)
    for frame in (codec.batch_write_bits(M, start, bits),):
        _, cmd, sub, rest = parse_request(frame)
        server.answer(code, cmd, sub, rest)
    _, cmd, sub, rest = parse_request(codec.batch_read(M, start, len(bits), bits=True))
    reply = server.answer(code, cmd, sub, rest)
    assert codec.bits(codec.payload(reply[9 if code == "binary" else 18 :]), len(bits)) == bits


# ---- the reply parser against anything ----


@settings(max_examples=300)
@given(st.sampled_from(["binary", "ascii"]), st.binary(max_size=60), st.integers(1, 8))
def test_any_bytes_are_a_value_or_a_named_failure(code: str, junk: bytes, count: int) -> None:
    codec = Codec(code)
    header = junk[: 9 if code == "binary" else 18]
    try:
        codec.body_length(header)
        data = codec.payload(junk[len(header) :])
        codec.words(data, count)
        codec.bits(data, count)
        codec.random_words(data, count, 1)
    except (Malformed, EndCodeError):
        pass


@settings(max_examples=200)
@given(st.lists(st.integers(0, 0xFFFF), min_size=4, max_size=4))
def test_any_words_decode_for_every_type(words: list[int]) -> None:
    for t in [*WORD_TYPES, "int8", "uint8"]:
        p = McPoint("p", "D", 0, t)
        decode_words(p, words[: p.words])
    decode_words(McPoint("s", "D", 0, "string", length=8), words)


# ---- addresses ----


@pytest.mark.parametrize(
    ("text", "plc", "expected"),
    [
        ("D100", "Q", McAddress("D", 100)),
        ("x1f", "Q", McAddress("X", 0x1F)),
        ("X17", "iQ-F", McAddress("X", 15, None, "iQ-F")),
        ("Y1777", "iQ-F", McAddress("Y", 1023, None, "iQ-F")),
        ("B1A", "iQ-F", McAddress("B", 0x1A, None, "iQ-F")),
        ("W1F", "Q", McAddress("W", 0x1F)),
        ("D300.3", "Q", McAddress("D", 300, 3)),
        ("D300.F", "Q", McAddress("D", 300, 15)),
        ("SM400", "Q", McAddress("SM", 400)),
        ("ZR1000", "iQ-R", McAddress("ZR", 1000, None, "iQ-R")),
        ("TN5", "L", McAddress("TN", 5, None, "L")),
    ],
)
def test_addresses(text: str, plc: str, expected: McAddress) -> None:
    assert parse_address(text, plc) == expected


@pytest.mark.parametrize(
    ("text", "plc", "message"),
    [
        ("X18", "iQ-F", "octal on iQ-F"),
        ("X2000", "iQ-F", "beyond the I/O of iQ-F CPUs (X0 to X1777)"),
        ("X2000", "Q", "beyond the I/O of Q CPUs (X0 to X1FFF)"),
        ("D1A", "Q", "numbers are decimal"),
        ("D300.10", "Q", "bit 10 is .A"),
        ("M10.1", "Q", "M is a bit device"),
        ("T5", "Q", "write the current value as TN5"),
        ("D1000000", "Q", "beyond what an MC request can address"),
        ("Q10", "Q", "is not a MELSEC device"),
        ("", "Q", "an empty address"),
    ],
)
def test_address_errors(text: str, plc: str, message: str) -> None:
    with pytest.raises(
        AddressError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")
    ):
        parse_address(text, plc)


def test_types_fit_devices() -> None:
    assert type_problem(parse_address("M10"), "int16", "ro") is not None
    assert type_problem(parse_address("D10"), "bool", "ro") is not None
    assert "no single-bit write" in str(type_problem(parse_address("D10.1"), "bool", "rw"))
    assert type_problem(parse_address("D10.1"), "bool", "ro") is None
    assert "clear the high byte" in str(type_problem(parse_address("D10"), "uint8", "rw"))


@given(st.text(max_size=12), st.sampled_from(["Q", "L", "iQ-R", "iQ-F"]))
def test_any_text_is_an_address_or_a_reason(text: str, plc: str) -> None:
    try:
        a = parse_address(text, plc)
    except AddressError as exc:
        assert str(exc)
    else:
        assert parse_address(str(a), plc) == a


# ---- the planner ----


def test_contiguous_words_are_one_batch_and_scattered_ones_random() -> None:
    spans = [Span("D", False, 100, 1), Span("D", False, 101, 2), Span("D", False, 110, 4)]
    spans += [
        Span("D", False, 5000, 1),
        Span("W", False, 0x20, 2),
        Span("M", True, 10, 1),
        Span("M", True, 25, 1),
    ]
    ranges, requests = plan_reads(spans, max_gap=16)
    assert [(r.device, r.start, r.words) for r in ranges] == [
        ("D", 100, 14),
        ("D", 5000, 1),
        ("M", 10, 1),
        ("W", 32, 2),
    ]
    assert [(q.random, q.ranges) for q in requests] == [(False, (0,)), (True, (1, 2, 3))]


@settings(max_examples=200)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["D", "W", "M", "X"]), st.integers(0, 5000), st.sampled_from([1, 2, 4, 40])
        ),
        min_size=1,
        max_size=80,
    ),
    st.integers(0, 64),
    st.booleans(),
)
def test_every_point_is_read_within_the_frame_limits(
    raw: list[tuple[str, int, int]], gap: int, iqr: bool
) -> None:
    spans = [Span(d, DEVICES[d].bit, s, 1 if DEVICES[d].bit else n) for d, s, n in raw]
    ranges, requests = plan_reads(spans, gap, iqr)
    covered = sorted(i for r in ranges for i in r.points)
    assert covered == list(range(len(spans)))
    for r in ranges:
        assert 1 <= r.words <= 960
        for i in r.points:
            s = spans[i]
            assert s.device == r.device and s.start >= r.start
            end = r.start + (16 * r.words if r.bit_device else r.words)
            assert s.start + s.size <= end
    assert sorted(k for q in requests for k in q.ranges) == list(range(len(ranges)))
    for q in requests:
        if q.random:
            assert len(q.ranges) <= (96 if iqr else 192)
            assert all(ranges[k].words <= 2 for k in q.ranges)
        else:
            assert len(q.ranges) == 1


def test_a_range_decoder_reads_bits_of_bit_devices_and_words() -> None:
    ranges, _ = plan_reads([Span("M", True, 10, 1), Span("M", True, 27, 1)], 16)
    (r,) = ranges
    dec = RangeDecoder(r, [McPoint("a", "M", 10, "bool"), McPoint("b", "M", 27, "bool")])
    assert dec.decode([0x0001, 0x0002]) == [True, True]
    assert dec.decode([0x0000, 0x0000]) == [False, False]
    with pytest.raises(ValueError):
        dec.decode([1])


def test_model_name_reply() -> None:
    data = b"Q03UDVCPU".ljust(16) + struct.pack("<H", 0x366)
    assert BIN.model_name(data) == ("Q03UDVCPU", 0x366)
    with pytest.raises(Malformed):
        BIN.model_name(b"short")


@settings(max_examples=300)
@given(
    st.sampled_from(["binary", "ascii"]),
    st.sampled_from([0x0401, 0x0403, 0x1401, 0x1402, 0x0101, 0x0619]),
    st.integers(0, 3),
    st.binary(max_size=40),
)
def test_the_simulator_answers_any_request_with_a_reply(code: str, cmd: int, sub: int, rest: bytes) -> None:
    plc = SimulatedPlc("p", "iQ-R", code, True, [])
    reply = McServer(plc).answer(code, cmd, sub, rest)
    codec = Codec(code)
    n = codec.body_length(reply[: 9 if code == "binary" else 18])
    assert len(reply) == (9 if code == "binary" else 18) + n


def test_ascii_data_must_be_hex_digits() -> None:
    for bad in (b"-1FF", b" 1F ", b"1_2F", b"+001"):
        with pytest.raises(Malformed):
            ASC.words(bad, 1)
    with pytest.raises(Malformed):
        ASC.body_length(b"D00000FF03FF00-010")


@given(st.sampled_from(["binary", "ascii"]), st.binary(min_size=18, max_size=20))
def test_any_model_reply_is_a_name_or_malformed(code: str, data: bytes) -> None:
    with contextlib.suppress(Malformed):
        Codec(code).model_name(data)
