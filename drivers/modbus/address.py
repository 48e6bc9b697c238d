"""Modbus point addresses: `hr:N`, `ir:N`, `co:N`, `di:N`, `hr:N.B`, and the Modicon forms.

Offsets are 0-based protocol addresses. Modicon references are 1-based with the area as the
leading digit (0xxxx coils, 1xxxx discrete inputs, 3xxxx input registers, 4xxxx holding
registers), in 5-digit (up to 9999) or 6-digit (up to 65536) form: 40101 == hr:100.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Area = Literal["co", "di", "ir", "hr"]
AREAS: tuple[Area, ...] = ("co", "di", "ir", "hr")
BIT_AREAS = frozenset({"co", "di"})
READ_ONLY_AREAS = frozenset({"di", "ir"})
AREA_NAMES = {
    "co": "coil",
    "di": "discrete input",
    "ir": "input register",
    "hr": "holding register",
}
_MODICON_AREA: dict[str, Area] = {"0": "co", "1": "di", "3": "ir", "4": "hr"}

_PREFIXED = re.compile(r"^(hr|ir|co|di):(\d+)(?:\.(\d+))?$")
_MODICON = re.compile(r"^([0134])(\d{4}|\d{5})(?:\.(\d+))?$")


@dataclass(frozen=True, slots=True)
class ModbusAddress:
    area: Area
    offset: int
    bit: int | None = None

    def __str__(self) -> str:
        return f"{self.area}:{self.offset}" + (f".{self.bit}" if self.bit is not None else "")


class AddressError(ValueError):
    pass


def parse_address(raw: str | int) -> ModbusAddress:
    """Parse any accepted address form, or raise AddressError saying what would be right."""
    if isinstance(raw, bool):
        raise AddressError("expected an address such as 'hr:100' or 40101")
    if isinstance(raw, int):
        text = str(raw)
        if raw < 10000:
            # YAML turns an unquoted 00001 into the integer 1 (or an octal number): refuse
            # rather than guess which coil was meant.
            raise AddressError(
                f"{raw} is not a Modicon reference; quote coil references ('00001') or write 'co:0'"
            )
    else:
        text = raw.strip()
    m = _PREFIXED.match(text)
    if m:
        area, offset, bit = m.group(1), int(m.group(2)), m.group(3)
    else:
        m = _MODICON.match(text)
        if not m:
            raise AddressError(
                f"'{text}' is not a Modbus address; write hr:N, ir:N, co:N, di:N, hr:N.B "
                "or a Modicon reference such as 40101"
            )
        area = _MODICON_AREA[m.group(1)]
        number = int(m.group(2))
        if number == 0:
            raise AddressError(f"'{text}': Modicon references start at 1 ({m.group(1)}0001)")
        offset, bit = number - 1, m.group(3)
    if offset > 65535:
        raise AddressError(f"'{text}': offset {offset} is above 65535")
    bit_no: int | None = None
    if bit is not None:
        if area in BIT_AREAS:
            raise AddressError(f"'{text}': a bit number applies to registers, not to {AREA_NAMES[area]}s")
        bit_no = int(bit)
        if bit_no > 15:
            raise AddressError(f"'{text}': bit {bit_no} is outside 0..15")
    return ModbusAddress(area, offset, bit_no)  # type: ignore[arg-type]


REGISTER_WIDTH = {
    "bool": 1,
    "int16": 1,
    "uint16": 1,
    "int32": 2,
    "uint32": 2,
    "float32": 2,
    "int64": 4,
    "uint64": 4,
    "float64": 4,
}


def width_of(type_: str, length: int | None) -> int:
    """Registers a value occupies (bit areas: always one bit)."""
    if type_ == "string":
        return length or 1
    return REGISTER_WIDTH[type_]
