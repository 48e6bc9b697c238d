"""S7 values in PLC memory: big-endian numbers, bits, STRING/WSTRING/CHAR, DTL, DATE_AND_TIME.

Decoding works on one read range at a time: `RangeDecoder` unpacks every numeric point of a
range with one precompiled struct (gaps skipped), and bits and strings one by one. Encoding
gives the bytes a write sends (bits are written alone, as single-bit writes, never here).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..base import INT_LIMITS, PointError, fit_integer
from .address import TYPE_BYTES

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
STRING_FORMATS = ("STRING", "WSTRING", "CHAR", "DTL", "DATE_AND_TIME")
READ_ONLY_FORMATS = ("DTL", "DATE_AND_TIME")


@dataclass(frozen=True, slots=True)
class S7Point:
    """A point as S7 memory: where it is and how many bytes it takes."""

    id: str
    area: int  # S7 area code: 0x81 I, 0x82 Q, 0x83 M, 0x84 DB
    db: int
    byte: int
    type: str
    bit: int | None = None
    format: str | None = None  # for strings
    length: int | None = None  # characters, for STRING/WSTRING/CHAR

    @property
    def size(self) -> int:
        """Bytes the point occupies."""
        if self.bit is not None or self.type == "bool":
            return 1
        if self.type != "string":
            return TYPE_BYTES[self.type]
        n = self.length or 0
        return {
            "STRING": n + 2,
            "WSTRING": 2 * n + 4,
            "CHAR": n,
            "DTL": 12,
            "DATE_AND_TIME": 8,
        }[self.format or "STRING"]


def string_size(format_: str, length: int | None) -> int:
    return S7Point("", 0x84, 1, 0, "string", None, format_, length).size


# ---- decoding ----


def _s7_string(raw: bytes) -> object:
    declared, current = raw[0], raw[1]
    room = len(raw) - 2
    if current > room or current > declared:
        return PointError(
            f"malformed STRING: current length {current} exceeds its maximum {min(declared, room)}"
        )
    return raw[2 : 2 + current].decode("latin-1")


def _s7_wstring(raw: bytes) -> object:
    declared, current = struct.unpack_from(">HH", raw)
    room = (len(raw) - 4) // 2
    if current > room or current > declared:
        return PointError(
            f"malformed WSTRING: current length {current} exceeds its maximum {min(declared, room)}"
        )
    return raw[4 : 4 + 2 * current].decode("utf-16-be", "replace")


def _chars(raw: bytes) -> object:
    return raw.split(b"\x00", 1)[0].rstrip(b" ").decode("latin-1")


def _dtl(raw: bytes) -> object:
    year, month, day, _weekday, hour, minute, second, ns = struct.unpack(">HBBBBBBI", raw)
    valid = 1970 <= year <= 2554 and 1 <= month <= 12 and 1 <= day <= 31
    if not (valid and hour < 24 and minute < 60 and second < 60 and ns < 10**9):
        return PointError(f"not a valid DTL: {raw.hex(' ')}")
    text = f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}"
    return text + (f".{ns // 1000:06d}" if ns else "")


def _bcd(b: int) -> int:
    hi, lo = b >> 4, b & 0x0F
    if hi > 9 or lo > 9:
        raise ValueError
    return hi * 10 + lo


def _date_and_time(raw: bytes) -> object:
    try:
        yy, month, day, hour, minute, second = (_bcd(b) for b in raw[:6])
        ms = _bcd(raw[6]) * 10 + _bcd(raw[7] & 0xF0) // 10  # 3 BCD digits; the 4th nibble is the weekday
    except ValueError:
        return PointError(f"not a valid DATE_AND_TIME (BCD): {raw.hex(' ')}")
    year = 1900 + yy if yy >= 90 else 2000 + yy
    if not (1 <= month <= 12 and 1 <= day <= 31 and hour < 24 and minute < 60 and second < 60):
        return PointError(f"not a valid DATE_AND_TIME: {raw.hex(' ')}")
    text = f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}"
    return text + (f".{ms:03d}" if ms else "")


_STRING_DECODERS: dict[str, Callable[[bytes], object]] = {
    "STRING": _s7_string,
    "WSTRING": _s7_wstring,
    "CHAR": _chars,
    "DTL": _dtl,
    "DATE_AND_TIME": _date_and_time,
}


class RangeDecoder:
    """The values of the points inside one read range (a contiguous run of bytes of one area),
    in the order given. Numbers that do not overlap each other come out of one struct."""

    def __init__(self, start: int, size: int, points: Sequence[S7Point]):
        self.start, self.size = start, size
        self.points = list(points)
        fmt = ">"
        pos = 0
        nslots = 0
        self._slots: list[int] = []  # per point: its slot in the struct, or -1
        self._others: list[tuple[int, Callable[[bytes], object]]] = []  # (point index, decoder)
        for idx, p in enumerate(self.points):
            rel = p.byte - start
            if p.type not in _FMT or rel < pos:
                self._slots.append(-1)
                self._others.append((idx, self._single(p, rel)))
                continue
            if rel > pos:
                fmt += f"{rel - pos}x"
            fmt += _FMT[p.type]
            pos = rel + TYPE_BYTES[p.type]
            self._slots.append(nslots)
            nslots += 1
        self._struct = struct.Struct(fmt)
        self._simple = not self._others

    @staticmethod
    def _single(p: S7Point, rel: int) -> Callable[[bytes], object]:
        if p.bit is not None:
            mask = 1 << p.bit

            def bit(buf: bytes) -> object:
                return bool(buf[rel] & mask)

            return bit
        if p.type in _FMT:
            st = struct.Struct(">" + _FMT[p.type])

            def number(buf: bytes) -> object:
                return st.unpack_from(buf, rel)[0]

            return number
        size = p.size
        inner = _STRING_DECODERS[p.format or "STRING"]

        def text(buf: bytes) -> object:
            return inner(bytes(buf[rel : rel + size]))

        return text

    def decode(self, buf: bytes) -> list[object]:
        """`buf` holds exactly the range's bytes."""
        if len(buf) != self.size:
            raise ValueError(f"{len(buf)} bytes for a range of {self.size}")
        slots = self._struct.unpack_from(buf)
        if self._simple:
            return list(slots)
        out: list[object] = [None] * len(self.points)
        for i, s in enumerate(self._slots):
            if s >= 0:
                out[i] = slots[s]
        for i, fn in self._others:
            out[i] = fn(buf)
        return out


# ---- encoding ----


class EncodeError(ValueError):
    pass


def encode_value(p: S7Point, value: object) -> bytes:
    """A raw (unscaled) value -> the bytes the PLC holds at the point's address."""
    if p.type == "string":
        text = str(value)
        fmt = p.format or "STRING"
        n = p.length or 0
        if fmt in READ_ONLY_FORMATS:
            raise EncodeError(f"{fmt} points are read-only")
        if fmt == "WSTRING":
            data = text.encode("utf-16-be")
            if len(data) // 2 > n:
                raise EncodeError(f"'{text}' is longer than WSTRING[{n}]")
            return struct.pack(">HH", n, len(data) // 2) + data.ljust(2 * n, b"\x00")
        try:
            data = text.encode("latin-1")
        except UnicodeEncodeError:
            raise EncodeError(
                f"'{text}' has characters an S7 {fmt} cannot hold (Latin-1 only; use WSTRING)"
            ) from None
        if len(data) > n:
            raise EncodeError(
                f"'{text}' is longer than {fmt}[{n}]"
                if fmt == "STRING"
                else f"'{text}' is longer than {n} characters"
            )
        if fmt == "CHAR":
            return data.ljust(n, b"\x00")
        return bytes([n, len(data)]) + data.ljust(n, b"\x00")
    if p.type == "bool":
        return b"\x01" if value else b"\x00"
    if p.type in INT_LIMITS:
        try:
            value = fit_integer(p.type, value)
        except ValueError as exc:
            raise EncodeError(str(exc)) from None
    elif not isinstance(value, int | float):
        raise EncodeError(f"{value!r} is not a number")
    try:
        return struct.pack(">" + _FMT[p.type], value)
    except (struct.error, OverflowError) as exc:
        raise EncodeError(f"{value} does not fit {p.type}: {exc}") from None
