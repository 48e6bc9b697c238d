"""Checking a device's answer against the request it answers.

pymodbus decodes what it can, and accepts some answers that are wrong: fewer registers than
asked for, a coil answer of the wrong size, the answer of another function, a write echo for
another address. Others it cannot decode at all (a byte count larger than the data, a write
answer cut short). Both kinds become BadResponse here, with a reason that says what the device
did wrong ("device answered 2 bytes, expected 4 for hr:100 x2").

`frame_problem` checks the raw PDU (the TCP driver sees every frame before pymodbus does);
`response_problem` checks what pymodbus made of it (every transport).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

READ_FUNCTION = {"co": 1, "di": 2, "hr": 3, "ir": 4}
COIL_ON = 0xFF00


class BadResponse(Exception):
    """The device answered, but not with a valid answer to the request; the message says how.
    `resync`: what arrived was not even a frame, so the connection is out of step (like after a
    timeout, it is closed and the device counts as not answering)."""

    def __init__(self, reason: str, resync: bool = False):
        super().__init__(reason)
        self.resync = resync


@dataclass(frozen=True, slots=True)
class Request:
    """What was asked: the function, where, how many, and (single writes) the value written."""

    function: int
    area: str
    address: int
    count: int = 1
    value: int | None = None
    registers: tuple[int, ...] = ()  # what a write of several registers (16) writes

    @property
    def what(self) -> str:
        where = f"{self.area}:{self.address}"
        return f"{where} x{self.count}" if self.count > 1 else where

    @property
    def expected_bytes(self) -> int:
        """Data bytes of a read answer."""
        return (self.count + 7) // 8 if self.function in (1, 2) else 2 * self.count


def _bytes(n: int) -> str:
    return "1 byte" if n == 1 else f"{n} bytes"


def _wrong_function(fc: int, req: Request) -> str:
    if fc & 0x80:
        return (
            f"device answered with an exception to function {fc & 0x7F}, "
            f"expected function {req.function} for {req.what}"
        )
    return f"device answered with function {fc}, expected {req.function} for {req.what}"


def _short_read(n: int, req: Request) -> str:
    return f"device answered {_bytes(n)}, expected {req.expected_bytes} for {req.what}"


def _echo_problem(req: Request, address: int, second: int | None) -> str | None:
    """A write answer echoes the address, and the value (single) or the count (multiple)."""
    if address != req.address:
        return f"device confirmed the write of {req.what} for address {address}"
    if second is None:
        return None
    if req.function == 5:
        if second != (COIL_ON if req.value else 0):
            on = "on" if req.value else "off"
            return f"device echoed 0x{second:04X} for the write of {on} to {req.what}"
    elif req.function == 6:
        if second != req.value:
            return f"device echoed value {second} for the write of {req.value} to {req.what}"
    elif second != req.count:
        return f"device confirmed {second} items for the write of {req.what}"
    return None


def frame_problem(pdu: bytes, req: Request) -> str | None:
    """What is wrong with a raw PDU (function code onward) as the answer to `req`, or None."""
    if not pdu:
        return f"malformed response for {req.what}: no function code"
    fc = pdu[0]
    if fc & 0x7F != req.function:
        return _wrong_function(fc, req)
    if fc & 0x80:
        if len(pdu) != 2:
            return f"malformed response for {req.what}: exception response of {_bytes(len(pdu))}, expected 2"
        return None
    if fc <= 4:
        if len(pdu) < 2:
            return f"malformed response for {req.what}: no byte count"
        n, got = pdu[1], len(pdu) - 2
        if got != n:
            return f"malformed response for {req.what}: byte count {n} but {_bytes(got)} of data"
        return _short_read(n, req) if n != req.expected_bytes else None
    if len(pdu) != 5:
        return (
            f"malformed response to the write of {req.what}: "
            f"{_bytes(len(pdu) - 1)} after the function code, expected 4"
        )
    return _echo_problem(req, int.from_bytes(pdu[1:3], "big"), int.from_bytes(pdu[3:5], "big"))


class Reply:
    """A Modbus answer parsed from its PDU (the TCP transport's own parser), with the
    attributes of pymodbus' responses that the driver and `response_problem` read.
    `register_bytes` is a register read's data as sent, which the decoder takes as it is."""

    __slots__ = ("function_code", "pdu")

    def __init__(self, pdu: bytes):
        self.function_code = pdu[0]
        self.pdu = pdu

    def isError(self) -> bool:
        return self.function_code & 0x80 != 0

    @property
    def exception_code(self) -> int:
        return self.pdu[1]

    @property
    def register_bytes(self) -> bytes:
        return self.pdu[2:]

    @property
    def registers(self) -> list[int]:
        pdu = self.pdu
        if self.function_code == 6:
            return [int.from_bytes(pdu[3:5], "big")]
        return list(struct.unpack_from(f">{(len(pdu) - 2) // 2}H", pdu, 2))

    @property
    def bits(self) -> list[bool]:
        pdu = self.pdu
        if self.function_code == 5:
            return [pdu[3:5] == b"\xff\x00"]
        return [bool(byte >> i & 1) for byte in pdu[2:] for i in range(8)]

    @property
    def address(self) -> int:
        return int.from_bytes(self.pdu[1:3], "big")

    @property
    def count(self) -> int:
        return int.from_bytes(self.pdu[3:5], "big")


def request_pdu(req: Request) -> bytes:
    """The PDU (function code onward) that asks `req`."""
    fc = req.function
    if fc <= 4:
        return struct.pack(">BHH", fc, req.address, req.count)
    if fc == 5:
        return struct.pack(">BHH", fc, req.address, COIL_ON if req.value else 0)
    if fc == 6:
        return struct.pack(">BHH", fc, req.address, req.value or 0)
    n = len(req.registers)
    return struct.pack(f">BHHB{n}H", fc, req.address, n, 2 * n, *req.registers)


def response_problem(resp: Any, req: Request) -> str | None:
    """What is wrong with a decoded pymodbus response as the answer to `req`, or None."""
    fc = resp.function_code
    if fc & 0x7F != req.function:
        return _wrong_function(fc, req)
    if resp.isError():
        return None
    if fc in (3, 4):
        n = 2 * len(resp.registers)
        return _short_read(n, req) if n != req.expected_bytes else None
    if fc in (1, 2):
        n = len(resp.bits) // 8
        return _short_read(n, req) if n != req.expected_bytes else None
    if fc == 5:
        on = bool(resp.bits and resp.bits[0])
        if resp.address == req.address and on != bool(req.value):
            return f"device echoed {'on' if on else 'off'} for the write of {req.what}"
        return _echo_problem(req, resp.address, None)
    if fc == 6:
        value = resp.registers[0] if resp.registers else None
        return _echo_problem(req, resp.address, value)
    return _echo_problem(req, resp.address, resp.count)
