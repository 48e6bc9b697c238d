"""The Sparkplug B payload codec: every datatype round-trips, the bytes are protobuf as the
specification's sparkplug_b.proto defines them (checked against a decoder written here from the
field table, independent of the product's), and any bytes decode or fail with PayloadError."""

from __future__ import annotations

import struct

from edgegw.gateway.sinks.sparkplug import payload as pb
from host import walk
from hypothesis import given, settings
from hypothesis import strategies as st

VALUES = {
    pb.INT8: st.integers(-128, 127),
    pb.INT16: st.integers(-(2**15), 2**15 - 1),
    pb.INT32: st.integers(-(2**31), 2**31 - 1),
    pb.INT64: st.integers(-(2**63), 2**63 - 1),
    pb.UINT8: st.integers(0, 255),
    pb.UINT16: st.integers(0, 2**16 - 1),
    pb.UINT32: st.integers(0, 2**32 - 1),
    pb.UINT64: st.integers(0, 2**64 - 1),
    pb.FLOAT: st.floats(width=32, allow_nan=False),
    pb.DOUBLE: st.floats(allow_nan=False),
    pb.BOOLEAN: st.booleans(),
    pb.STRING: st.text(),
    pb.DATETIME: st.integers(0, 2**63 - 1),
}


@settings(max_examples=300)
@given(st.data())
def test_every_datatype_round_trips(data: st.DataObject) -> None:
    datatype = data.draw(st.sampled_from(sorted(VALUES)))
    value = data.draw(VALUES[datatype])
    m = pb.Metric(
        name=data.draw(st.none() | st.text(max_size=20)),
        alias=data.draw(st.none() | st.integers(0, 2**64 - 1)),
        timestamp=data.draw(st.integers(0, 2**63)),
        datatype=datatype,
        value=value,
        is_historical=data.draw(st.booleans()),
        properties={"Quality": (pb.INT32, 192), "engUnit": (pb.STRING, "°C"), "engLow": (pb.DOUBLE, -1.5)},
    )
    seq = data.draw(st.integers(0, 255))
    got = pb.decode_payload(pb.encode_payload(1_700_000_000_000, [m], seq))
    assert got.seq == seq and got.timestamp == 1_700_000_000_000
    (back,) = got.metrics
    assert back == m


def test_null_metric_and_null_property() -> None:
    m = pb.Metric(alias=7, timestamp=5, datatype=pb.DOUBLE, value=None, properties={"Quality": (pb.INT32, 0)})
    (back,) = pb.decode_payload(pb.encode_payload(1, [m], 0)).metrics
    assert back.is_null and back.value is None and back.properties == {"Quality": (pb.INT32, 0)}
    m = pb.Metric(name="x", datatype=pb.STRING, value="a", properties={"engUnit": (pb.STRING, None)})
    (back,) = pb.decode_payload(pb.encode_payload(None, [m], None)).metrics
    assert back.properties == {"engUnit": (pb.STRING, None)}


def _walk(b: bytes) -> list[tuple[int, object]]:
    """(field number, value) pairs, by the test host's reader (it shares nothing with the product's)."""
    return [(no, v) for no, _, v in walk(b)]


def test_wire_layout_is_the_specifications() -> None:
    m = pb.Metric(name="temp", alias=3, timestamp=1000, datatype=pb.INT16, value=-2)
    top = _walk(pb.encode_payload(42, [m], 9))
    assert top[0] == (1, 42) and top[-1] == (3, 9)  # Payload.timestamp = 1, seq = 3
    metric = dict(_walk(top[1][1]))  # Payload.metrics = 2
    assert metric[1] == b"temp" and metric[2] == 3 and metric[3] == 1000 and metric[4] == 2
    assert metric[10] == 0xFFFFFFFE  # Int16 in int_value as 32-bit two's complement
    d = dict(_walk(pb.encode_metric(pb.Metric(alias=1, datatype=pb.DOUBLE, value=2.5))))
    assert struct.unpack("<d", d[13])[0] == 2.5  # double_value = 13
    f = dict(_walk(pb.encode_metric(pb.Metric(alias=1, datatype=pb.FLOAT, value=2.5))))
    assert struct.unpack("<f", f[12])[0] == 2.5  # float_value = 12
    b = dict(_walk(pb.encode_metric(pb.Metric(alias=1, datatype=pb.BOOLEAN, value=True))))
    assert b[14] == 1  # boolean_value = 14
    h = dict(_walk(pb.encode_metric(pb.Metric(alias=1, datatype=pb.BOOLEAN, value=True, is_historical=True))))
    assert h[5] == 1  # is_historical = 5
    props = dict(
        _walk(
            pb.encode_metric(
                pb.Metric(name="n", datatype=pb.STRING, value="v", properties={"Quality": (pb.INT32, 192)})
            )
        )
    )
    ps = _walk(props[9])  # properties = 9: keys = 1, values = 2
    assert ps[0] == (1, b"Quality")
    pv = dict(_walk(ps[1][1]))
    assert pv[1] == pb.INT32 and pv[3] == 192  # PropertyValue.type = 1, int_value = 3


@settings(max_examples=1000)
@given(st.binary(max_size=64))
def test_any_bytes_decode_or_fail_plainly(data: bytes) -> None:
    try:
        pb.decode_payload(data)
    except pb.PayloadError as exc:
        assert str(exc)


def test_a_sample_becomes_ddata_metrics_in_the_queue(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The sink's submit, fast path and general path: good floats, an integer, a bad value, an
    uncertain one, and a float32 beyond what a Float holds (bad, not an exception)."""
    from pathlib import Path

    from edgegw.gateway.config.schema import SparkplugSettings
    from edgegw.gateway.dictionary import DictionaryEntry
    from edgegw.gateway.durable_queue import DurableQueue
    from edgegw.gateway.normalise import Reading, Sample
    from edgegw.gateway.sinks import DeviceInfo, SinkContext
    from edgegw.gateway.sinks.sparkplug.sink import SparkplugSink

    async def no_write(*_a: object) -> object:
        raise AssertionError("no writes here")

    queue = DurableQueue(Path(tmp_path) / "q.sqlite3", 64 * 1024**2)
    ctx = SinkContext("gw", queue, 0.02, lambda p: Path(p), no_write, Path(tmp_path))
    sink = SparkplugSink(SparkplugSettings(group_id="g", port=1), ctx)
    points = [
        DictionaryEntry(id="t", type="float32"),
        DictionaryEntry(id="d", type="float64"),
        DictionaryEntry(id="n", type="int16"),
        DictionaryEntry(id="b", type="float64"),
        DictionaryEntry(id="u", type="float64"),
    ]
    sink.add_device(DeviceInfo("dev", None, "modbus-tcp", {}, points))
    readings = [
        Reading("t", 1.5, "good"),
        Reading("d", 2.25, "good", ts=123),
        Reading("n", -7, "good"),
        Reading("b", None, "bad", "timeout"),
        Reading("u", 9.5, "uncertain"),
    ]
    sink.submit(Sample("dev", 1_700_000_000_000, readings))
    sink.submit(Sample("dev", 1_700_000_000_001, [Reading("t", 1e300, "good")]))
    queue.commit()
    rows = queue.after("sparkplug", 0, 10)
    first = pb.decode_payload(rows[0][2][8:])
    got = {m.alias: m for m in first.metrics}
    a = sink._devices["dev"].alias
    assert got[a["t"]].value == 1.5 and got[a["t"]].timestamp == 1_700_000_000_000
    assert got[a["d"]].value == 2.25 and got[a["d"]].timestamp == 123
    assert got[a["n"]].value == 4294967289  # int_value, 32-bit two's complement (no datatype in DDATA)
    assert got[a["b"]].is_null and got[a["b"]].properties == {"Quality": (pb.INT32, 0)}
    assert got[a["u"]].properties["qualityDetail"] == (pb.STRING, "uncertain") and got[a["u"]].value == 9.5
    (over,) = pb.decode_payload(rows[1][2][8:]).metrics
    assert over.is_null and over.properties["Quality"] == (pb.INT32, 0)
    assert all(m.is_historical for m in first.metrics)  # queued before any session's births
    queue.close()


def test_a_damaged_queued_row_is_dropped_and_delivery_goes_on(tmp_path, broker) -> None:  # type: ignore[no-untyped-def]
    """A queued row whose bytes are not metrics (a damaged disk page) must not stop the queue:
    it is settled and counted, and the rows after it are delivered. Real Mosquitto, real queue."""
    import asyncio
    import sys
    from pathlib import Path

    from edgegw.gateway.config.schema import SparkplugSettings
    from edgegw.gateway.dictionary import DictionaryEntry
    from edgegw.gateway.durable_queue import DurableQueue
    from edgegw.gateway.normalise import Reading, Sample
    from edgegw.gateway.sinks import DeviceInfo, SinkContext
    from edgegw.gateway.sinks.sparkplug.sink import SparkplugSink

    sys.path.insert(0, str(Path(__file__).parent))
    from host import Host

    _, port = broker
    host = Host(port)

    async def no_write(*_a: object) -> object:
        raise AssertionError("no writes here")

    async def main() -> SparkplugSink:
        queue = DurableQueue(Path(tmp_path) / "q.sqlite3", 64 * 1024**2)
        ctx = SinkContext("gw", queue, 0.02, lambda p: Path(p), no_write, Path(tmp_path))
        sink = SparkplugSink(SparkplugSettings(group_id="g", port=port), ctx)
        sink.add_device(DeviceInfo("dev", None, "modbus-tcp", {}, [DictionaryEntry(id="t", type="float64")]))
        queue.append("sparkplug", "dev", b"\x00" * 8 + b"\x12\x7f\xff")  # metrics cut short
        sink.submit(Sample("dev", 1_700_000_000_000, [Reading("t", 4.5, "good")]))
        queue.commit()
        await sink.start()
        for _ in range(200):
            if host.of("DDATA", "dev"):
                break
            await asyncio.sleep(0.05)
        await sink.stop(["dev"])
        queue.close()
        return sink

    try:
        sink = asyncio.run(main())
        (data,) = host.of("DDATA", "dev")
        (m,) = data.decoded["metrics"]
        assert m["value"] == 4.5 and m["is_historical"] and m["timestamp"] == 1_700_000_000_000
        assert sink.damaged == 1
    finally:
        host.stop()
