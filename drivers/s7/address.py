"""S7 absolute addresses as TIA Portal and STEP 7 show them, parsed and checked against a type.

    DB10.DBX0.0   bit 0 of byte 0 of DB10          I0.3 / E0.3   input bit
    DB10.DBB12    byte 12 (or wider: the type      QB1 / AB1     output byte
                  decides the width)               MW20          memory word (16 bits)
    DB10.DBW2     word (16 bits) at byte 2         MD24          memory double word (32 bits)
    DB10.DBD4     double word (32 bits) at byte 4

A leading `%` (TIA Portal's marker of an absolute address) and lower case are accepted. German
mnemonics E (Eingang) and A (Ausgang) are I and Q.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# S7 area codes on the wire (S7comm "area" byte)
AREA_CODES = {"I": 0x81, "Q": 0x82, "M": 0x83, "DB": 0x84}
AREA_NAMES = {"I": "input", "Q": "output", "M": "memory (marker)", "DB": "data block"}
WIDTH_BITS = {"X": 1, "B": 8, "W": 16, "D": 32}
MAX_BYTE = 2**21 - 1  # the S7 address field holds a bit address in 24 bits
# fixed byte widths of the dictionary's types
TYPE_BYTES = {
    "int8": 1,
    "uint8": 1,
    "int16": 2,
    "uint16": 2,
    "int32": 4,
    "uint32": 4,
    "float32": 4,
    "int64": 8,
    "uint64": 8,
    "float64": 8,
}
# what S7 calls each, for messages
S7_TYPE_NAMES = {
    "bool": "BOOL",
    "int8": "SINT",
    "uint8": "BYTE/USINT",
    "int16": "INT",
    "uint16": "WORD/UINT",
    "int32": "DINT",
    "uint32": "DWORD/UDINT",
    "float32": "REAL",
    "int64": "LINT",
    "uint64": "LWORD/ULINT",
    "float64": "LREAL",
}

_DB = re.compile(r"^DB(\d+)\.DB([XBWD])(\d+)(?:\.(\d+))?$")
_IQM = re.compile(r"^([IQMEA])([BWD]?)(\d+)(?:\.(\d+))?$")


class AddressError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class S7Address:
    area: str  # I | Q | M | DB
    db: int  # the DB number; 0 for I, Q, M
    byte: int
    width: str  # X | B | W | D, as written
    bit: int | None = None  # 0-7 for X

    def __str__(self) -> str:
        if self.area == "DB":
            text = f"DB{self.db}.DB{self.width}{self.byte}"
        else:
            text = f"{self.area}{'' if self.width == 'X' else self.width}{self.byte}"
        return f"{text}.{self.bit}" if self.bit is not None else text

    @property
    def region(self) -> tuple[int, int]:
        """(area code, DB number): what one S7 read item addresses."""
        return AREA_CODES[self.area], self.db


def parse_address(text: str) -> S7Address:
    raw = text.strip()
    s = raw.upper().lstrip("%")
    if not s:
        raise AddressError("an empty address: write e.g. DB10.DBW2, MW20 or I0.3")
    m = _DB.match(s)
    if m:
        db, width, byte, bit = int(m[1]), m[2], int(m[3]), m[4]
        if not 1 <= db <= 65535:
            raise AddressError(f"'{raw}': DB numbers run from 1 to 65535")
        return _finish(raw, "DB", db, width, byte, bit)
    m = _IQM.match(s)
    if m:
        area = {"E": "I", "A": "Q"}.get(m[1], m[1])
        width = m[2] or "X"
        return _finish(raw, area, 0, width, int(m[3]), m[4])
    raise AddressError(_hint(raw, s))


def _finish(raw: str, area: str, db: int, width: str, byte: int, bit: str | None) -> S7Address:
    if byte > MAX_BYTE:
        raise AddressError(f"'{raw}': byte {byte} is beyond the largest S7 address ({MAX_BYTE})")
    if width == "X":
        if bit is None:
            example = f"DB{db}.DBX{byte}.0" if area == "DB" else f"{area}{byte}.0"
            raise AddressError(f"'{raw}': a bit address needs its bit number, e.g. {example}")
        if int(bit) > 7:
            raise AddressError(f"'{raw}': bit {bit} does not exist: a byte has bits 0 to 7")
        return S7Address(area, db, byte, "X", int(bit))
    if bit is not None:
        where = f"DB{db}.DBX{byte}.{bit}" if area == "DB" else f"{area}{byte}.{bit}"
        raise AddressError(f"'{raw}': a {_width_name(width)} address has no bit number; a bit is {where}")
    return S7Address(area, db, byte, width)


def _hint(raw: str, s: str) -> str:
    if re.match(r"^DB\d+\.?$", s):
        return (
            f"'{raw}': a DB needs an address inside it, e.g. {s.rstrip('.')}.DBW0 or {s.rstrip('.')}.DBX0.0"
        )
    m = re.match(r"^DB(\d+)\.([XBWD])(\d+(?:\.\d+)?)$", s)
    if m:
        return f"'{raw}': inside a DB the width is written DB{m[2]}: DB{m[1]}.DB{m[2]}{m[3]}"
    if re.match(r"^DB\d+\.(DBX|X)?\d+\.\d+$", s) or re.match(r"^DB\d+\.\d+", s):
        return f"'{raw}': write the width inside the DB as TIA Portal does: DB<n>.DBX<byte>.<bit>, DB<n>.DB{{B,W,D}}<byte>"
    m = re.match(r"^V([BWD]?)(\d+)(\.\d)?$", s)
    if m:
        same = f"DB1.DB{m[1] or 'X'}{m[2]}{m[3] or ''}"
        return f"'{raw}': S7-200 SMART's V memory is DB1 over the network: write {same}"
    if re.match(r"^(T|C|Z)\d", s):
        return f"'{raw}': timers and counters are not supported; copy them into a DB or memory word in the program"
    if re.match(r"^(PI|PQ|PE|PA|P)", s):
        return f"'{raw}': peripheral (P) addresses are not read; use the process image (I/Q)"
    return (
        f"'{raw}' is not an S7 address: expected DB<n>.DBX<byte>.<bit>, DB<n>.DB{{B,W,D}}<byte>, "
        "{I,Q,M}<byte>.<bit> or {I,Q,M}{B,W,D}<byte>"
    )


def _width_name(width: str) -> str:
    return {"B": "byte", "W": "word", "D": "double-word"}.get(width, width)


def type_problem(addr: S7Address, type_: str, format_: str | None) -> str | None:
    """Why an address cannot hold a point of this type (None: it can)."""
    if type_ == "bool":
        if addr.width != "X":
            return f"a bool needs a bit address ({_bit_form(addr)}), not the {_width_name(addr.width)} {addr}"
        return None
    if addr.width == "X":
        return f"{addr} is one bit: {_a(type_)} needs a byte address such as {_with_width(addr, 'B')}"
    if type_ == "string":
        if addr.width != "B":
            return f"a string starts at a byte address ({_with_width(addr, 'B')}): its length sets the width, not {addr.width}"
        return None
    size = TYPE_BYTES[type_]
    if addr.width == "B":
        return None  # the byte form takes any width: the type decides
    bits = WIDTH_BITS[addr.width]
    if bits != size * 8:
        fits = {1: "B", 2: "W", 4: "D"}.get(size)
        better = _with_width(addr, fits) if fits else _with_width(addr, "B")
        return f"{addr} is {bits} bits but {type_} ({S7_TYPE_NAMES[type_]}) is {size * 8}: write {better}" + (
            "" if fits else " (64-bit values take the byte form; the type sets the width)"
        )
    return None


def _with_width(addr: S7Address, width: str) -> str:
    return str(S7Address(addr.area, addr.db, addr.byte, width))


def _bit_form(addr: S7Address) -> str:
    return str(S7Address(addr.area, addr.db, addr.byte, "X", 0))


def _a(noun: str) -> str:
    return ("an " if noun[0] in "aeiou" else "a ") + noun
