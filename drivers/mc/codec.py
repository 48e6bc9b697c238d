"""The MC protocol's 3E frame, binary and ASCII, and MELSEC values in device memory.

Frame layout, commands and codes follow the MELSEC Communication Protocol Reference Manual
(SH-080008; the SLMP Reference Manual SH-080956ENG describes the same 3E frame):

    request   subheader 50 00 | network 00 | PC FF | I/O 03FF | station 00 | length | timer | data
    response  subheader D0 00 | route (5 bytes)                           | length | end code | data

Binary sends numbers low byte first; ASCII sends each number as upper-case hex digits, most
significant first (a u16 is 4 characters). Commands used here: 0401 batch read (subcommand
0000 words / 0001 bits; 0002 / 0003 with the iQ-R device layout), 0403 random read (words and
double words), 1401 batch write, 1402 random write in bit units, 0101 read CPU model name.

Pure functions of bytes: requests are built, replies checked, and anything that is not a valid
reply to the request in progress becomes `Malformed`, a refusal `EndCodeError`.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..base import INT_LIMITS, fit_integer
from .address import DEVICES, DeviceKind

if TYPE_CHECKING:
    from .config import McConnection

BATCH_READ = 0x0401
RANDOM_READ = 0x0403
BATCH_WRITE = 0x1401
RANDOM_WRITE = 0x1402
CPU_MODEL = 0x0101

HEADER = {"binary": 9, "ascii": 18}  # bytes up to and including the data length
MAX_BATCH_WORDS = 960  # 0401/1401 in word units (SH-080008, number of points per communication)
MAX_BATCH_BITS = {"binary": 7168, "ascii": 3584}  # 0401 in bit units through an Ethernet module
MAX_RANDOM = {False: 192, True: 96}  # 0403: word + double-word access points (Q/L, iQ-R subcommands)
MAX_RANDOM_BITS = {False: 188, True: 94}  # 1402 in bit units

# end codes (SH-080008 and the Ethernet modules' manuals, "error codes" appendix); the text
# is what a user reads in a point's reason
END_CODES = {
    0x4000: "the CPU reports a serial communication or other error (4000H: check the CPU's diagnostics)",
    0x4001: "the command is not supported by this CPU",
    0x4002: "the command is not supported by this CPU",
    0x4005: "the data volume is too large",
    0x4010: "the CPU is running and the command needs STOP",
    0x4013: "the CPU is running and the command needs STOP",
    0x4030: "the device is not available on this CPU",
    0x4031: "the device number is beyond the range set in the CPU's parameters",
    0x4080: "a request data error (check the device and its number)",
    0xC050: "the module is set to ASCII code and received data it cannot convert (set code: ascii, or the module to binary)",
    0xC051: "too many points for one request (word units)",
    0xC052: "too many points for one request (bit units)",
    0xC053: "too many points for one random request",
    0xC054: "too many points for one random request",
    0xC055: "the write data does not match the number of points",
    0xC056: "request exceeds the maximum address",
    0xC058: "the request data length does not match the data",
    0xC059: "the command or subcommand is wrong or not supported by this CPU",
    0xC05B: "the CPU cannot read or write this device",
    0xC05C: "the request is wrong (e.g. a bit-unit command on a word device)",
    0xC05F: "the request cannot be executed by this CPU",
    0xC060: "the request content is wrong (e.g. bit data other than 0 or 1)",
    0xC061: "the request data length does not match the number of data",
    0xC06F: "the code of the request (binary/ASCII) does not match the module's setting",
    0xC070: "the device memory cannot be extended for this station",
    0xC0B5: "the CPU cannot handle the data specified",
}


def end_code_reason(code: int) -> str:
    meaning = END_CODES.get(code)
    if meaning is None and (code >> 8) in (
        0x40,
        0x41,
        0x42,
        0x43,
        0x44,
        0x45,
        0x46,
        0x47,
        0x48,
        0x49,
        0x4A,
        0x4B,
    ):
        meaning = "an error detected by the CPU (see the CPU's error code list)"
    return f"{code:04X}: {meaning or 'refused by the PLC (see the module manual’s error codes)'}"


class Malformed(ValueError):
    """Bytes that are not a valid reply to the request in progress."""


_HEX = b"0123456789ABCDEFabcdef"


def _hex_only(data: bytes) -> None:
    """int(x, 16) also takes signs, spaces and underscores: ASCII data must be hex digits only."""
    if data.translate(None, _HEX):
        raise Malformed("ASCII data that is not hexadecimal digits")


@dataclass(frozen=True, slots=True)
class EndCodeError(Exception):
    """The PLC answered with a non-zero end code."""

    code: int

    def __str__(self) -> str:
        return end_code_reason(self.code)


# ---- request data: a list of fields rendered in either code ----

Field = tuple  # ("u8"|"u16"|"u32", int) | ("dev", DeviceKind, int) | ("words", list) | ("bits", list) | ("set", bool)


@dataclass(frozen=True, slots=True)
class Codec:
    """How one connection encodes: binary or ASCII, the Q/L or the iQ-R device layout, and the
    PLC family (for the ASCII radix of X/Y, octal on iQ-F)."""

    code: str = "binary"
    iqr: bool = False
    plc: str = "Q"
    timer: int = 0x0010  # monitoring timer, units of 250 ms

    @property
    def binary(self) -> bool:
        return self.code == "binary"

    def sub(self, bits: bool) -> int:
        return (2 if self.iqr else 0) | (1 if bits else 0)

    # -- rendering --

    def _render(self, fields: Sequence[Field]) -> bytes:
        if self.binary:
            out = bytearray()
            for f in fields:
                kind = f[0]
                if kind == "u8":
                    out.append(f[1])
                elif kind == "u16":
                    out += f[1].to_bytes(2, "little")
                elif kind == "u32":
                    out += f[1].to_bytes(4, "little")
                elif kind == "dev":
                    dk, num = f[1], f[2]
                    if self.iqr:
                        out += num.to_bytes(4, "little") + dk.code.to_bytes(2, "little")
                    else:
                        out += num.to_bytes(3, "little") + bytes([dk.code])
                elif kind == "words":
                    out += struct.pack(f"<{len(f[1])}H", *f[1])
                elif kind == "bits":
                    bits = f[1]
                    for i in range(0, len(bits), 2):
                        hi = 1 if bits[i] else 0
                        lo = 1 if i + 1 < len(bits) and bits[i + 1] else 0
                        out.append(hi << 4 | lo)
                elif kind == "set":
                    out += (
                        (b"\x01\x00" if f[1] else b"\x00\x00") if self.iqr else (b"\x01" if f[1] else b"\x00")
                    )
            return bytes(out)
        parts: list[str] = []
        for f in fields:
            kind = f[0]
            if kind == "u8":
                parts.append(f"{f[1]:02X}")
            elif kind == "u16":
                parts.append(f"{f[1]:04X}")
            elif kind == "u32":
                parts.append(f"{f[1]:08X}")
            elif kind == "dev":
                parts.append(self.ascii_device(f[1], f[2]))
            elif kind == "words":
                parts.append("".join(f"{w:04X}" for w in f[1]))
            elif kind == "bits":
                parts.append("".join("1" if b else "0" for b in f[1]))
            elif kind == "set":
                parts.append(("0001" if f[1] else "0000") if self.iqr else ("01" if f[1] else "00"))
        return "".join(parts).encode("ascii")

    def ascii_device(self, dk: DeviceKind, number: int) -> str:
        radix = ascii_radix(dk, self.plc)
        width = 8 if self.iqr else 6
        digits = {8: f"{number:0{width}o}", 10: f"{number:0{width}d}", 16: f"{number:0{width}X}"}[radix]
        return (dk.ascii_iqr() if self.iqr else dk.ascii) + digits

    def frame(self, command: int, subcommand: int, fields: Sequence[Field]) -> bytes:
        """A whole 3E request (to the connected station: network 0, PC FF, I/O 03FF, station 0)."""
        data = self._render([("u16", command), ("u16", subcommand), *fields])
        if self.binary:
            return b"\x50\x00\x00\xff\xff\x03\x00" + struct.pack("<HH", len(data) + 2, self.timer) + data
        return f"500000FF03FF00{len(data) + 4:04X}{self.timer:04X}".encode("ascii") + data

    # -- commands --

    def batch_read(self, dk: DeviceKind, number: int, count: int, bits: bool = False) -> bytes:
        return self.frame(BATCH_READ, self.sub(bits), [("dev", dk, number), ("u16", count)])

    def random_read(
        self, words: Sequence[tuple[DeviceKind, int]], dwords: Sequence[tuple[DeviceKind, int]]
    ) -> bytes:
        fields: list[Field] = [("u8", len(words)), ("u8", len(dwords))]
        fields += [("dev", dk, n) for dk, n in words]
        fields += [("dev", dk, n) for dk, n in dwords]
        return self.frame(RANDOM_READ, self.sub(False), fields)

    def batch_write_words(self, dk: DeviceKind, number: int, words: Sequence[int]) -> bytes:
        return self.frame(
            BATCH_WRITE, self.sub(False), [("dev", dk, number), ("u16", len(words)), ("words", list(words))]
        )

    def batch_write_bits(self, dk: DeviceKind, number: int, bits: Sequence[bool]) -> bytes:
        return self.frame(
            BATCH_WRITE, self.sub(True), [("dev", dk, number), ("u16", len(bits)), ("bits", list(bits))]
        )

    def random_write_bits(self, points: Sequence[tuple[DeviceKind, int, bool]]) -> bytes:
        fields: list[Field] = [("u8", len(points))]
        for dk, n, on in points:
            fields += [("dev", dk, n), ("set", on)]
        return self.frame(RANDOM_WRITE, self.sub(True), fields)

    def cpu_model(self) -> bytes:
        return self.frame(CPU_MODEL, 0, [])

    # -- replies --

    def body_length(self, header: bytes) -> int:
        """The bytes that follow a reply's header (its data length field)."""
        if self.binary:
            if header[:2] != b"\xd0\x00":
                raise Malformed(_not_a_reply(header, self.code))
            return int.from_bytes(header[7:9], "little")
        if header[:4] != b"D000":
            raise Malformed(_not_a_reply(header, self.code))
        _hex_only(header[14:18])
        try:
            return int(header[14:18], 16)
        except ValueError:
            raise Malformed(f"reply length {header[14:18]!r} is not hexadecimal") from None

    def payload(self, body: bytes) -> bytes:
        """The response data of a reply's body (after the header); EndCodeError if refused."""
        n = 2 if self.binary else 4
        if len(body) < n:
            raise Malformed(f"a reply of {len(body)} bytes has no end code")
        if self.binary:
            code = int.from_bytes(body[:2], "little")
        else:
            _hex_only(body[:4])
            try:
                code = int(body[:4], 16)
            except ValueError:
                raise Malformed(f"end code {body[:4]!r} is not hexadecimal") from None
        if code:
            raise EndCodeError(code)
        return body[n:]

    def words(self, data: bytes, count: int) -> list[int]:
        if self.binary:
            if len(data) != 2 * count:
                raise Malformed(f"{len(data)} data bytes where {count} words were asked for")
            return list(struct.unpack(f"<{count}H", data))
        if len(data) != 4 * count:
            raise Malformed(f"{len(data)} data characters where {count} words were asked for")
        _hex_only(data)
        try:
            return [int(data[i : i + 4], 16) for i in range(0, len(data), 4)]
        except ValueError:
            raise Malformed("word data that is not hexadecimal") from None

    def random_words(self, data: bytes, m: int, n: int) -> tuple[list[int], list[int]]:
        """The m words then n double words of a random read."""
        if self.binary:
            if len(data) != 2 * m + 4 * n:
                raise Malformed(f"{len(data)} data bytes for {m} words and {n} double words")
            got = struct.unpack(f"<{m}H{n}I", data)
            return list(got[:m]), list(got[m:])
        if len(data) != 4 * m + 8 * n:
            raise Malformed(f"{len(data)} data characters for {m} words and {n} double words")
        _hex_only(data)
        try:
            w = [int(data[i : i + 4], 16) for i in range(0, 4 * m, 4)]
            d = [int(data[i : i + 8], 16) for i in range(4 * m, len(data), 8)]
        except ValueError:
            raise Malformed("word data that is not hexadecimal") from None
        return w, d

    def bits(self, data: bytes, count: int) -> list[bool]:
        if self.binary:
            if len(data) != (count + 1) // 2:
                raise Malformed(f"{len(data)} data bytes for {count} bits")
            out: list[bool] = []
            for i in range(count):
                nib = (data[i // 2] >> (0 if i & 1 else 4)) & 0x0F
                if nib > 1:
                    raise Malformed(f"bit data 0x{nib:X} is neither 0 nor 1")
                out.append(bool(nib))
            return out
        if len(data) != count or any(c not in b"01" for c in data):
            raise Malformed(f"{len(data)} characters where {count} bits (0/1) were asked for")
        return [c == 0x31 for c in data]

    def model_name(self, data: bytes) -> tuple[str, int]:
        """The CPU model name and model code of a 0101 reply."""
        if len(data) != (18 if self.binary else 20):
            raise Malformed(f"a CPU model reply of {len(data)} bytes")
        name = data[:16].decode("ascii", "replace").rstrip(" \x00")
        if not self.binary:
            _hex_only(data[16:20])
        code = int.from_bytes(data[16:18], "little") if self.binary else int(data[16:20], 16)
        return name, code


def codec_for(c: McConnection) -> Codec:
    """The codec of a configured connection; the monitoring timer (250 ms units) follows the
    timeout, within the manual's recommended 0.25-10 s for the connected station."""
    timer = max(1, min(0x0028, int(c.timeout * 4 + 0.999)))
    return Codec(c.code, c.iqr(), c.plc, timer)


def ascii_radix(dk: DeviceKind, plc: str) -> int:
    """The radix of device numbers in ASCII requests: the manual's device table gives X, Y, B, W
    and ZR in hexadecimal (X/Y octal on iQ-F, its SLMP manual), the others decimal."""
    if dk.name in ("X", "Y"):
        return 8 if plc == "iQ-F" else 16
    return 16 if dk.name in ("B", "W", "ZR") else 10


def _not_a_reply(header: bytes, code: str) -> str:
    if code == "binary" and header[:4] == b"D000":
        return "the reply is ASCII-coded ('D000…'): the module's open setting uses ASCII: set code: ascii"
    if code == "ascii" and header[:2] == b"\xd0\x00":
        return "the reply is binary-coded: the module's open setting uses binary: set code: binary"
    return f"not a 3E reply (starts {header[:4].hex(' ')})"


def parse_request(data: bytes) -> tuple[str, int, int, bytes]:
    """(code, command, subcommand, the rest) of a whole request: for the simulator and tests."""
    if data[:2] == b"\x50\x00":
        if len(data) < 15:
            raise Malformed("a short request")
        cmd, sub = struct.unpack_from("<HH", data, 11)
        return "binary", cmd, sub, data[15:]
    if data[:4] == b"5000":
        try:
            cmd, sub = int(data[22:26], 16), int(data[26:30], 16)
        except ValueError:
            raise Malformed("a request with a command that is not hexadecimal") from None
        return "ascii", cmd, sub, data[30:]
    raise Malformed("not a 3E request")


# ---- values in device memory ----


@dataclass(frozen=True, slots=True)
class McPoint:
    """A point as MELSEC device memory: its device, head number, and words or bit."""

    id: str
    device: str
    number: int
    type: str
    bit: int | None = None  # bit of a word
    length: int | None = None  # string characters
    byte_order: str = "CDAB"

    @property
    def kind(self) -> DeviceKind:
        return DEVICES[self.device]

    @property
    def words(self) -> int:
        """Words the point occupies (a bit device's point: one bit)."""
        if self.kind.bit or self.bit is not None or self.type == "bool":
            return 1
        if self.type == "string":
            return ((self.length or 0) + 1) // 2
        return {1: 1, 2: 1, 4: 2, 8: 4}[struct.calcsize(_FMT[self.type])]


_FMT = {
    "int8": "b",
    "uint8": "B",
    "int16": "h",
    "uint16": "H",
    "int32": "i",
    "uint32": "I",
    "float32": "f",
    "int64": "q",
    "uint64": "Q",
    "float64": "d",
}


def to_abcd(words: Sequence[int], byte_order: str) -> list[int]:
    """Words as the device holds them -> most significant word first, each word's high byte
    first (an involution: also the way back). CDAB: MELSEC's own low-word-first order."""
    out = list(words)
    if byte_order in ("DCBA", "CDAB"):
        out.reverse()
    if byte_order in ("DCBA", "BADC"):
        out = [((w & 0xFF) << 8) | (w >> 8) for w in out]
    return out


def decode_words(p: McPoint, words: Sequence[int]) -> object:
    """A word point's raw value from its words (device order)."""
    t = p.type
    if p.bit is not None:
        return bool(words[0] >> p.bit & 1)
    if t == "string":
        raw = b"".join(struct.pack("<H", w) for w in words)[: p.length or 0]
        return raw.split(b"\x00", 1)[0].decode("latin-1")
    if t in ("int16", "uint16"):
        w = words[0]
        return w - 0x10000 if t == "int16" and w & 0x8000 else w
    if t in ("int8", "uint8"):
        b = words[0] & 0xFF
        return b - 0x100 if t == "int8" and b & 0x80 else b
    ordered = to_abcd(words, p.byte_order)
    return struct.unpack(">" + _FMT[t], struct.pack(f">{len(ordered)}H", *ordered))[0]


class EncodeError(ValueError):
    pass


def encode_words(p: McPoint, value: object) -> list[int]:
    """A raw (unscaled) value -> the words the device holds (device order)."""
    t = p.type
    if t == "string":
        text = str(value)
        try:
            data = text.encode("latin-1")
        except UnicodeEncodeError:
            raise EncodeError(f"'{text}' has characters a MELSEC string cannot hold (Latin-1 only)") from None
        n = p.length or 0
        if len(data) > n:
            raise EncodeError(f"'{text}' is longer than {n} characters")
        data = data.ljust(2 * p.words, b"\x00")
        return list(struct.unpack(f"<{p.words}H", data))
    if t in INT_LIMITS:
        try:
            value = fit_integer(t, value)
        except ValueError as exc:
            raise EncodeError(str(exc)) from None
    elif not isinstance(value, int | float) or isinstance(value, bool):
        raise EncodeError(f"{value!r} is not a number")
    try:
        data = struct.pack(">" + _FMT[t], value)
    except (struct.error, OverflowError) as exc:
        raise EncodeError(f"{value} does not fit {t}: {exc}") from None
    if len(data) == 1:
        return [data[0]]
    ordered = list(struct.unpack(f">{len(data) // 2}H", data))
    return to_abcd(ordered, p.byte_order) if len(ordered) > 1 else ordered
