"""Write-back: an engineering value from a user -> the raw value a driver writes, checked.

Checks follow the dictionary: only `rw` points, the JSON type must fit the point's type, a
number must lie within `range`, and after the inverse of scale/offset it must fit the raw
type (an integer type takes the nearest integer, ties to even; the answer reports the value
written). Integer points are computed exactly: a number means the decimal it is written as
(0.1 is one tenth, in the config and in the request), and an int64 of 9007199254740993 stays
that, never passing through a binary float. Whatever a request carries, a value that cannot
be written is refused with WriteRejected("bad_value", why), never another exception.
Both the HTTP API and MQTT `set` go through `check_write`, then the device runner, so every
write is serialised with the device's polls on its one connection.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from functools import lru_cache

from edgegw.drivers.base import INT_LIMITS, WriteFailed, WriteTimeout

from .dictionary import DictionaryEntry

_FLOAT32_MAX = 3.4028234663852886e38
_EXACT_IN_FLOAT = 2**53  # integers up to this magnitude convert to float exactly


class WriteRejected(Exception):
    """A write refused before reaching the device. `kind` says why, for the HTTP status:
    unknown (404), read_only (409), bad_value (422), disabled (403)."""

    def __init__(self, kind: str, reason: str):
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


@dataclass(frozen=True, slots=True)
class CheckedWrite:
    point: str
    raw: object  # what the driver writes
    value: object  # the engineering value that raw stands for (after rounding)


@lru_cache(maxsize=1024)
def _exact(x: float) -> Fraction:
    """A number as the rational its shortest decimal form names (a scale of 0.1 is 1/10)."""
    return Fraction(repr(x)) if isinstance(x, float) else Fraction(x)


def _int_raw(value: int | float, scale: float, offset: float) -> int:
    """round((value - offset) / scale), as exact arithmetic on the decimal numbers would give it."""
    if scale == 1.0 and offset == 0.0:
        if isinstance(value, int):
            return value
        if abs(value) < 2.0**52:  # no half-integer lies between a float and its shortest decimal
            return round(value)
        return round(_exact(value))  # 6.486852949784297e+16 names ...970, not the float's ...968
    if isinstance(value, float) or -_EXACT_IN_FLOAT <= value <= _EXACT_IN_FLOAT:
        v = float(value)
        q = (v - offset) / scale
        # q is within `err` of the exact quotient (a few roundings of 2**-53 each, with a wide
        # margin). Unless a half-integer lies that close, rounding q gives the exact answer,
        # fast enough for the simulators, which convert every value they serve.
        err = ((abs(v) + abs(offset)) / abs(scale) + abs(q)) * 2.0**-48
        if err < 0.25 and abs(q - math.floor(q) - 0.5) > err:
            return round(q)
    return round((_exact(value) - _exact(offset)) / _exact(scale))


def raw_value(entry: DictionaryEntry, value: object) -> object:
    """Engineering value -> raw value (the inverse of scale/offset), without checks: an int for
    integer types, a float for float types. Raises ValueError, OverflowError or
    ZeroDivisionError for a number that has no raw value."""
    if entry.type in ("bool", "string"):
        return value
    if entry.type in INT_LIMITS:
        return _int_raw(value, entry.scale, entry.offset)  # type: ignore[arg-type]
    if entry.scale == 1.0 and entry.offset == 0.0:
        return float(value)  # type: ignore[arg-type]
    return (float(value) - entry.offset) / entry.scale  # type: ignore[arg-type]


def _engineering(entry: DictionaryEntry, raw: int) -> int | float:
    """The engineering value an integer raw value stands for: an int when it is integral."""
    if entry.scale == 1.0 and entry.offset == 0.0:
        return raw
    exact = raw * _exact(entry.scale) + _exact(entry.offset)
    return int(exact) if exact.denominator == 1 else float(exact)


def _show(x: int | float) -> str:
    """A number for a message: any int, however long (a 400-digit one has no float)."""
    if isinstance(x, int) and not -(10**21) < x < 10**21:
        return f"{Decimal(x):.6e}"
    return str(x) if isinstance(x, int) else f"{x:g}"


def check_write(entry: DictionaryEntry, value: object) -> CheckedWrite:
    if entry.access != "rw":
        raise WriteRejected("read_only", f"point '{entry.id}' is read-only (access: ro)")
    t = entry.type
    if t == "bool":
        if isinstance(value, bool):
            return CheckedWrite(entry.id, value, value)
        if isinstance(value, int) and value in (0, 1):
            return CheckedWrite(entry.id, bool(value), bool(value))
        raise WriteRejected("bad_value", f"point '{entry.id}' is bool: send true or false")
    if t == "string":
        if not isinstance(value, str):
            raise WriteRejected("bad_value", f"point '{entry.id}' is a string: send a JSON string")
        if not value.isascii():
            raise WriteRejected("bad_value", "only ASCII characters can be written to a string point")
        if entry.length is not None and len(value) > 2 * entry.length:
            raise WriteRejected(
                "bad_value", f"'{value}' is longer than the point's {2 * entry.length} characters"
            )
        return CheckedWrite(entry.id, value, value)
    # never the value's repr here: a list nested thousands deep has none
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise WriteRejected("bad_value", f"point '{entry.id}' is {t}: send a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise WriteRejected("bad_value", f"{value} is not a finite number")
    if entry.range is not None:
        lo, hi = entry.range
        if not lo <= value <= hi:  # int against float compares exactly, at any size
            unit = f" {entry.unit}" if entry.unit else ""
            raise WriteRejected(
                "bad_value", f"{_show(value)} is outside the point's range [{lo:g}, {hi:g}]{unit}"
            )
    scaled = entry.scale != 1.0 or entry.offset != 0.0
    after = " after scale/offset" if scaled else ""
    try:
        raw = raw_value(entry, value)
    except (ArithmeticError, ValueError):  # OverflowError, ZeroDivisionError: no raw value
        raise WriteRejected("bad_value", f"{_show(value)} does not fit {t}{after}") from None
    if t in INT_LIMITS:
        assert isinstance(raw, int)
        lo_raw, hi_raw = INT_LIMITS[t]
        if not lo_raw <= raw <= hi_raw:
            raw_note = f"raw {_show(raw)}, " if scaled else ""
            raise WriteRejected(
                "bad_value", f"{_show(value)} does not fit {t}{after} ({raw_note}{lo_raw}..{hi_raw})"
            )
        return CheckedWrite(entry.id, raw, _engineering(entry, raw))
    assert isinstance(raw, float)
    if not math.isfinite(raw) or (t == "float32" and abs(raw) > _FLOAT32_MAX):
        raise WriteRejected("bad_value", f"{_show(value)} does not fit {t}{after}")
    return CheckedWrite(entry.id, raw, value)


_KIND_STATUS = {"unknown": 404, "read_only": 409, "bad_value": 422, "disabled": 403}


def write_error(exc: BaseException) -> tuple[int, str]:
    """Any failure of a write -> (HTTP status, reason): one mapping for HTTP and MQTT `set`."""
    if isinstance(exc, WriteRejected):
        return _KIND_STATUS.get(exc.kind, 422), exc.reason
    if isinstance(exc, WriteTimeout):
        return 504, f"the device did not answer the write: {exc}"
    if isinstance(exc, WriteFailed):
        return 502, f"the device refused the write: {exc}"
    if isinstance(exc, TimeoutError):
        return 504, "the device did not answer the write in time (connection busy)"
    return 500, f"internal error: {type(exc).__name__}"
