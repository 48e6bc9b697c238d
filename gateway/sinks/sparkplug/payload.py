"""Sparkplug B payloads: the protobuf wire format of the specification's `Payload` message,
written here from its field table (Sparkplug 3.0, chapter 6 "Payloads"; the message numbers are
those of the specification's sparkplug_b.proto) rather than generated, so that the gateway needs
no protobuf runtime and the hot path (DDATA metrics) is a few byte concatenations.

Only what an edge node sends and receives is covered: Payload {timestamp 1, metrics 2, seq 3},
Metric {name 1, alias 2, timestamp 3, datatype 4, is_historical 5, is_transient 6, is_null 7,
properties 9, and the scalar values 10-16}, PropertySet {keys 1, values 2} and PropertyValue
{type 1, is_null 2, values 3-8}. Datasets, templates and extensions in a received payload are
skipped. `decode_payload` raises `PayloadError` for any input that is not such a payload.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

# Sparkplug B data types (specification 6.4.16)
INT8, INT16, INT32, INT64 = 1, 2, 3, 4
UINT8, UINT16, UINT32, UINT64 = 5, 6, 7, 8
FLOAT, DOUBLE, BOOLEAN, STRING, DATETIME, TEXT = 9, 10, 11, 12, 13, 14
BYTES = 17

_INT32_TYPES = {INT8, INT16, INT32, UINT8, UINT16, UINT32}
_INT64_TYPES = {INT64, UINT64, DATETIME}
_SIGNED_BITS = {INT8: 8, INT16: 16, INT32: 32, INT64: 64}

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5
_F64 = struct.Struct("<d")
_F32 = struct.Struct("<f")


class PayloadError(ValueError):
    """Bytes that are not a Sparkplug B payload."""


# ---- encoding ----


def varint(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _key(field_no: int, wire: int) -> bytes:
    return varint(field_no << 3 | wire)


def _len(field_no: int, data: bytes) -> bytes:
    return _key(field_no, _LEN) + varint(len(data)) + data


def value_field(datatype: int, value: object, base: int) -> bytes:
    """A value in the oneof of a Metric (base 10) or a PropertyValue (base 3): int_value,
    long_value, float_value, double_value, boolean_value, string_value, bytes_value."""
    if datatype in _INT32_TYPES:
        return _key(base, _VARINT) + varint(int(value) & 0xFFFFFFFF)  # type: ignore[call-overload]
    if datatype in _INT64_TYPES:
        return _key(base + 1, _VARINT) + varint(int(value) & 0xFFFFFFFFFFFFFFFF)  # type: ignore[call-overload]
    if datatype == FLOAT:
        return _key(base + 2, _I32) + _F32.pack(float(value))  # type: ignore[arg-type]
    if datatype == DOUBLE:
        return _key(base + 3, _I64) + _F64.pack(float(value))  # type: ignore[arg-type]
    if datatype == BOOLEAN:
        return _key(base + 4, _VARINT) + (b"\x01" if value else b"\x00")
    if datatype in (STRING, TEXT):
        return _len(base + 5, str(value).encode())
    if datatype == BYTES and base == 10:
        return _len(16, bytes(value))  # type: ignore[call-overload]
    raise ValueError(f"datatype {datatype} is not supported here")


@dataclass(slots=True)
class Metric:
    name: str | None = None
    alias: int | None = None
    timestamp: int | None = None
    datatype: int | None = None
    value: object = None
    is_null: bool = False
    is_historical: bool = False
    is_transient: bool = False
    # name -> (datatype, value or None for a null property)
    properties: dict[str, tuple[int, object]] = field(default_factory=dict)


def encode_properties(props: dict[str, tuple[int, object]]) -> bytes:
    keys = b"".join(_len(1, k.encode()) for k in props)
    values = b""
    for datatype, value in props.values():
        body = _key(1, _VARINT) + varint(datatype)
        body += _key(2, _VARINT) + b"\x01" if value is None else value_field(datatype, value, 3)
        values += _len(2, body)
    return keys + values


def encode_metric(m: Metric) -> bytes:
    """One Metric message (without the Payload's field key and length)."""
    out = b""
    if m.name is not None:
        out += _len(1, m.name.encode())
    if m.alias is not None:
        out += _key(2, _VARINT) + varint(m.alias)
    if m.timestamp is not None:
        out += _key(3, _VARINT) + varint(m.timestamp)
    if m.datatype is not None:
        out += _key(4, _VARINT) + varint(m.datatype)
    if m.is_historical:
        out += b"\x28\x01"  # field 5, varint 1
    if m.is_transient:
        out += b"\x30\x01"
    if m.is_null or m.value is None:
        out += b"\x38\x01"  # field 7
    if m.properties:
        out += _len(9, encode_properties(m.properties))
    if not (m.is_null or m.value is None):
        if m.datatype is None:
            raise ValueError("a metric with a value needs its datatype to encode it")
        out += value_field(m.datatype, m.value, 10)
    return out


def metric_entry(encoded_metric: bytes) -> bytes:
    """An encoded Metric as an entry of Payload.metrics (field 2)."""
    return b"\x12" + varint(len(encoded_metric)) + encoded_metric


def encode_payload(timestamp: int | None, metrics: list[Metric] | bytes, seq: int | None) -> bytes:
    """A Payload; `metrics` may be already encoded entries (metric_entry of each)."""
    out = b"" if timestamp is None else b"\x08" + varint(timestamp)
    out += (
        metrics if isinstance(metrics, bytes) else b"".join(metric_entry(encode_metric(m)) for m in metrics)
    )
    if seq is not None:
        out += b"\x18" + varint(seq)
    return out


# ---- decoding ----


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise PayloadError("truncated varint")
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise PayloadError("varint longer than 64 bits")


def fields(data: bytes) -> list[tuple[int, int, object]]:
    """(field number, wire type, value) of a protobuf message: ints for varints, bytes for
    length-delimited fields and fixed-width fields."""
    out: list[tuple[int, int, object]] = []
    pos = 0
    while pos < len(data):
        key, pos = _read_varint(data, pos)
        no, wire = key >> 3, key & 7
        if no == 0:
            raise PayloadError("field number 0")
        if wire == _VARINT:
            v, pos = _read_varint(data, pos)
            out.append((no, wire, v))
        elif wire == _I64:
            if pos + 8 > len(data):
                raise PayloadError("truncated 64-bit field")
            out.append((no, wire, data[pos : pos + 8]))
            pos += 8
        elif wire == _I32:
            if pos + 4 > len(data):
                raise PayloadError("truncated 32-bit field")
            out.append((no, wire, data[pos : pos + 4]))
            pos += 4
        elif wire == _LEN:
            n, pos = _read_varint(data, pos)
            if pos + n > len(data):
                raise PayloadError("truncated length-delimited field")
            out.append((no, wire, data[pos : pos + n]))
            pos += n
        else:
            raise PayloadError(f"wire type {wire} is not used by Sparkplug")
    return out


def _signed(v: int, bits: int) -> int:
    v &= (1 << bits) - 1
    return v - (1 << bits) if v >> (bits - 1) else v


def _value(datatype: int | None, no: int, wire: int, raw: object, base: int) -> object:
    k = no - base
    if k in (0, 1):
        if wire != _VARINT:
            raise PayloadError("an integer value that is not a varint")
        v = int(raw)  # type: ignore[call-overload]
        bits = _SIGNED_BITS.get(datatype or 0)
        return _signed(v, 32 if bits and bits <= 32 else 64) if bits else v
    if k == 2:
        if wire != _I32:
            raise PayloadError("a float value that is not 32-bit")
        return _F32.unpack(raw)[0]  # type: ignore[arg-type]
    if k == 3:
        if wire != _I64:
            raise PayloadError("a double value that is not 64-bit")
        return _F64.unpack(raw)[0]  # type: ignore[arg-type]
    if k == 4:
        return bool(raw)
    if k == 5:
        if wire != _LEN:
            raise PayloadError("a string value that is not length-delimited")
        try:
            return bytes(raw).decode()  # type: ignore[call-overload]
        except UnicodeDecodeError:
            raise PayloadError("a string value that is not UTF-8") from None
    return raw  # bytes_value (metric only)


def _properties(data: bytes) -> dict[str, tuple[int, object]]:
    keys: list[str] = []
    values: list[tuple[int, object]] = []
    for no, wire, raw in fields(data):
        if no == 1 and wire == _LEN:
            try:
                keys.append(bytes(raw).decode())  # type: ignore[call-overload]
            except UnicodeDecodeError:
                raise PayloadError("a property name that is not UTF-8") from None
        elif no == 2 and wire == _LEN:
            datatype, value = 0, None
            for pno, pwire, praw in fields(bytes(raw)):  # type: ignore[call-overload]
                if pno == 1 and pwire == _VARINT:
                    datatype = int(praw)  # type: ignore[call-overload]
            for pno, pwire, praw in fields(bytes(raw)):  # type: ignore[call-overload]
                if 3 <= pno <= 8:
                    value = _value(datatype, pno, pwire, praw, 3)
            values.append((datatype, value))
    if len(keys) != len(values):
        raise PayloadError(f"{len(keys)} property names for {len(values)} values")
    return dict(zip(keys, values, strict=True))


def decode_metric(data: bytes) -> Metric:
    m = Metric()
    found = fields(data)
    for no, wire, raw in found:
        if no == 4 and wire == _VARINT:
            m.datatype = int(raw)  # type: ignore[call-overload]
    for no, wire, raw in found:
        if no == 1:
            if wire != _LEN:
                raise PayloadError("a metric name that is not length-delimited")
            try:
                m.name = bytes(raw).decode()  # type: ignore[call-overload]
            except UnicodeDecodeError:
                raise PayloadError("a metric name that is not UTF-8") from None
        elif no in (2, 3) and wire == _VARINT:
            if no == 2:
                m.alias = int(raw)  # type: ignore[call-overload]
            else:
                m.timestamp = int(raw)  # type: ignore[call-overload]
        elif no in (5, 6, 7) and wire == _VARINT:
            setattr(m, {5: "is_historical", 6: "is_transient", 7: "is_null"}[no], bool(raw))
        elif no == 9 and wire == _LEN:
            m.properties = _properties(bytes(raw))  # type: ignore[call-overload]
        elif 10 <= no <= 16:
            m.value = _value(m.datatype, no, wire, raw, 10)
    return m


@dataclass(slots=True)
class Payload:
    timestamp: int | None = None
    seq: int | None = None
    metrics: list[Metric] = field(default_factory=list)


def decode_payload(data: bytes) -> Payload:
    p = Payload()
    for no, wire, raw in fields(data):
        if no == 1 and wire == _VARINT:
            p.timestamp = int(raw)  # type: ignore[call-overload]
        elif no == 2 and wire == _LEN:
            p.metrics.append(decode_metric(bytes(raw)))  # type: ignore[call-overload]
        elif no == 3 and wire == _VARINT:
            p.seq = int(raw)  # type: ignore[call-overload]
    return p
