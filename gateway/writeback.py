"""Write-back: an engineering value from a user -> the raw value a driver writes, checked.

Checks follow the dictionary: only `rw` points, the JSON type must fit the point's type, a
number must lie within `range`, and after the inverse of scale/offset it must fit the raw
type (an integer type takes the nearest integer; the answer reports the value written).
Both the HTTP API and MQTT `set` go through `check_write`, then the device runner, so every
write is serialised with the device's polls on its one connection.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from drivers.base import INT_LIMITS, WriteFailed, WriteTimeout

from .dictionary import DictionaryEntry


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


def raw_value(entry: DictionaryEntry, value: object) -> object:
    """Engineering value -> raw value (the inverse of scale/offset), without checks."""
    if entry.type in ("bool", "string"):
        return value
    raw = (float(value) - entry.offset) / entry.scale  # type: ignore[arg-type]
    if entry.type in INT_LIMITS:
        return round(raw)
    return raw


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
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise WriteRejected("bad_value", f"point '{entry.id}' is {t}: send a number")
    if not math.isfinite(value):
        raise WriteRejected("bad_value", f"{value} is not a finite number")
    if entry.range is not None:
        lo, hi = entry.range
        if not lo <= value <= hi:
            unit = f" {entry.unit}" if entry.unit else ""
            raise WriteRejected("bad_value", f"{value:g} is outside the point's range [{lo:g}, {hi:g}]{unit}")
    raw = raw_value(entry, value)
    if t in INT_LIMITS:
        lo_raw, hi_raw = INT_LIMITS[t]
        if not lo_raw <= raw <= hi_raw:  # type: ignore[operator]
            raise WriteRejected(
                "bad_value", f"{value:g} does not fit {t} after scale/offset (raw {raw}, {lo_raw}..{hi_raw})"
            )
        written = raw * entry.scale + entry.offset  # type: ignore[operator]
        if entry.scale != 1.0 or entry.offset != 0.0:
            written = round(written, 10)
        return CheckedWrite(entry.id, raw, written)
    if t == "float32" and abs(raw) > 3.4028234663852886e38:  # type: ignore[arg-type]
        raise WriteRejected("bad_value", f"{value:g} does not fit float32")
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
