"""DL/T 645-2007 frames, addresses and data formats, with no library: the frame is small and
its rules are exact.

A frame is `68 A0..A5 68 C L DATA CS 16`, sent after a wake-up preamble of `FE` bytes. The
address is the 12 decimal digits printed on the meter's nameplate as 6 BCD bytes, lowest byte
first. Every DATA byte is sent plus 0x33 (modulo 256). CS is the sum of the bytes from the first
0x68 to the last DATA byte, modulo 256. A read (C = 0x11) carries the 4-byte data identifier
(DI), DI0 first; the meter answers C = 0x91 with the DI and the value (0xB1: follow-up frames
exist), or C = 0xD1 with one error byte (ERR) whose bits name what was wrong.

Values are BCD digits, lowest byte first. A format such as `XXXXXX.XX` gives the digits and the
decimals; in a signed value the highest bit of the most significant byte is the sign (DL/T
645-2007 appendix A: currents, powers, power factors, combined energies). Dates and times
(`YYMMDDWW`, `hhmmss`) and digit strings (`NNNNNNNNNNNN`: the address, the meter number) are text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PREAMBLE = b"\xfe\xfe\xfe\xfe"
START = 0x68
END = 0x16
READ = 0x11
READ_ADDRESS = 0x13
WILDCARD = "AAAAAAAAAAAA"  # the address any meter answers a read of its address to (C = 0x13)
MAX_DATA = 200  # a read reply carries at most 200 data bytes

# the error byte of an abnormal reply (DL/T 645-2007, 错误信息字 ERR), bit by bit
ERR_BITS = (
    "other error",  # 其他错误
    "no requested data",  # 无请求数据
    "password error or unauthorised",  # 密码错/未授权
    "communication rate cannot be changed",  # 通信速率不能更改
    "annual time zones exceeded",  # 年时区数超
    "daily periods exceeded",  # 日时段数超
    "tariffs exceeded",  # 费率数超
    "reserved bit 7",
)


class FormatError(ValueError):
    """A value that does not fit its format (not BCD, wrong length, out of range)."""


def err_meaning(err: int) -> str:
    names = [name for bit, name in enumerate(ERR_BITS) if err >> bit & 1]
    return ", ".join(names) if names else "no error bit set"


# ---- addresses and data identifiers ----

_ADDRESS = re.compile(r"^[0-9]{12}$")
_DI = re.compile(r"^[0-9A-Fa-f]{8}$")


def address_problem(text: object) -> str | None:
    if not isinstance(text, str) or not _ADDRESS.match(text):
        return (
            f"{text!r} is not a meter address: write the 12 digits printed on the nameplate, in quotes "
            '(e.g. "000000001234"; pad a shorter number with zeros on the left)'
        )
    return None


def address_bytes(text: str) -> bytes:
    """The 6 address bytes on the wire, lowest first ("AAAAAAAAAAAA" is the wildcard)."""
    return bytes.fromhex(text)[::-1]


def address_text(raw: bytes) -> str:
    return raw[::-1].hex().upper()


def di_problem(text: object) -> str | None:
    if not isinstance(text, str) or not _DI.match(text):
        return f'{text!r} is not a data identifier: write its 8 hex digits DI3 DI2 DI1 DI0, e.g. "02010100"'
    return None


def di_bytes(di: int) -> bytes:
    return di.to_bytes(4, "little")


# ---- frames ----


def frame(address: bytes, control: int, data: bytes = b"", preamble: bytes = PREAMBLE) -> bytes:
    """A whole frame: preamble, header, DATA plus 0x33, checksum, end."""
    if len(data) > MAX_DATA:
        raise ValueError(f"a DL/T 645 frame carries at most {MAX_DATA} data bytes")
    body = bytes([START, *address, START, control, len(data), *((b + 0x33) & 0xFF for b in data)])
    return preamble + body + bytes([sum(body) & 0xFF, END])


def read_request(address: str, di: int) -> bytes:
    return frame(address_bytes(address), READ, di_bytes(di))


def read_address_request() -> bytes:
    return frame(address_bytes(WILDCARD), READ_ADDRESS)


@dataclass(frozen=True, slots=True)
class Frame:
    address: bytes  # as on the wire, lowest byte first
    control: int
    data: bytes  # minus 0x33

    @property
    def address_text(self) -> str:
        return address_text(self.address)


@dataclass(frozen=True, slots=True)
class BadFrame:
    """A frame whose shape was complete but whose checksum or end byte was wrong."""

    address: bytes
    reason: str


def parse(buf: bytes | bytearray) -> tuple[int, Frame | BadFrame | None]:
    """The first frame in `buf`: (bytes consumed, the frame), or (bytes that can be dropped, None)
    while it is incomplete. Bytes before a start (FE preamble, line noise) are skipped. Noise can
    look like a header, so a 0x68 is taken as a start only while nothing says otherwise: not
    followed by a second 0x68 seven bytes on, or by a length over MAX_DATA, it is skipped; when
    its frame is incomplete but a whole frame starts after it, that frame is returned; when its
    checksum or end byte is wrong, the BadFrame is returned with that 0x68 alone consumed, so the
    next call rescans the bytes it covered (a reply hidden in a fake frame is found)."""
    i = 0
    n = len(buf)
    while True:
        i = buf.find(START, i)
        if i < 0:
            return n, None
        if n < i + 10:
            return i, None
        if buf[i + 7] != START or buf[i + 9] > MAX_DATA:
            i += 1
            continue
        end = i + 12 + buf[i + 9]
        if n < end:  # unless a whole frame starts later on: then this header was noise
            used, later = parse(buf[i + 1 :])
            return (i + 1 + used, later) if isinstance(later, Frame) else (i, None)
        address = bytes(buf[i + 1 : i + 7])
        cs = sum(buf[i : end - 2]) & 0xFF
        if buf[end - 1] != END:
            return i + 1, BadFrame(address, f"the frame does not end with 16 (got {buf[end - 1]:02X})")
        if buf[end - 2] != cs:
            return i + 1, BadFrame(
                address, f"checksum error (got {buf[end - 2]:02X}, the bytes sum to {cs:02X})"
            )
        data = bytes((b - 0x33) & 0xFF for b in buf[i + 10 : end - 2])
        return end, Frame(address, buf[i + 8], data)


# ---- data formats ----

_NUMBER = re.compile(r"^(X+)(?:\.(X+))?$")
_DIGITS = re.compile(r"^N+$")
_DATETIME = {
    "YYMMDDWW": 4,  # date and weekday (0 = Sunday)
    "hhmmss": 3,
    "YYMMDDhhmm": 5,
    "YYMMDDhhmmss": 6,
    "MMDDhhmm": 4,
}


@dataclass(frozen=True, slots=True)
class Format:
    text: str
    size: int  # bytes on the wire
    decimals: int | None  # None: text (a date, a time, a digit string)
    signed: bool = False

    @property
    def numeric(self) -> bool:
        return self.decimals is not None

    @property
    def largest(self) -> float:
        return (self.limit - 1) / 10 ** (self.decimals or 0)

    @property
    def limit(self) -> int:
        """The first scaled value that does not fit: the sign bit leaves 0-7 in the top digit."""
        digits = self.size * 2
        return 8 * 10 ** (digits - 1) if self.signed else 10**digits


def parse_format(text: str, signed: bool = False) -> Format:
    """`XXXXXX.XX`, `XX.XXXX`, `XXXX` (BCD digits, the point where the decimals start),
    `NNNNNNNNNNNN` (digits read as text), or a date/time (`YYMMDDWW`, `hhmmss`, `YYMMDDhhmm`,
    `YYMMDDhhmmss`, `MMDDhhmm`). Raises ValueError saying why not."""
    if text in _DATETIME:
        if signed:
            raise ValueError(f"format {text} is a date or time: it has no sign")
        return Format(text, _DATETIME[text], None)
    if _DIGITS.match(text):
        if len(text) % 2:
            raise ValueError(f"format {text} has {len(text)} digits: BCD bytes hold two each (an even count)")
        if signed:
            raise ValueError(f"format {text} is a digit string: it has no sign")
        return Format(text, len(text) // 2, None)
    m = _NUMBER.match(text)
    if m is None:
        raise ValueError(
            f"format {text!r} is not a DL/T 645 data format: write X for each digit and a point "
            "where the decimals start (XXXXXX.XX), N…N for a digit string, or YYMMDDWW, hhmmss, "
            "YYMMDDhhmm, YYMMDDhhmmss, MMDDhhmm"
        )
    digits = len(m.group(1)) + len(m.group(2) or "")
    if digits % 2:
        raise ValueError(f"format {text} has {digits} digits: BCD bytes hold two each (an even count)")
    if digits > 16:
        raise ValueError(f"format {text} has {digits} digits: at most 16 (8 bytes)")
    return Format(text, digits // 2, len(m.group(2) or ""), signed)


def _bcd_digits(raw: bytes, what: str) -> str:
    text = raw[::-1].hex()
    if not text.isdigit():
        raise FormatError(f"{what} {raw[::-1].hex().upper()} is not BCD")
    return text


def decode(fmt: Format, raw: bytes) -> float | str:
    """The value of `raw` (the bytes after the DI, lowest first, 0x33 already taken off)."""
    if len(raw) != fmt.size:
        raise FormatError(f"the value has {len(raw)} bytes, format {fmt.text} needs {fmt.size}")
    if fmt.decimals is None:
        if fmt.text in _DATETIME:
            return _datetime(fmt.text, _bcd_digits(raw, "the date/time"))
        return _bcd_digits(raw, "the value")
    negative = False
    if fmt.signed and raw[-1] & 0x80:
        negative = True
        raw = raw[:-1] + bytes([raw[-1] & 0x7F])
    number = int(_bcd_digits(raw, "the value")) / 10**fmt.decimals
    return -number if negative else number


def _datetime(fmt: str, d: str) -> str:
    if fmt == "YYMMDDWW":
        return f"20{d[0:2]}-{d[2:4]}-{d[4:6]}"
    if fmt == "hhmmss":
        return f"{d[0:2]}:{d[2:4]}:{d[4:6]}"
    if fmt == "YYMMDDhhmm":
        return f"20{d[0:2]}-{d[2:4]}-{d[4:6]}T{d[6:8]}:{d[8:10]}"
    if fmt == "YYMMDDhhmmss":
        return f"20{d[0:2]}-{d[2:4]}-{d[4:6]}T{d[6:8]}:{d[8:10]}:{d[10:12]}"
    return f"{d[0:2]}-{d[2:4]}T{d[4:6]}:{d[6:8]}"  # MMDDhhmm


def encode(fmt: Format, value: object) -> bytes:
    """The wire bytes of a value (lowest first, before 0x33): what a meter sends. Numbers are
    rounded to the format's decimals; text formats take the text `decode` gives."""
    if fmt.decimals is None:
        digits = re.sub(r"[^0-9]", "", str(value))
        if fmt.text in _DATETIME:
            if fmt.text.startswith("YY"):
                digits = digits[2:]  # the century
            if fmt.text == "YYMMDDWW":
                digits += "00"
        if len(digits) != fmt.size * 2:
            raise FormatError(f"{value!r} does not fit format {fmt.text}")
        return bytes.fromhex(digits)[::-1]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FormatError(f"{value!r} is not a number")
    scaled = round(abs(value) * 10**fmt.decimals)
    negative = value < 0 and scaled != 0
    if negative and not fmt.signed:
        raise FormatError(f"{value} is negative and format {fmt.text} has no sign")
    if scaled >= fmt.limit:
        raise FormatError(f"{value} does not fit format {fmt.text}")
    raw = bytearray(bytes.fromhex(f"{scaled:0{fmt.size * 2}d}")[::-1])
    if negative:
        raw[-1] |= 0x80
    return bytes(raw)


# ---- the standard's data identifiers (DL/T 645-2007 appendix A) ----


@dataclass(frozen=True, slots=True)
class Known:
    format: str
    signed: bool
    unit: str  # as the standard writes it
    name: str


_ENERGY = {
    0x00: ("combined active energy", "kWh", True),
    0x01: ("forward active energy", "kWh", False),
    0x02: ("reverse active energy", "kWh", False),
    0x03: ("combined reactive energy 1", "kvarh", True),
    0x04: ("combined reactive energy 2", "kvarh", True),
    0x05: ("quadrant I reactive energy", "kvarh", False),
    0x06: ("quadrant II reactive energy", "kvarh", False),
    0x07: ("quadrant III reactive energy", "kvarh", False),
    0x08: ("quadrant IV reactive energy", "kvarh", False),
}
_PHASES = {0x00: "total", 0x01: "phase A", 0x02: "phase B", 0x03: "phase C"}
_VARIABLES = {
    0x01: ("voltage", "XXX.X", False, "V", (1, 2, 3)),
    0x02: ("current", "XXX.XXX", True, "A", (1, 2, 3)),
    0x03: ("active power", "XX.XXXX", True, "kW", (0, 1, 2, 3)),
    0x04: ("reactive power", "XX.XXXX", True, "kvar", (0, 1, 2, 3)),
    0x05: ("apparent power", "XX.XXXX", True, "kVA", (0, 1, 2, 3)),
    0x06: ("power factor", "X.XXX", True, "", (0, 1, 2, 3)),
    0x07: ("phase angle", "XXX.X", False, "°", (1, 2, 3)),
}
_OTHERS = {
    0x02800001: Known("XXX.XXX", True, "A", "neutral current"),
    0x02800002: Known("XX.XX", False, "Hz", "grid frequency"),
    0x02800003: Known("XX.XXXX", True, "kW", "one-minute average active power"),
    0x02800007: Known("XXX.X", True, "°C", "meter temperature"),
    0x02800008: Known("XX.XX", False, "V", "clock battery voltage"),
    0x04000101: Known("YYMMDDWW", False, "", "date and weekday"),
    0x04000102: Known("hhmmss", False, "", "time"),
    0x04000401: Known("NNNNNNNNNNNN", False, "", "communication address"),
    0x04000402: Known("NNNNNNNNNNNN", False, "", "meter number"),
}


def known(di: int) -> Known | None:
    """The standard's format of a data identifier, for the common ones (energies of the current
    and the 12 past settlement periods per tariff, instantaneous values, clock, address)."""
    if di in _OTHERS:
        return _OTHERS[di]
    di3, di2, di1, di0 = di.to_bytes(4, "big")
    if di3 == 0x00 and di2 in _ENERGY and di1 <= 0x3F and di0 <= 0x0C:
        name, unit, signed = _ENERGY[di2]
        tariff = "total" if di1 == 0 else f"tariff {di1}"
        when = "current" if di0 == 0 else f"settlement period -{di0}"
        return Known("XXXXXX.XX", signed, unit, f"{name}, {tariff}, {when}")
    if di3 == 0x02 and di2 in _VARIABLES and di0 == 0x00:
        name, fmt, signed, unit, phases = _VARIABLES[di2]
        if di1 in phases:
            return Known(fmt, signed, unit, f"{name}, {_PHASES[di1]}")
    return None
