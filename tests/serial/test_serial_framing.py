"""Framing and line parsing of serial instruments: pure functions, so tested directly.
Whatever the chunking of the byte stream, the same frames come out; what is not a frame is
reported by kind and never comes out as one."""

from __future__ import annotations

from edgegw.drivers.base import ABSENT, PointError
from edgegw.drivers.serial.framing import Framer
from edgegw.drivers.serial.lines import FrameRejected, LineParser, convert
from edgegw.drivers.serialport import unescape
from hypothesis import given
from hypothesis import strategies as st


def run(framer: Framer, chunks: list[bytes]) -> tuple[list[bytes], list[str]]:
    frames: list[bytes] = []
    kinds: list[str] = []
    for c in chunks:
        f, p = framer.feed(c)
        frames += f
        kinds += [x.kind for x in p]
    return frames, kinds


def cut(data: bytes, points: list[int]) -> list[bytes]:
    points = sorted({p % (len(data) + 1) for p in points})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


lines = st.lists(st.text(alphabet="0123456789.,+-ABCSTGkg ", max_size=40), max_size=20)


@given(lines, st.lists(st.integers(min_value=0), max_size=30))
def test_terminated_frames_do_not_depend_on_chunking(texts: list[str], cuts: list[int]) -> None:
    data = b"".join(t.encode() + b"\r\n" for t in texts)
    frames, kinds = run(Framer(terminator=b"\r\n"), cut(data, cuts))
    assert frames == [t.encode() for t in texts] and kinds == []


@given(lines, st.lists(st.integers(min_value=0), max_size=30))
def test_stx_etx_frames_do_not_depend_on_chunking(texts: list[str], cuts: list[int]) -> None:
    data = b"".join(b"junk\x02" + t.encode() + b"\x03" for t in texts)
    frames, kinds = run(Framer(start=b"\x02", end=b"\x03"), cut(data, cuts))
    assert frames == [t.encode() for t in texts]
    assert kinds and set(kinds) == {"noise"} if texts else kinds == []


@given(st.binary(max_size=3000), st.lists(st.integers(min_value=0), max_size=30))
def test_any_bytes_keep_the_buffer_bounded(data: bytes, cuts: list[int]) -> None:
    framer = Framer(terminator=b"\n", max_frame=64)
    for c in cut(data, cuts):
        frames, _ = framer.feed(c)
        assert all(len(f) <= 64 for f in frames)
        assert len(framer._buf) <= 64 + len(c) + 1


def test_overlong_line_is_dropped_with_its_tail_and_the_next_line_survives() -> None:
    framer = Framer(terminator=b"\r\n", max_frame=16)
    frames, kinds = run(framer, [b"A" * 10, b"B" * 10, b"C" * 10, b"tail\r\nok 1\r\n"])
    assert frames == [b"ok 1"] and kinds == ["overlong"]


def test_new_start_before_end_reports_the_partial_frame() -> None:
    frames, kinds = run(Framer(start=b"\x02", end=b"\x03"), [b"\x02ST,+001", b"\x02ST,+002.0\x03"])
    assert frames == [b"ST,+002.0"] and kinds == ["partial"]


def test_fixed_length_with_start_byte() -> None:
    frames, kinds = run(Framer(start=b"@", length=4), [b"xx@12", b"34@5678@9"])
    assert frames == [b"1234", b"5678"] and kinds == ["noise"]
    assert Framer(start=b"@", length=4).discard() is None


def test_discard_reports_an_unfinished_frame() -> None:
    framer = Framer(terminator=b"\r\n")
    framer.feed(b"ST,GS,+00")
    p = framer.discard()
    assert p is not None and p.kind == "partial" and p.data == b"ST,GS,+00"
    assert framer.feed(b"12.5kg\r\n")[0] == [b"12.5kg"]


def test_escapes_in_any_quoting() -> None:
    assert unescape("\\r\\n") == b"\r\n" == unescape("\r\n")
    assert unescape("\\x02") == b"\x02" and unescape("SI\\r\\n") == b"SI\r\n"


def test_parse_named_groups_into_point_types() -> None:
    p = LineParser(
        [("net", "float64"), ("count", "uint16"), ("stable", "bool"), ("tare", "float32")],
        r"^(?P<stable>ST|US),NT,(?P<net>[+-]?[\d.,]+)kg(?:,T(?P<tare>[\d.]+))?,N(?P<count>\d+)$",
    )
    assert p.parse(b"ST,NT,+0012.345kg,N7") == [12.345, 7, PointError("'ST' is not a bool"), ABSENT]
    assert p.parse(b"US,NT,-1,5kg,T0.5,N70000") == [
        -1.5,
        PointError("70000 is outside the range of uint16"),
        PointError("'US' is not a bool"),
        0.5,
    ]
    rejected = p.parse(b"ERR 42")
    assert isinstance(rejected, FrameRejected) and rejected.kind == "no_match"
    bad = p.parse(b"ST,NT,\xff\xfe12kg")
    assert isinstance(bad, FrameRejected) and bad.kind == "encoding"
    assert p.parse(b"  ") is None


def test_whole_frame_is_the_value_without_a_pattern() -> None:
    p = LineParser([("code", "string")], None)
    assert p.parse(b" SN-000123 ") == ["SN-000123"] and p.parse(b"\r") is None


def test_convert_refuses_what_is_not_the_type() -> None:
    assert convert("1_000", "int32") == PointError("'1_000' is not an integer")
    assert convert("+0042", "int16") == 42
    assert convert("-   12.34", "float32") == -12.34 and convert("   12.34", "float64") == 12.34
    assert convert("12,5", "float64") == 12.5
    assert convert("1,234.5", "float64") == PointError("'1,234.5' is not a number")
    assert convert("on", "bool") is True
