"""Write-back checks: exact integers, integer answers, and any JSON value either written or
refused with WriteRejected("bad_value"); then the drivers keep an int64 exact on the wire, to
a real pymodbus server and a real asyncua server on loopback, read back through the driver."""

from __future__ import annotations

import asyncio
import math
from fractions import Fraction
from typing import Any

import pytest
from asyncua import Server, ua
from edgegw.drivers.base import INT_LIMITS, WriteFailed
from edgegw.drivers.modbus.codec import BlockDecoder, RegisterPoint, encode_value
from edgegw.drivers.modbus.tcp import ModbusTcpDriver
from edgegw.drivers.opcua.driver import OpcuaDriver, OpcuaPoint
from edgegw.drivers.opcua.values import variant
from edgegw.gateway.dictionary import DictionaryEntry
from edgegw.gateway.writeback import CheckedWrite, WriteRejected, check_write
from harness import free_port
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

BEYOND_FLOAT = 9007199254740993  # 2**53 + 1: the nearest float is 2**53


def entry(type_: str, **kw: Any) -> DictionaryEntry:
    return DictionaryEntry("p", type_, access="rw", **kw)


def refused(e: DictionaryEntry, value: object) -> str:
    with pytest.raises(WriteRejected) as info:
        check_write(e, value)
    assert info.value.kind == "bad_value"
    return info.value.reason


# ---- examples ----


@pytest.mark.parametrize(
    ("type_", "value"),
    [
        ("int64", BEYOND_FLOAT),
        ("int64", -BEYOND_FLOAT),
        ("int64", 2**63 - 1),
        ("int64", -(2**63)),
        ("uint64", 2**64 - 1),
        ("uint64", 18446744073709551557),
        ("uint32", 2**32 - 1),
    ],
)
def test_integers_stay_exact(type_: str, value: int) -> None:
    w = check_write(entry(type_), value)
    assert w.raw == value and type(w.raw) is int
    assert w.value == value and type(w.value) is int


def test_an_integer_point_answers_with_an_int() -> None:
    assert check_write(entry("uint16"), 4321) == CheckedWrite("p", 4321, 4321)
    w = check_write(entry("uint16"), 4321.0)
    assert type(w.raw) is int and type(w.value) is int and w.value == 4321
    w = check_write(entry("int16", scale=0.5), 3)
    assert (w.raw, w.value, type(w.value)) == (6, 3, int)
    w = check_write(entry("int16", scale=0.1), 25.3)
    assert (w.raw, w.value) == (253, 25.3)
    w = check_write(entry("int32", scale=0.1, offset=-40.0), 21.7)
    assert (w.raw, w.value) == (617, 21.7)


def test_scaled_integers_round_the_decimal_value_to_nearest_ties_to_even() -> None:
    # 0.15 / 0.1 is 1.4999999999999998 in binary floats; the decimals say 1.5 exactly
    assert check_write(entry("int16", scale=0.1), 0.15).raw == 2
    assert check_write(entry("int16", scale=0.1), 0.25).raw == 2
    assert check_write(entry("int16", scale=0.1), 0.26).raw == 3
    assert check_write(entry("uint16", scale=10.0), 25).raw == 2
    assert check_write(entry("uint16", scale=10.0), 35).raw == 4
    # beyond 2**53 with a scale: still exact
    assert check_write(entry("int64", scale=2.0), 2 * BEYOND_FLOAT).raw == BEYOND_FLOAT
    assert check_write(entry("int64", offset=1.0), BEYOND_FLOAT + 1).raw == BEYOND_FLOAT


def _deep(n: int) -> list[Any]:
    out: list[Any] = []
    for _ in range(n):
        out = [out]
    return out


@pytest.mark.parametrize(
    "value",
    [
        10**400,
        -(10**400),
        1e308,
        -1e308,
        float("nan"),
        float("inf"),
        "5",
        "NaN",
        None,
        [1],
        {"value": 1},
        _deep(100_000),
        True,
    ],
)
@pytest.mark.parametrize(
    "e",
    [
        entry("int64"),
        entry("uint16", scale=0.1),
        entry("float32"),
        entry("float64", scale=1e-3),
        entry("int32", range=(0.0, 100.0)),
        entry("float64", range=(-1e9, 1e9)),
    ],
    ids=["int64", "uint16-scaled", "float32", "float64-scaled", "int32-range", "float64-range"],
)
def test_odd_values_are_refused_as_bad_values(e: DictionaryEntry, value: object) -> None:
    reason = refused(e, value)
    assert len(reason) < 300  # a 400-digit number is not spelled out


def test_refusals_say_why() -> None:
    assert refused(entry("int64"), 10**400) == (
        "1.000000e+400 does not fit int64 (-9223372036854775808..9223372036854775807)"
    )
    assert refused(entry("int32", range=(0.0, 100.0)), 10**400) == (
        "1.000000e+400 is outside the point's range [0, 100]"
    )
    assert refused(entry("float64"), 10**400) == "1.000000e+400 does not fit float64"
    assert refused(entry("float64", scale=1e-3), 1e308) == "1e+308 does not fit float64 after scale/offset"
    assert refused(entry("uint16", scale=0.1), 7000) == (
        "7000 does not fit uint16 after scale/offset (raw 70000, 0..65535)"
    )
    assert refused(entry("int16"), "5") == "point 'p' is int16: send a number"


# ---- properties ----

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(-(10**400), 10**400)
    | st.floats()
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
    max_leaves=12,
)
NUMBERS = (
    st.integers(-(2**65), 2**65)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.floats(-1e6, 1e6)
    | st.decimals(-(10**6), 10**6, places=3, allow_nan=False, allow_infinity=False).map(float)
)
NUMERIC_TYPES = [*sorted(INT_LIMITS), "float32", "float64"]
SCALES = st.sampled_from([1.0, 0.1, 0.01, 0.001, 0.5, 10.0, 100.0, -1.0, 0.25, 3.0]) | st.floats(
    1e-6, 1e6
).flatmap(lambda s: st.sampled_from([s, -s]))
OFFSETS = st.sampled_from([0.0, -40.0, 273.15, 0.1]) | st.floats(-1e6, 1e6)
RANGES = st.none() | st.tuples(st.floats(-1e12, 1e12), st.floats(-1e12, 1e12)).map(lambda r: (min(r), max(r)))
POINTS = st.builds(
    lambda t, s, o, r: entry(t, scale=s, offset=o, range=r),
    st.sampled_from(NUMERIC_TYPES),
    SCALES,
    OFFSETS,
    RANGES,
)


def _exact(x: float | int) -> Fraction:
    return Fraction(repr(x)) if isinstance(x, float) else Fraction(x)


def assert_written_or_refused(e: DictionaryEntry, value: object) -> None:
    try:
        w = check_write(e, value)
    except WriteRejected as exc:
        assert exc.kind == "bad_value" and exc.reason
        return
    assert isinstance(w, CheckedWrite)
    assert isinstance(value, int | float) and not isinstance(value, bool)
    if e.range is not None:
        assert e.range[0] <= value <= e.range[1]
    if e.type in INT_LIMITS:
        lo, hi = INT_LIMITS[e.type]
        assert type(w.raw) is int and lo <= w.raw <= hi
        # nearest integer of the exact decimal arithmetic, ties to even
        assert w.raw == round((_exact(value) - _exact(e.offset)) / _exact(e.scale))
        engineering = w.raw * _exact(e.scale) + _exact(e.offset)
        if engineering.denominator == 1:
            assert type(w.value) is int and w.value == engineering
        else:
            assert type(w.value) is float and w.value == float(engineering)
    else:
        assert type(w.raw) is float and math.isfinite(w.raw)
        if e.type == "float32":
            assert abs(w.raw) <= 3.4028234663852886e38
        assert w.value == value


@settings(max_examples=1500, deadline=None)
@given(POINTS, JSON)
@example(entry("int64"), 10**400)
@example(entry("uint16", scale=0.1), 10**400)
@example(entry("float32"), 10**400)
@example(entry("float64", scale=1e-300), 1e10)
def test_any_json_value_is_written_or_refused(e: DictionaryEntry, value: object) -> None:
    assert_written_or_refused(e, value)


@settings(max_examples=3000, deadline=None)
@given(POINTS, NUMBERS)
@example(entry("int16", scale=0.1), 0.15)
@example(entry("int64", scale=0.1, offset=0.1), 922337203685477580.7)
@example(entry("uint64", scale=3.0), 2**64)
def test_numbers_take_the_exact_nearest_raw_value(e: DictionaryEntry, value: int | float) -> None:
    assert_written_or_refused(e, value)


@settings(max_examples=500, deadline=None)
@given(
    st.sampled_from(["int64", "uint64"]).flatmap(lambda t: st.tuples(st.just(t), st.integers(*INT_LIMITS[t])))
)
@example(("int64", BEYOND_FLOAT))
@example(("uint64", 2**64 - 1))
def test_64_bit_integers_round_trip_exactly_at_scale_1(type_and_value: tuple[str, int]) -> None:
    type_, value = type_and_value
    w = check_write(entry(type_), value)
    assert w.raw == value and w.value == value and type(w.raw) is int and type(w.value) is int


# ---- the drivers keep integers exact ----


@pytest.mark.parametrize("order", ["ABCD", "DCBA", "BADC", "CDAB"])
def test_modbus_codec_encodes_int64_without_floats(order: str) -> None:
    for type_, value in (("int64", BEYOND_FLOAT), ("int64", -BEYOND_FLOAT), ("uint64", 2**64 - 1)):
        p = RegisterPoint("x", "hr", 0, type_, byte_order=order)
        regs = encode_value(p, value)
        assert BlockDecoder(0, 4, [p]).decode(regs) == [value]
    p = RegisterPoint("x", "hr", 0, "int64")
    assert encode_value(p, BEYOND_FLOAT) == [0x0020, 0, 0, 1]


def test_modbus_tcp_writes_int64_exactly_to_a_real_server() -> None:
    points = [
        RegisterPoint("total", "hr", 10, "int64"),
        RegisterPoint("total_cdab", "hr", 20, "int64", byte_order="CDAB"),
        RegisterPoint("counter", "hr", 30, "uint64"),
    ]
    e_int, e_uint = entry("int64"), entry("uint64")

    async def main() -> list[object]:
        port = free_port()
        blocks = [SimData(0, count=64, values=0, datatype=DataType.REGISTERS)]
        bits = [SimData(0, count=16, values=0, datatype=DataType.BITS)]
        server = ModbusTcpServer(
            [SimDevice(id=1, simdata=(bits, bits, blocks, blocks))], address=("127.0.0.1", port)
        )
        task = asyncio.create_task(server.serve_forever())
        for _ in range(100):
            if server.transport is not None:
                break
            await asyncio.sleep(0.01)
        driver = ModbusTcpDriver("127.0.0.1", port, 1, 2.0, points)
        try:
            await driver.write("total", check_write(e_int, BEYOND_FLOAT).raw)
            await driver.write("total_cdab", check_write(e_int, -BEYOND_FLOAT).raw)
            await driver.write("counter", check_write(e_uint, 2**64 - 1).raw)
            return await driver.read()
        finally:
            await driver.close()
            await server.shutdown()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    assert asyncio.run(main()) == [BEYOND_FLOAT, -BEYOND_FLOAT, 2**64 - 1]


def test_opcua_variant_carries_the_int_itself() -> None:
    v = variant("int64", BEYOND_FLOAT)
    assert v.Value == BEYOND_FLOAT and type(v.Value) is int and v.VariantType == ua.VariantType.Int64
    assert variant("uint16", 5.0).Value == 5 and type(variant("uint16", 5.0).Value) is int
    assert type(variant("float64", 5).Value) is float
    for type_, raw in (
        ("int16", 1.5),
        ("int16", 2**15),
        ("uint64", -1),
        ("float32", 1e39),
        ("float64", 10**400),
    ):
        with pytest.raises(ValueError):
            variant(type_, raw)


def test_opcua_writes_int64_exactly_to_a_real_server() -> None:
    async def main() -> tuple[list[object], list[object], BaseException | None]:
        port = free_port()
        endpoint = f"opc.tcp://127.0.0.1:{port}"
        server = Server()
        await server.init()
        server.set_endpoint(endpoint)
        ns = await server.register_namespace("urn:test:meter")
        meter = await server.nodes.objects.add_object(ua.NodeId("Meter", ns), "Meter")
        for name, vt in (("Total", ua.VariantType.Int64), ("Counter", ua.VariantType.UInt64)):
            var = await meter.add_variable(ua.NodeId(name, ns), name, ua.Variant(0, vt))
            await var.set_writable()
        await server.start()
        points = [
            OpcuaPoint("total", f"ns={ns};s=Total", "int64"),
            OpcuaPoint("counter", f"ns={ns};s=Counter", "uint64"),
        ]
        driver = OpcuaDriver("meter", endpoint, points, timeout=4.0)
        try:
            await driver.write("total", check_write(entry("int64"), BEYOND_FLOAT).raw)
            await driver.write("counter", check_write(entry("uint64"), 2**64 - 1).raw)
            first = await driver.read()
            await driver.write("total", check_write(entry("int64"), -BEYOND_FLOAT).raw)
            second = await driver.read()
            try:
                await driver.write("total", 1.5)  # no integer: the driver's own refusal
                failure = None
            except Exception as exc:
                failure = exc
            return first, second, failure
        finally:
            await driver.close()
            await server.stop()

    first, second, failure = asyncio.run(main())
    assert first == [BEYOND_FLOAT, 2**64 - 1]
    assert second == [-BEYOND_FLOAT, 2**64 - 1]
    assert isinstance(failure, WriteFailed) and "float is not an integer" in str(failure)


def test_a_large_float_is_the_integer_its_decimal_names() -> None:
    """Found by the property above: 6.486852949784297e+16 as JSON names 64868529497842970; the
    binary float nearest to it is ...968, which must not be what reaches the device."""
    e = DictionaryEntry("p", "int64", access="rw")
    assert check_write(e, 6.486852949784297e16).raw == 64868529497842970
    assert_written_or_refused(e, 6.486852949784297e16)
