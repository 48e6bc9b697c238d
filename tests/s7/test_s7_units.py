"""The S7 plugin's pure parts: addresses, values in PLC memory, the read planner, and the
reply parser fed with whatever a device might send."""

from __future__ import annotations

import struct

import pytest
from edgegw.drivers.base import PointError
from edgegw.drivers.s7.address import AddressError, S7Address, parse_address, type_problem
from edgegw.drivers.s7.codec import EncodeError, RangeDecoder, S7Point, encode_value
from edgegw.drivers.s7.config import S7Connection, parse_tsap
from edgegw.drivers.s7.planner import (
    ITEM_HEADER,
    REPLY_HEADER,
    Span,
    max_item_bytes,
    plan_reads,
    reply_size,
    request_size,
)
from edgegw.drivers.s7.response import Malformed, Refused, read_items, write_result
from hypothesis import given, settings
from hypothesis import strategies as st

# ---- addresses ----


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("DB10.DBX0.0", S7Address("DB", 10, 0, "X", 0)),
        ("db10.dbw2", S7Address("DB", 10, 2, "W")),
        ("%DB1.DBD4", S7Address("DB", 1, 4, "D")),
        ("DB65535.DBB12", S7Address("DB", 65535, 12, "B")),
        ("I0.3", S7Address("I", 0, 0, "X", 3)),
        ("E0.3", S7Address("I", 0, 0, "X", 3)),
        ("AB1", S7Address("Q", 0, 1, "B")),
        ("Q4.7", S7Address("Q", 0, 4, "X", 7)),
        ("%MW20", S7Address("M", 0, 20, "W")),
        ("MD24", S7Address("M", 0, 24, "D")),
    ],
)
def test_addresses_parse(text: str, expected: S7Address) -> None:
    assert parse_address(text) == expected


@given(
    st.sampled_from(["DB", "I", "Q", "M"]),
    st.integers(1, 65535),
    st.integers(0, 2**21 - 1),
    st.sampled_from("XBWD"),
    st.integers(0, 7),
)
def test_address_text_round_trips(area: str, db: int, byte: int, width: str, bit: int) -> None:
    a = S7Address(area, db if area == "DB" else 0, byte, width, bit if width == "X" else None)
    assert parse_address(str(a)) == a


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("DB10.DBX0", "needs its bit number"),
        ("DB10.DBX0.8", "bit 8 does not exist"),
        ("MW20.1", "a word address has no bit number; a bit is M20.1"),
        ("VW100", "write DB1.DBW100"),
        ("DB10.W2", "DB10.DBW2"),
        ("DB0.DBW0", "1 to 65535"),
        ("T5", "timers and counters"),
        ("", "empty"),
        ("DB1.DBW99999999", "beyond the largest"),
    ],
)
def test_bad_addresses_say_why(text: str, says: str) -> None:
    with pytest.raises(AddressError, match=None) as exc:
        parse_address(text)
    assert says in str(exc.value)


@given(st.text(max_size=30))
def test_any_text_parses_or_is_refused_with_a_reason(text: str) -> None:
    try:
        parse_address(text)
    except AddressError as exc:
        assert str(exc)


@pytest.mark.parametrize(
    ("address", "type_", "ok"),
    [
        ("DB1.DBX0.0", "bool", True),
        ("DB1.DBB0", "bool", False),
        ("DB1.DBB0", "int8", True),
        ("DB1.DBB0", "float64", True),  # the byte form takes any width
        ("DB1.DBW0", "int16", True),
        ("DB1.DBW0", "uint16", True),
        ("DB1.DBW0", "int32", False),
        ("DB1.DBD0", "float32", True),
        ("DB1.DBD0", "uint32", True),
        ("DB1.DBD0", "float64", False),
        ("MW0", "string", False),
        ("MB0", "string", True),
        ("I0.0", "int16", False),
    ],
)
def test_width_must_fit_the_type(address: str, type_: str, ok: bool) -> None:
    assert (type_problem(parse_address(address), type_, None) is None) is ok


def test_tsaps_and_presets() -> None:
    assert parse_tsap("02.01") == 0x0201
    assert parse_tsap("0x1000") == 0x1000
    with pytest.raises(ValueError):
        parse_tsap("2.0.1")
    assert S7Connection(host="h", plc="s7-1200").tsaps() == (0x0100, 0x0101)
    assert S7Connection(host="h", plc="s7-300").tsaps() == (0x0100, 0x0102)
    assert S7Connection(host="h", plc="s7-400", rack=0, slot=3).tsaps() == (0x0100, 0x0103)
    assert S7Connection(host="h", rack=1, slot=2).tsaps() == (0x0100, 0x0100 | 1 << 5 | 2)
    assert S7Connection(host="h", plc="s7-200smart").tsaps() == (0x0100, 0x0300)
    assert S7Connection(host="h", plc="logo").tsaps() == (0x1000, 0x2000)
    c = S7Connection(host="h", local_tsap="10.00", remote_tsap="03.01")
    assert c.tsaps() == (0x1000, 0x0301)
    assert "TSAP 10.00/03.01" in c.describe()


# ---- values ----

NUMBERS = {
    "int8": st.integers(-128, 127),
    "uint8": st.integers(0, 255),
    "int16": st.integers(-(2**15), 2**15 - 1),
    "uint16": st.integers(0, 2**16 - 1),
    "int32": st.integers(-(2**31), 2**31 - 1),
    "uint32": st.integers(0, 2**32 - 1),
    "int64": st.integers(-(2**63), 2**63 - 1),
    "uint64": st.integers(0, 2**64 - 1),
    "float32": st.floats(width=32, allow_nan=False),
    "float64": st.floats(allow_nan=False),
}


@given(st.data())
def test_every_number_round_trips_through_plc_memory(data: st.DataObject) -> None:
    type_ = data.draw(st.sampled_from(sorted(NUMBERS)))
    value = data.draw(NUMBERS[type_])
    p = S7Point("v", 0x84, 1, 3, type_)
    raw = encode_value(p, value)
    assert len(raw) == p.size
    memory = bytes(3) + raw + bytes(2)
    assert RangeDecoder(0, len(memory), [p]).decode(memory) == [value]


def test_numbers_are_big_endian_at_their_byte() -> None:
    points = [
        S7Point("a", 0x84, 1, 0, "int16"),
        S7Point("b", 0x84, 1, 2, "float32"),
        S7Point("c", 0x84, 1, 6, "uint8"),
        S7Point("d", 0x84, 1, 8, "float64"),
        S7Point("bit", 0x84, 1, 6, "bool", bit=2),  # overlaps c: decoded on its own
    ]
    memory = struct.pack(">hfBxd", -2, 1.5, 0b0000_0100, 2.25)
    assert RangeDecoder(0, len(memory), points).decode(memory) == [-2, 1.5, 4, 2.25, True]


@given(st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=255), max_size=20))
def test_strings_round_trip(text: str) -> None:
    p = S7Point("s", 0x84, 1, 0, "string", format="STRING", length=20)
    raw = encode_value(p, text)
    assert raw[0] == 20 and raw[1] == len(text) and len(raw) == 22
    assert RangeDecoder(0, 22, [p]).decode(raw) == [text]


@given(st.text(max_size=8).filter(lambda s: len(s.encode("utf-16-be")) <= 16))
def test_wstrings_round_trip(text: str) -> None:
    p = S7Point("s", 0x84, 1, 0, "string", format="WSTRING", length=8)
    raw = encode_value(p, text)
    assert len(raw) == p.size == 20
    assert RangeDecoder(0, 20, [p]).decode(raw) == [text]


def test_string_limits_and_damage() -> None:
    p = S7Point("s", 0x84, 1, 0, "string", format="STRING", length=4)
    with pytest.raises(EncodeError, match="longer than STRING"):
        encode_value(p, "12345")
    with pytest.raises(EncodeError, match="Latin-1"):
        encode_value(p, "温度")
    # a current length beyond the maximum is the PLC's memory damaged, not a crash
    got = RangeDecoder(0, 6, [p]).decode(bytes([4, 9]) + b"abcd")[0]
    assert isinstance(got, PointError) and "malformed STRING" in got.reason
    chars = S7Point("c", 0x84, 1, 0, "string", format="CHAR", length=6)
    assert RangeDecoder(0, 6, [chars]).decode(b"AB12\x00\x00") == ["AB12"]


def test_dtl_and_date_and_time_read_as_iso_text() -> None:
    dtl = S7Point("t", 0x84, 1, 0, "string", format="DTL")
    raw = struct.pack(">HBBBBBBI", 2026, 11, 29, 1, 8, 30, 5, 250_000_000)
    assert RangeDecoder(0, 12, [dtl]).decode(raw) == ["2026-11-29T08:30:05.250000"]
    bad = RangeDecoder(0, 12, [dtl]).decode(struct.pack(">HBBBBBBI", 2026, 13, 1, 1, 0, 0, 0, 0))[0]
    assert isinstance(bad, PointError)
    dt = S7Point("t", 0x84, 1, 0, "string", format="DATE_AND_TIME")
    raw = bytes([0x26, 0x11, 0x29, 0x08, 0x30, 0x05, 0x25, 0x01])  # 250 ms, Sunday (1)
    assert RangeDecoder(0, 8, [dt]).decode(raw) == ["2026-11-29T08:30:05.250"]
    assert RangeDecoder(0, 8, [dt]).decode(bytes([0x99, 0x12, 0x31, 0x23, 0x59, 0x59, 0, 0])) == [
        "1999-12-31T23:59:59"
    ]
    assert isinstance(RangeDecoder(0, 8, [dt]).decode(bytes([0x2A, 1, 1, 0, 0, 0, 0, 0]))[0], PointError)
    with pytest.raises(EncodeError, match="read-only"):
        encode_value(dt, "2026-01-01T00:00:00")


def test_integers_are_range_checked_before_a_write() -> None:
    with pytest.raises(EncodeError, match="does not fit int8"):
        encode_value(S7Point("v", 0x83, 0, 0, "int8"), 128)
    with pytest.raises(EncodeError, match="not a finite number"):
        encode_value(S7Point("v", 0x83, 0, 0, "int16"), float("inf"))
    assert encode_value(S7Point("v", 0x83, 0, 0, "int16"), 2.6) == b"\x00\x03"


# ---- planner ----

spans_st = st.lists(
    st.builds(
        Span,
        area=st.sampled_from([0x81, 0x82, 0x83, 0x84]),
        db=st.sampled_from([0, 1, 10]),
        start=st.integers(0, 2000),
        size=st.sampled_from([1, 2, 4, 8, 22, 256, 600]),
    ),
    min_size=1,
    max_size=60,
)


@settings(max_examples=200)
@given(spans_st, st.sampled_from([240, 480, 960]), st.integers(0, 64), st.integers(1, 20))
def test_every_point_is_read_and_every_request_fits_the_pdu(
    spans: list[Span], pdu: int, max_gap: int, max_items: int
) -> None:
    ranges, requests = plan_reads(spans, pdu, max_gap, max_items)
    for req in requests:
        assert 1 <= len(req.items) <= max_items
        assert request_size(req) <= pdu
        assert reply_size(req) <= pdu
    for n, s in enumerate(spans):
        owner = [r for r in ranges if n in r.points]
        assert len(owner) == 1
        r = owner[0]
        assert (
            (r.area, r.db) == (s.area, s.db) and r.start <= s.start and s.start + s.size <= r.start + r.size
        )
    # the items of each range cover it exactly once
    for k, r in enumerate(ranges):
        pieces = sorted((i.start, i.size) for req in requests for i in req.items if i.range == k)
        pos = r.start
        for start, size in pieces:
            assert start == pos
            pos += size
        assert pos == r.start + r.size


def test_planner_packs_areas_into_one_request_and_splits_what_a_pdu_cannot_carry() -> None:
    spans = [Span(0x84, 10, 0, 2), Span(0x84, 10, 4, 4), Span(0x83, 0, 20, 2), Span(0x81, 0, 0, 1)]
    ranges, requests = plan_reads(spans, 480)
    assert len(ranges) == 3 and len(requests) == 1
    # a STRING[254] (256 bytes) on an S7-300's 240-byte PDU: read in two pieces
    ranges, requests = plan_reads([Span(0x84, 1, 0, 256)], 240)
    assert [i.size for r in requests for i in r.items] == [max_item_bytes(240), 256 - max_item_bytes(240)]
    assert max_item_bytes(240) == 240 - REPLY_HEADER - ITEM_HEADER
    # 30 scattered words: no more than 20 variables a request
    ranges, requests = plan_reads([Span(0x84, 1, 100 * i, 2) for i in range(30)], 960)
    assert [len(r.items) for r in requests] == [20, 10]


# ---- replies ----


def reply(seq: int, items: list[tuple[int, bytes]], function: int = 0x04) -> bytes:
    data = b""
    for n, (code, payload) in enumerate(items):
        data += struct.pack(">BBH", code, 0x04 if code == 0xFF else 0, len(payload) * 8) + payload
        if len(payload) % 2 and n < len(items) - 1:
            data += b"\x00"
    return (
        struct.pack(">BBHHHHBB", 0x32, 3, 0, seq, 2, len(data), 0, 0) + bytes([function, len(items)]) + data
    )


def test_reply_items_are_kept_one_by_one() -> None:
    got = read_items(reply(7, [(0xFF, b"\x01"), (0x05, b""), (0xFF, b"\x00\x02")]), 7, [1, 2, 2])
    assert got == [b"\x01", 0x05, b"\x00\x02"]


def test_reply_header_errors_and_mismatches() -> None:
    refused = struct.pack(">BBHHHHBB", 0x32, 2, 0, 3, 0, 0, 0x81, 0x04)
    with pytest.raises(Refused) as exc:
        read_items(refused, 3, [2])
    assert "PUT/GET" in str(exc.value)
    with pytest.raises(Malformed, match="expected 4"):
        read_items(reply(3, [(0xFF, b"\x00\x01")]), 4, [2])
    with pytest.raises(Malformed, match="2 bytes where 4"):
        read_items(reply(3, [(0xFF, b"\x00\x01")]), 3, [4])
    with pytest.raises(Malformed, match="items in the reply"):
        read_items(reply(3, [(0xFF, b"\x00\x01")]), 3, [2, 2])
    ack = struct.pack(">BBHHHHBB", 0x32, 3, 0, 9, 2, 1, 0, 0) + b"\x05\x01\xff"
    assert write_result(ack, 9) == 0xFF


@settings(max_examples=500)
@given(st.binary(max_size=80), st.lists(st.integers(1, 8), min_size=1, max_size=4))
def test_any_bytes_become_items_or_a_named_failure(data: bytes, sizes: list[int]) -> None:
    for pdu in (data, struct.pack(">BBHH", 0x32, 3, 0, 1) + data):
        try:
            got = read_items(pdu, 1, sizes)
        except (Malformed, Refused) as exc:
            assert str(exc)
        else:
            assert len(got) == len(sizes)
        try:
            write_result(pdu, 1)
        except (Malformed, Refused) as exc:
            assert str(exc)
