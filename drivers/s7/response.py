"""What an S7 CPU answers, checked and named: the S7comm header of a reply, each item of a
multi-variable read, the acknowledgement of a write. Pure functions of the bytes received, so
that whatever a device sends (fuzzed in the tests) ends as a value, a named refusal or a
`Malformed` reason, never an exception of another kind.

Return codes and header errors are named by what the user can do about them; the S7-1200/1500
hints are the two settings every S7 integrator meets ("Permit access with PUT/GET" and
"Optimized block access"), as the snap7 documentation and its users' reports describe them
(gijzelaerr/python-snap7#131, #361, #454; mathiask88/node-snap7#44).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

ACK_DATA = 0x03
READ_VAR = 0x04
WRITE_VAR = 0x05
SUCCESS = 0xFF

PUT_GET_HINT = (
    "on S7-1200/1500: PUT/GET access not permitted (TIA Portal: CPU properties > Protection & Security > "
    "Connection mechanisms > 'Permit access with PUT/GET communication from remote partner', then download)"
)

# item return codes of a read or write (S7comm data item "return code")
ITEM_ERRORS = {
    0x01: "hardware fault",
    0x03: "access to the object not allowed",
    0x05: "address out of range",
    0x06: "data type not supported",
    0x07: "data type inconsistent",
    0x0A: "object does not exist",
}

# header errors (error class << 8 | error code) worth a plain name
HEADER_ERRORS = {
    0x8104: "function not available",
    0x8404: "the CPU cannot perform the function",
    0x8500: "PDU size error: the request does not fit the negotiated PDU",
    0x8304: "the CPU is busy or not in a state to answer",
    0x8702: "invalid request structure",
}


class Malformed(ValueError):
    """Bytes that are not a valid answer to the request in progress."""


@dataclass(frozen=True, slots=True)
class Refused(Exception):
    """The CPU answered, refusing the whole request (an error in the reply's header)."""

    code: int

    def __str__(self) -> str:
        return header_reason(self.code)


def header_reason(code: int) -> str:
    name = HEADER_ERRORS.get(code, "request refused")
    text = f"S7 error 0x{code:04X} ({name})"
    return f"{text}; {PUT_GET_HINT}" if code == 0x8104 else text


def item_reason(code: int, area: int, db: int) -> str:
    """A refused item's reason, with the usual cause on S7-1200/1500 for DBs."""
    name = ITEM_ERRORS.get(code, "refused")
    text = f"S7 return code 0x{code:02X} ({name})"
    if area == 0x84 and code in (0x05, 0x0A):
        text += (
            f": DB{db} is shorter than that or does not exist; on S7-1200/1500, optimized block access on "
            f"DB{db} (clear 'Optimized block access' in the DB's properties, then download)"
        )
    elif code == 0x03:
        text += f"; {PUT_GET_HINT}, or the block is know-how protected"
    elif code in (0x05, 0x0A):
        text += ": the CPU's area is smaller than the address"
    return text


def _header(pdu: bytes, sequence: int, function: int) -> tuple[int, int, int]:
    """(param length, data length, offset of the parameters) of an ACK_DATA reply to our
    request `sequence`; raises Refused for a header error, Malformed for anything else."""
    if len(pdu) < 12:
        raise Malformed(f"an S7 reply of {len(pdu)} bytes, shorter than its header")
    proto, kind, _, seq, plen, dlen, err_class, err_code = struct.unpack_from(">BBHHHHBB", pdu)
    if proto != 0x32:
        raise Malformed(f"not an S7 reply (protocol id 0x{proto:02X})")
    if seq != sequence:
        raise Malformed(f"a reply to request {seq}, expected {sequence}")
    if kind not in (0x02, ACK_DATA):
        raise Malformed(f"an S7 PDU of type {kind}, not a reply")
    if err_class or err_code:
        raise Refused(err_class << 8 | err_code)
    if kind != ACK_DATA:
        raise Malformed("an acknowledgement without data where a reply was due")
    if 12 + plen + dlen != len(pdu):
        raise Malformed(
            f"S7 reply lengths (parameters {plen}, data {dlen}) disagree with its {len(pdu)} bytes"
        )
    if plen < 2 or pdu[12] != function:
        raise Malformed(f"a reply to function 0x{pdu[12] if plen else 0:02X}, expected 0x{function:02X}")
    return plen, dlen, 12


def read_items(pdu: bytes, sequence: int, sizes: list[int]) -> list[bytes | int]:
    """The items of a read reply: each item's bytes, or its return code when refused."""
    plen, dlen, off = _header(pdu, sequence, READ_VAR)
    count = pdu[off + 1]
    if count != len(sizes):
        raise Malformed(f"{count} items in the reply, {len(sizes)} asked for")
    pos = off + plen
    end = pos + dlen
    out: list[bytes | int] = []
    for n, want in enumerate(sizes):
        if pos + 4 > end:
            raise Malformed(f"the reply ends before item {n + 1} of {len(sizes)}")
        code, transport, length = struct.unpack_from(">BBH", pdu, pos)
        pos += 4
        if code != SUCCESS:
            out.append(code)
            if length:
                raise Malformed(f"refused item {n + 1} carries data")
            continue
        size = (
            length if transport in (0x07, 0x09) else (length + 7) // 8 if transport == 0x03 else length // 8
        )
        if transport not in (0x03, 0x04, 0x05, 0x07, 0x09) or (transport in (0x04, 0x05) and length % 8):
            raise Malformed(f"item {n + 1}: transport size 0x{transport:02X} with length {length}")
        if size != want:
            raise Malformed(f"item {n + 1}: {size} bytes where {want} were asked for")
        if pos + size > end:
            raise Malformed(f"item {n + 1} is cut short")
        out.append(pdu[pos : pos + size])
        pos += size
        if size & 1 and n < len(sizes) - 1:
            pos += 1  # fill byte
    if pos != end:
        raise Malformed(f"{end - pos} bytes after the last item")
    return out


def write_result(pdu: bytes, sequence: int) -> int:
    """The return code of a one-item write (0xFF: written)."""
    plen, dlen, off = _header(pdu, sequence, WRITE_VAR)
    if pdu[off + 1] != 1 or dlen != 1:
        raise Malformed(f"a write acknowledgement of {dlen} bytes for {pdu[off + 1]} items, expected one")
    return pdu[off + plen]


def sequence_of(request: bytes) -> int:
    """The PDU reference of a request that python-snap7 built."""
    return int(struct.unpack_from(">H", request, 4)[0])
