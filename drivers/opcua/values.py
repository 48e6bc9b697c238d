"""OPC UA values onto the dictionary's types, StatusCodes onto quality, and back for writes."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

from asyncua import ua
from edgegw.gateway.opcua.types import VARIANT_TYPES

from ..base import INT_LIMITS, PointError, Uncertain

_FLOAT32_MAX = 3.4028234663852886e38


# the dictionary type that holds each OPC UA built-in type (what `edgegw browse` writes)
TYPE_OF_VARIANT = {
    ua.VariantType.Boolean: "bool",
    ua.VariantType.SByte: "int8",
    ua.VariantType.Byte: "uint8",
    ua.VariantType.Int16: "int16",
    ua.VariantType.UInt16: "uint16",
    ua.VariantType.Int32: "int32",
    ua.VariantType.UInt32: "uint32",
    ua.VariantType.Int64: "int64",
    ua.VariantType.UInt64: "uint64",
    ua.VariantType.Float: "float32",
    ua.VariantType.Double: "float64",
    ua.VariantType.String: "string",
    ua.VariantType.DateTime: "string",
    ua.VariantType.LocalizedText: "string",
    ua.VariantType.QualifiedName: "string",
    ua.VariantType.Guid: "string",
    ua.VariantType.ByteString: "string",
    ua.VariantType.NodeId: "string",
    ua.VariantType.StatusCode: "uint32",
}


def status_name(code: ua.StatusCode) -> str:
    try:
        return str(code.name)
    except Exception:  # a code asyncua has no name for
        return f"0x{code.value:08X}"


def to_point(dv: ua.DataValue, type_: str) -> object:
    """A DataValue as the raw value of a point of `type_`: the value, Uncertain(value, status),
    or PointError(status name / why the value does not fit)."""
    code = dv.StatusCode
    if code is not None and code.is_bad():
        return PointError(status_name(code))
    variant = dv.Value
    value = variant.Value if variant is not None else None
    if value is None:
        return PointError("no value (null)")
    converted = convert(value, type_)
    if code is not None and code.is_uncertain() and not isinstance(converted, PointError):
        return Uncertain(converted, status_name(code))
    return converted


def convert(value: Any, type_: str) -> object:
    if isinstance(value, list):  # arrays are published as JSON lists of the point's type
        out = [convert(v, type_) for v in value]
        bad = next((v for v in out if isinstance(v, PointError)), None)
        return bad if bad is not None else out
    if type_ == "string":
        if isinstance(value, dt.datetime):
            v = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
            return v.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        if isinstance(value, ua.LocalizedText):
            return value.Text or ""
        if isinstance(value, ua.QualifiedName):
            return value.to_string()
        if isinstance(value, ua.NodeId):
            return value.to_string()
        if isinstance(value, bytes):
            return value.hex()
        return str(value)
    if type_ == "bool":
        if isinstance(value, bool | int):
            return bool(value)
        return PointError(f"{type(value).__name__} is not a bool")
    if isinstance(value, dt.datetime):  # DateTime as a number: ms since the epoch
        v = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        value = int(v.timestamp() * 1000)
    if isinstance(value, ua.StatusCode):
        value = value.value
    if type_ in INT_LIMITS:
        if isinstance(value, float):
            if not value.is_integer():
                return PointError(f"{value} is not an integer")
            value = int(value)
        if not isinstance(value, int):
            return PointError(f"{type(value).__name__} is not an integer")
        lo, hi = INT_LIMITS[type_]
        return int(value) if lo <= value <= hi else PointError(f"{value} is outside the range of {type_}")
    if isinstance(value, bool | int | float):
        return float(value)
    return PointError(f"{type(value).__name__} is not a number")


def source_ms(dv: ua.DataValue) -> int | None:
    ts = dv.SourceTimestamp
    if ts is None:
        return None
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=dt.UTC)
    return int(ts.timestamp() * 1000)


def variant(type_: str, raw: object) -> ua.Variant:
    """The Variant a write of `raw` to a point of `type_` sends (the exact built-in type: many
    servers refuse a Double for a Float variable). Integer types carry the int itself, never a
    float on the way (an Int64 of 9007199254740993 stays that). Raises ValueError for a value
    the type cannot hold."""
    vt = VARIANT_TYPES[type_]
    if type_ in INT_LIMITS:
        if isinstance(raw, float) and raw.is_integer():
            raw = int(raw)
        if not isinstance(raw, int):
            raise ValueError(f"{type(raw).__name__} is not an integer for a {type_} point")
        lo, hi = INT_LIMITS[type_]
        if not lo <= raw <= hi:
            raise ValueError(f"{raw} does not fit {type_} ({lo}..{hi})")
        return ua.Variant(int(raw), vt)
    if type_ in ("float32", "float64"):
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            raise ValueError(f"{type(raw).__name__} is not a number for a {type_} point")
        try:
            value = float(raw)
        except OverflowError:
            raise ValueError(f"the value does not fit {type_}") from None
        if type_ == "float32" and math.isfinite(value) and abs(value) > _FLOAT32_MAX:
            raise ValueError(f"{value:g} does not fit float32")
        return ua.Variant(value, vt)
    if type_ == "bool":
        return ua.Variant(bool(raw), vt)
    return ua.Variant(str(raw), vt)
