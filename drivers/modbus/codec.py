"""Decoding register blocks into values, and encoding values into registers.

A read request's block is decoded with one precompiled `struct` format over the whole block
(pad bytes for the gaps) in the common case; only points that need a byte reorder, a bit or a
string take a second step. Byte orders name the order of the value's bytes A (most
significant) .. D on the wire: ABCD big-endian, DCBA little-endian, BADC bytes swapped within
each register, CDAB registers swapped.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..base import INT_LIMITS, fit_integer
from .address import BIT_AREAS, Area, width_of

_FMT = {
    "int16": "h",
    "uint16": "H",
    "bool": "H",
    "int32": "i",
    "uint32": "I",
    "float32": "f",
    "int64": "q",
    "uint64": "Q",
    "float64": "d",
}


@dataclass(frozen=True, slots=True)
class RegisterPoint:
    """A point as the Modbus driver sees it."""

    id: str
    area: Area
    offset: int
    type: str
    bit: int | None = None
    length: int | None = None
    byte_order: str = "ABCD"

    @property
    def width(self) -> int:
        return 1 if self.area in BIT_AREAS or self.bit is not None else width_of(self.type, self.length)


def _reorder_words(words: Sequence[int], byte_order: str) -> list[int]:
    """Registers as sent by the device -> registers in ABCD order (and back: it is an involution)."""
    out = list(words)
    if byte_order in ("DCBA", "CDAB"):
        out.reverse()
    if byte_order in ("DCBA", "BADC"):
        out = [((w & 0xFF) << 8) | (w >> 8) for w in out]
    return out


def _string_from(data: bytes) -> str:
    return data.split(b"\x00", 1)[0].rstrip(b" ").decode("ascii", "replace")


class BlockDecoder:
    """Decodes one read request's registers into the values of its points, in order."""

    def __init__(self, start: int, count: int, points: Sequence[RegisterPoint]):
        self.start = start
        self.count = count
        self.points = list(points)
        self.bits = bool(points) and points[0].area in BIT_AREAS
        if self.bits:
            self._bit_index = [p.offset - start for p in points]
            return
        self._block = struct.Struct(f">{count}H")
        # slots: non-overlapping fields of one big-endian format over the block
        fmt = ">"
        pos = 0
        slot_of: dict[tuple[int, str], int] = {}
        self._post: list[tuple[int, Callable[[object], object] | None]] = []
        self._extra: list[tuple[int, struct.Struct, int, Callable[[object], object] | None]] = []
        nslots = 0
        for idx, p in enumerate(points):
            rel = p.offset - start
            code, post = self._field(p)
            key = (rel, code)
            if key in slot_of:
                self._post.append((slot_of[key], post))
                continue
            if rel >= pos:
                if rel > pos:
                    fmt += f"{(rel - pos) * 2}x"
                fmt += code
                pos = rel + struct.calcsize(">" + code) // 2
                slot_of[key] = nslots
                self._post.append((nslots, post))
                nslots += 1
            else:  # overlaps an earlier slot: decode it on its own
                self._post.append((-1, post))
                self._extra.append((idx, struct.Struct(">" + code), rel * 2, post))
        self._fields = struct.Struct(fmt)
        self._simple = (
            not self._extra and all(post is None for _, post in self._post) and (len(self._post) == nslots)
        )

    @staticmethod
    def _field(p: RegisterPoint) -> tuple[str, Callable[[object], object] | None]:
        if p.type == "string":
            n = (p.length or 1) * 2
            if p.byte_order in ("BADC", "DCBA"):
                return f"{n}s", lambda raw: _string_from(bytes(_swap_pairs(raw)))
            return f"{n}s", _string_from  # type: ignore[return-value]
        if p.bit is not None:
            mask = 1 << p.bit
            return "H", lambda v: bool(v & mask)
        if p.type == "bool":
            return "H", bool
        code = _FMT[p.type]
        if struct.calcsize(code) > 2 and p.byte_order != "ABCD":
            n = struct.calcsize(code)
            words = struct.Struct(f">{n // 2}H")
            value = struct.Struct(">" + code)
            order = p.byte_order

            def reorder(raw: object) -> object:
                return value.unpack(words.pack(*_reorder_words(words.unpack(raw), order)))[0]  # type: ignore[arg-type]

            return f"{n}s", reorder
        return code, None

    def decode(self, data: Sequence[int] | Sequence[bool]) -> list[object]:
        if self.bits:
            return [bool(data[i]) for i in self._bit_index]
        return self.decode_bytes(self._block.pack(*data[: self.count]))

    def decode_bytes(self, buf: bytes) -> list[object]:
        """The registers as the device sent them (2 bytes each, big-endian)."""
        slots = self._fields.unpack_from(buf)
        if self._simple:
            return list(slots)
        out: list[object] = []
        extra = iter(self._extra)
        for slot, post in self._post:
            if slot < 0:
                _, st, off, post = next(extra)
                v = st.unpack_from(buf, off)[0]
            else:
                v = slots[slot]
            out.append(post(v) if post is not None else v)
        return out


def _swap_pairs(raw: bytes) -> bytearray:
    out = bytearray(raw)
    out[0::2], out[1::2] = raw[1::2], raw[0::2]
    return out


class EncodeError(ValueError):
    pass


def encode_value(p: RegisterPoint, value: object) -> list[int]:
    """A raw (unscaled) value -> the registers the device holds, in the point's byte order.

    Bits within a register are not encoded here: writing them needs the register's other bits.
    """
    if p.type == "string":
        n = (p.length or 1) * 2
        data = str(value).encode("ascii", "replace")
        if len(data) > n:
            raise EncodeError(f"'{value}' is longer than {n} characters")
        data = data.ljust(n, b"\x00")
        if p.byte_order in ("BADC", "DCBA"):
            data = bytes(_swap_pairs(data))
        return list(struct.unpack(f">{n // 2}H", data))
    if p.type == "bool":
        return [1 if value else 0]
    code = _FMT[p.type]
    if p.type in INT_LIMITS:
        try:
            value = fit_integer(p.type, value)
        except ValueError as exc:
            raise EncodeError(str(exc)) from None
    data = struct.pack(">" + code, value)
    words = list(struct.unpack(f">{len(data) // 2}H", data))
    return _reorder_words(words, p.byte_order) if len(words) > 1 else words
