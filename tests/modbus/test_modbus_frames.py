"""The Modbus/TCP transport's own frames: requests byte for byte as the Modbus Application
Protocol Specification V1.1b3 gives them in its examples (§6.1, 6.3, 6.5, 6.6, 6.12), the
answers of those examples parsed back, and whatever a device sends fed to the receiving side
in random pieces: a result, a BadResponse or nothing yet, never an exception of its own."""

from __future__ import annotations

import asyncio

from edgegw.drivers.modbus.codec import BlockDecoder, RegisterPoint
from edgegw.drivers.modbus.response import BadResponse, Reply, Request, frame_problem, request_pdu
from edgegw.drivers.modbus.tcp import _Link
from hypothesis import given, settings
from hypothesis import strategies as st


def test_requests_are_the_specifications_examples() -> None:
    # §6.3 read holding registers 108-110; §6.1 read coils 20-38; §6.5 write coil 173 ON;
    # §6.6 write register 2 = 3; §6.12 write registers 2-3 = 0x000A, 0x0102
    assert request_pdu(Request(3, "hr", 107, 3)) == bytes.fromhex("03 006B 0003")
    assert request_pdu(Request(1, "co", 19, 19)) == bytes.fromhex("01 0013 0013")
    assert request_pdu(Request(5, "co", 172, value=1)) == bytes.fromhex("05 00AC FF00")
    assert request_pdu(Request(5, "co", 172, value=0)) == bytes.fromhex("05 00AC 0000")
    assert request_pdu(Request(6, "hr", 1, value=3)) == bytes.fromhex("06 0001 0003")
    assert request_pdu(Request(16, "hr", 1, 2, registers=(0x000A, 0x0102))) == bytes.fromhex(
        "10 0001 0002 04 000A 0102"
    )


def test_the_specifications_answers_parse() -> None:
    read = Reply(bytes.fromhex("03 06 022B 0000 0064"))
    assert frame_problem(read.pdu, Request(3, "hr", 107, 3)) is None
    assert read.registers == [555, 0, 100] and not read.isError()
    assert BlockDecoder(107, 3, [RegisterPoint("a", "hr", 107, "int16")]).decode_bytes(
        read.register_bytes
    ) == [555]
    coils = Reply(bytes.fromhex("01 03 CD6B05"))  # coils 27-20, 35-28, 38-36
    assert coils.bits[:8] == [True, False, True, True, False, False, True, True]
    assert coils.bits[16:19] == [True, False, True]
    assert Reply(bytes.fromhex("05 00AC FF00")).bits == [True]
    echo = Reply(bytes.fromhex("10 0001 0002"))
    assert (echo.address, echo.count) == (1, 2)
    refused = Reply(bytes.fromhex("83 02"))
    assert refused.isError() and refused.exception_code == 2


def _feed(chunks: list[bytes], asked: Request) -> object:
    loop = asyncio.new_event_loop()
    try:
        link = _Link()
        link.header, link.asked = b"\x00\x01\x01", asked
        fut = link.waiting = loop.create_future()
        for c in chunks:
            link.data_received(c)
        if not fut.done():
            return None
        exc = fut.exception()
        if exc is not None:
            return exc
        return fut.result()
    finally:
        loop.close()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=6), st.sampled_from([1, 2, 3, 4, 5, 6, 16]))
def test_whatever_a_device_sends_is_an_answer_a_bad_response_or_nothing_yet(
    chunks: list[bytes], function: int
) -> None:
    asked = Request(function, "co" if function in (1, 5) else "hr", 10, 4, value=1)
    got = _feed(chunks, asked)
    assert got is None or isinstance(got, bytes | BadResponse)
    if isinstance(got, bytes) and frame_problem(got, asked) is None:
        reply = Reply(got)  # whatever frame_problem lets through parses
        if not reply.isError():
            if function in (3, 4):
                assert len(reply.registers) == 4
            elif function in (1, 2):
                assert len(reply.bits) == 8
            else:
                assert reply.address >= 0 and reply.count >= 0


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=1, max_size=30))
def test_a_well_framed_answer_is_taken_whole_even_in_pieces(pdu: bytes) -> None:
    frame = b"\x00\x01\x00\x00" + (len(pdu) + 1).to_bytes(2, "big") + b"\x01" + pdu
    pieces = [frame[i : i + 3] for i in range(0, len(frame), 3)]
    assert _feed(pieces, Request(3, "hr", 0, 2)) == pdu
