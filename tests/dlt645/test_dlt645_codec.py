"""The DL/T 645-2007 codec against published frames, and property tests of its round trips and
of the reply parser with line noise around frames."""

from __future__ import annotations

import pytest
from edgegw.drivers.dlt645.codec import (
    BadFrame,
    FormatError,
    Frame,
    address_bytes,
    decode,
    encode,
    err_meaning,
    frame,
    known,
    parse,
    parse_format,
    read_address_request,
    read_request,
)
from hypothesis import given
from hypothesis import strategies as st

# Published exchanges (EBYTE IoT lab, "DLT645协议" frame walkthrough, reposted at
# https://mbb.eet-china.com/forum/topic/114707_1_1.html): meter 652022122003, a read of the
# combined active energy 00000000 (reply 0.00 kWh) and of the voltage block 0201FF00 (reply
# phases A, B at 0 V and C at 239.4 V).
PUBLISHED = [
    (
        "68 03 20 12 22 20 65 68 11 04 33 33 33 33 8D 16",
        "68 03 20 12 22 20 65 68 91 08 33 33 33 33 33 33 33 33 DD 16",
        0x00000000,
    ),
    (
        "FE FE FE FE 68 18 20 12 22 20 65 68 11 04 33 32 34 35 A4 16",
        "FE FE FE FE 68 18 20 12 22 20 65 68 91 0A 33 32 34 35 33 33 33 33 C7 56 13 16",
        0x0201FF00,
    ),
]


def test_published_read_request_is_built_byte_for_byte() -> None:
    request = bytes.fromhex(PUBLISHED[1][0])
    # the address field there is 18 20 12 22 20 65: nameplate 652022122018
    assert read_request("652022122018", 0x0201FF00) == request
    no_preamble = bytes.fromhex(PUBLISHED[0][0])
    assert frame(address_bytes("652022122003"), 0x11, (0).to_bytes(4, "little"), b"") == no_preamble


@pytest.mark.parametrize(("request_hex", "reply_hex", "di"), PUBLISHED)
def test_published_replies_parse(request_hex: str, reply_hex: str, di: int) -> None:
    used, got = parse(bytes.fromhex(reply_hex))
    assert isinstance(got, Frame) and used == len(bytes.fromhex(reply_hex))
    assert got.control == 0x91 and int.from_bytes(got.data[:4], "little") == di
    if di == 0:
        assert decode(parse_format("XXXXXX.XX", True), got.data[4:]) == 0.0
    else:
        volts = [decode(parse_format("XXX.X"), got.data[4 + 2 * i : 6 + 2 * i]) for i in range(3)]
        assert volts == [0.0, 0.0, 239.4]
    _, req = parse(bytes.fromhex(request_hex))
    assert isinstance(req, Frame) and req.control == 0x11 and req.data == di.to_bytes(4, "little")


def test_read_address_to_the_wildcard() -> None:
    # 68 AA AA AA AA AA AA 68 13 00 DF 16: the read-address command of the standard
    assert read_address_request() == bytes.fromhex("FEFEFEFE 68AAAAAAAAAAAA68 1300 DF16")


def test_formats_of_the_standard() -> None:
    assert decode(parse_format("XXXXXX.XX"), bytes.fromhex("56341200")) == 1234.56
    assert decode(parse_format("XXX.XXX", True), bytes.fromhex("563412")) == 123.456
    assert decode(parse_format("XXX.XXX", True), bytes.fromhex("345682")) == -25.634
    assert decode(parse_format("XX.XXXX", True), bytes.fromhex("785634")) == 34.5678
    assert decode(parse_format("X.XXX", True), bytes.fromhex("5089")) == -0.95
    assert decode(parse_format("XX.XX"), bytes.fromhex("0050")) == 50.0
    assert decode(parse_format("YYMMDDWW"), bytes.fromhex("00291126")) == "2026-11-29"
    assert decode(parse_format("hhmmss"), bytes.fromhex("563412")) == "12:34:56"
    assert decode(parse_format("NNNNNNNNNNNN"), bytes.fromhex("341200000000")) == "000000001234"
    with pytest.raises(FormatError, match="not BCD"):
        decode(parse_format("XX.XX"), bytes.fromhex("0A00"))
    with pytest.raises(FormatError, match="needs 2"):
        decode(parse_format("XX.XX"), bytes.fromhex("000000"))
    assert encode(parse_format("XX.XXXX", True), -79.9999) == bytes.fromhex("9999F9")
    with pytest.raises(FormatError, match="does not fit"):
        encode(parse_format("XX.XXXX", True), 80.0)
    with pytest.raises(FormatError, match="negative"):
        encode(parse_format("XXX.X"), -1.0)


def test_known_identifiers() -> None:
    assert known(0x00000000) is not None and known(0x00000000).signed  # type: ignore[union-attr]
    assert known(0x00010100).format == "XXXXXX.XX"  # type: ignore[union-attr]
    assert known(0x02010100).format == "XXX.X"  # type: ignore[union-attr]
    assert known(0x02020300).signed  # type: ignore[union-attr]
    assert known(0x02060000).format == "X.XXX"  # type: ignore[union-attr]
    assert known(0x02800002).format == "XX.XX"  # type: ignore[union-attr]
    assert known(0x02010000) is None  # no "total" voltage
    assert known(0x0201FF00) is None  # a block, not one value


def test_err_bits_by_name() -> None:
    assert err_meaning(0x02) == "no requested data"
    assert err_meaning(0x05) == "other error, password error or unauthorised"
    assert err_meaning(0x40) == "tariffs exceeded"


FORMATS = st.sampled_from(["XXXXXX.XX", "XXX.X", "XXX.XXX", "XX.XXXX", "X.XXX", "XX.XX", "XXXX", "XXXXXXXX"])


@given(FORMATS, st.booleans(), st.integers(min_value=0, max_value=10**16))
def test_numbers_round_trip(text: str, signed: bool, n: int) -> None:
    fmt = parse_format(text, signed)
    scaled = n % fmt.limit
    value = scaled / 10 ** (fmt.decimals or 0)
    if signed and n % 2:
        value = -value
    assert decode(fmt, encode(fmt, value)) == value


@given(
    st.text(alphabet="0123456789", min_size=12, max_size=12),
    st.integers(min_value=0, max_value=0xFFFFFFFF),
    st.binary(max_size=40).map(lambda b: b.replace(b"\x68", b"")),
    st.binary(max_size=40),
)
def test_reply_found_after_noise(address: str, di: int, noise: bytes, data: bytes) -> None:
    reply = frame(address_bytes(address), 0x91, di.to_bytes(4, "little") + data)
    stream = noise + reply + b"\xfe"
    used, got = parse(stream)
    assert isinstance(got, Frame)
    assert got.address_text == address and got.control == 0x91
    assert got.data == di.to_bytes(4, "little") + data
    assert used == len(noise) + len(reply)
    # arriving byte by byte: nothing until the last byte, then the same frame
    buf = bytearray()
    for i, b in enumerate(stream):
        buf.append(b)
        used, got = parse(buf)
        del buf[:used]
        if got is not None:
            assert i == len(noise) + len(reply) - 1 and isinstance(got, Frame)
            break


@given(st.binary(max_size=300))
def test_parser_never_fails_on_garbage(noise: bytes) -> None:
    used, got = parse(noise)
    assert 0 <= used <= len(noise)
    assert got is None or isinstance(got, Frame | BadFrame)


def test_checksum_error_is_reported() -> None:
    good = bytearray(read_request("000000001234", 0x02010100))
    good[-2] ^= 0x01
    _, got = parse(good)
    assert isinstance(got, BadFrame) and "checksum" in got.reason


def test_a_fake_header_in_line_noise_does_not_hide_the_reply() -> None:
    reply = frame(address_bytes("000000001234"), 0x91, (0x02010100).to_bytes(4, "little") + b"\x14\x23")
    header = bytes.fromhex("68 21 43 65 87 09 00 68 11")
    # a length over 200 is no frame's: that 0x68 is noise
    fake = header + b"\xff"
    used, got = parse(fake + reply)
    assert isinstance(got, Frame) and got.address_text == "000000001234"
    assert used == len(fake) + len(reply)
    # a length no longer than 200 whose frame is not complete yet, and a whole frame after it
    fake = header + b"\x50"
    used, got = parse(fake + reply)
    assert isinstance(got, Frame) and got.address_text == "000000001234"
    assert used == len(fake) + len(reply)
    # a fake frame that covers the reply and is complete: reported bad with only its first byte
    # consumed, then the reply it covered is found
    stream = header + bytes([len(reply)]) + reply + b"\x00\x16"
    used, got = parse(stream)
    assert isinstance(got, BadFrame) and "checksum" in got.reason and used == 1
    more, got = parse(stream[used:])
    assert isinstance(got, Frame) and got.address_text == "000000001234"
    assert used + more == len(stream) - 2
