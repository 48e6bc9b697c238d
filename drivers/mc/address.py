"""MELSEC device addresses as GX Works2/GX Works3 show them, parsed and checked against a type.

    X1F, Y20      inputs/outputs: hexadecimal numbers on Q, L and iQ-R, octal on iQ-F (X17)
    M10, L5, F3   internal, latch relays, annunciators (decimal)
    B1A           link relays (hexadecimal)
    SM400         special relays (decimal)
    D100, R200    data and file registers (decimal)
    W1F           link registers (hexadecimal)
    ZR1000        file registers, serial number access (decimal, as GX Works shows them)
    SD200         special registers (decimal)
    TN5, CN3      timer and counter current values (decimal)
    D300.3        bit 3 of D300 (one hexadecimal digit, 0 to F, as GX Works writes it)

Device codes and radixes are those of the MELSEC Communication Protocol Reference Manual
(SH-080008, "Devices" table of the commands chapter); the iQ-F octal X/Y numbering is the
MELSEC iQ-F FX5 User's Manual (SLMP) (JY997D56001) device table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PLC_KINDS = ("Q", "L", "iQ-R", "iQ-F")


@dataclass(frozen=True, slots=True)
class DeviceKind:
    name: str
    bit: bool  # a bit device (else a word device)
    code: int  # binary device code (Q/L: 1 byte; iQ-R subcommands: 2 bytes)
    ascii: str  # ASCII device code, Q/L form (2 characters, '*' filled)
    radix: int  # 10 or 16 (X/Y: 8 on iQ-F)
    description: str

    def radix_on(self, plc: str) -> int:
        if self.name in ("X", "Y") and plc == "iQ-F":
            return 8
        return self.radix

    def ascii_iqr(self) -> str:
        return self.ascii.rstrip("*").ljust(4, "*")


DEVICES: dict[str, DeviceKind] = {
    d.name: d
    for d in (
        DeviceKind("X", True, 0x9C, "X*", 16, "input"),
        DeviceKind("Y", True, 0x9D, "Y*", 16, "output"),
        DeviceKind("M", True, 0x90, "M*", 10, "internal relay"),
        DeviceKind("L", True, 0x92, "L*", 10, "latch relay"),
        DeviceKind("F", True, 0x93, "F*", 10, "annunciator"),
        DeviceKind("B", True, 0xA0, "B*", 16, "link relay"),
        DeviceKind("SM", True, 0x91, "SM", 10, "special relay"),
        DeviceKind("D", False, 0xA8, "D*", 10, "data register"),
        DeviceKind("W", False, 0xB4, "W*", 16, "link register"),
        DeviceKind("R", False, 0xAF, "R*", 10, "file register"),
        DeviceKind("ZR", False, 0xB0, "ZR", 10, "file register (serial number access)"),
        DeviceKind("SD", False, 0xA9, "SD", 10, "special register"),
        DeviceKind("TN", False, 0xC2, "TN", 10, "timer current value"),
        DeviceKind("CN", False, 0xC5, "CN", 10, "counter current value"),
    )
}
BY_CODE = {d.code: d for d in DEVICES.values()}

# the largest X/Y number each family addresses (its I/O space); other devices' sizes are set in
# the CPU's parameters, so a number beyond them is the CPU's to refuse (end code C056)
IO_POINTS = {"Q": 0x2000, "L": 0x2000, "iQ-R": 0x3000, "iQ-F": 1024}
# what the request's device-number field holds: 3 bytes with the Q/L subcommands (binary), 6
# digits in ASCII; 4 bytes / 8 digits with the iQ-R subcommands
FIELD_MAX = {False: 0xFFFFFF, True: 0xFFFFFFFF}

# words per value of each type on a word device
TYPE_WORDS = {
    "int8": 1,
    "uint8": 1,
    "int16": 1,
    "uint16": 1,
    "int32": 2,
    "uint32": 2,
    "float32": 2,
    "int64": 4,
    "uint64": 4,
    "float64": 4,
}

_ADDR = re.compile(r"^(SM|SD|ZR|TN|CN|[XYMLFBDWR])([0-9A-F]+)(?:\.([0-9A-F]+))?$")


class AddressError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class McAddress:
    device: str
    number: int
    bit: int | None = None  # bit of a word device (0-15)
    plc: str = "Q"

    @property
    def kind(self) -> DeviceKind:
        return DEVICES[self.device]

    def __str__(self) -> str:
        return format_device(self.device, self.number, self.plc) + (
            f".{self.bit:X}" if self.bit is not None else ""
        )


def format_device(device: str, number: int, plc: str) -> str:
    radix = DEVICES[device].radix_on(plc)
    digits = {8: f"{number:o}", 10: f"{number}", 16: f"{number:X}"}[radix]
    return f"{device}{digits}"


def parse_address(text: str, plc: str = "Q", iqr_subcommands: bool = False) -> McAddress:
    raw = text.strip()
    s = raw.upper()
    if not s:
        raise AddressError("an empty address: write e.g. D100, M10 or X1F")
    m = _ADDR.match(s)
    if m is None:
        raise AddressError(_hint(raw, s))
    name, digits, bit = m[1], m[2], m[3]
    kind = DEVICES[name]
    radix = kind.radix_on(plc)
    try:
        number = int(digits, radix)
    except ValueError:
        if radix == 8:
            raise AddressError(
                f"'{raw}': {name} numbers are octal on iQ-F (digits 0-7, as GX Works3 shows: "
                f"{name}0-{name}7, {name}10-{name}17, …)"
            ) from None
        raise AddressError(f"'{raw}': {kind.description} ({name}) numbers are decimal") from None
    if name in ("X", "Y") and number >= IO_POINTS[plc]:
        last = format_device(name, IO_POINTS[plc] - 1, plc)
        raise AddressError(f"'{raw}': beyond the I/O of {plc} CPUs ({name}0 to {last})")
    limit = FIELD_MAX[iqr_subcommands]
    if number > limit or (radix == 10 and not iqr_subcommands and number > 999999):
        top = 999999 if radix == 10 and not iqr_subcommands else limit
        shown = format_device(name, top, plc)
        raise AddressError(f"'{raw}': beyond what an MC request can address ({name}0 to {shown})")
    if bit is not None:
        if kind.bit:
            raise AddressError(f"'{raw}': {name} is a bit device; a bit of a word is written like D300.3")
        if len(bit) != 1:
            hint = f" (bit {int(bit)} is .{int(bit):X})" if bit.isdigit() and int(bit) < 16 else ""
            raise AddressError(
                f"'{raw}': the bit of a word is one hexadecimal digit, 0 to F, as GX Works writes it{hint}"
            )
        return McAddress(name, number, int(bit, 16), plc)
    return McAddress(name, number, None, plc)


def _hint(raw: str, s: str) -> str:
    if re.match(r"^(T|C)\d+$", s):
        return f"'{raw}': write the current value as {s[0]}N{s[1:]} (contacts and coils are not read)"
    if re.match(r"^(TS|TC|CS|CC|ST|SN|SS|SC|LT|LC|LZ)", s):
        return f"'{raw}': timer/counter contacts and coils and long devices are not supported; use TN or CN"
    if re.match(r"^(U[0-9A-F]+\\G|J\d+\\)", s):
        return f"'{raw}': module buffer memory and link direct devices are not supported"
    if re.match(r"^[KH]\d", s) or s.startswith("K4"):
        return f"'{raw}': digit-specified devices (K4M0) are not supported; read the word or its bits"
    if re.match(r"^(SB|SW|S|V|Z|DX|DY)\d", s):
        return f"'{raw}': this device is not supported; supported: X Y M L F B SM (bits), D W R ZR SD TN CN (words)"
    return (
        f"'{raw}' is not a MELSEC device: expected a device and its number, e.g. D100, M10, X1F, "
        "W1A, SM400, TN5, or a bit of a word, D300.3"
    )


def type_problem(addr: McAddress, type_: str, access: str) -> str | None:
    """Why an address cannot hold a point of this type (None: it can)."""
    kind = addr.kind
    if kind.bit:
        if type_ != "bool":
            return (
                f"{addr} is a bit device ({kind.description}): it holds a bool; {_a(type_)} needs a word "
                "device such as D, W or R"
            )
        return None
    if addr.bit is not None:
        if type_ != "bool":
            return f"{addr} is one bit of {format_device(addr.device, addr.number, addr.plc)}: it holds a bool, not {type_}"
        if access == "rw":
            return (
                f"{addr} is a bit of a word: MC has no single-bit write for word devices, and writing "
                "the whole word would overwrite what the PLC program changes meanwhile; make it ro, "
                "or write a bit device (M, L, B, Y) instead"
            )
        return None
    if type_ == "bool":
        return (
            f"{addr} is a word ({kind.description}): a bool needs a bit device (M10, X1F) or a bit of "
            f"a word ({addr}.0)"
        )
    if type_ in ("int8", "uint8") and access == "rw":
        return (
            f"{addr} holds 16 bits: {_a(type_)} is read as its low byte, but writing it would clear the "
            "high byte; use int16/uint16 to write"
        )
    return None


def words_of(type_: str, length: int | None) -> int:
    if type_ == "string":
        return ((length or 0) + 1) // 2
    if type_ == "bool":
        return 1
    return TYPE_WORDS[type_]


def _a(noun: str) -> str:
    return ("an " if noun[0] in "aeio" else "a ") + noun
