"""The DL/T 645 driver against the simulated meters on a real pty pair, in one event loop: a
silent meter costs the bus one timeout per poll and is unreachable while the other meter reads;
a late reply to a timed-out request (a normal one or an abnormal one) is passed over instead of
being taken for the next value; line noise that looks like a header does not hide the reply; the
port is closed when the last meter on it stops, and a stopped gateway started again in the same
process opens it anew; a port that opens late or fails right after opening is not left open; and
each kind of reply maps to a value or to a reason."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import ClassVar

import pytest
import serial
from edgegw.drivers.base import DeviceUnreachable, PointError
from edgegw.drivers.dlt645.checks import Dlt645Plan, MeterPoint
from edgegw.drivers.dlt645.codec import Frame, address_bytes, encode, parse_format
from edgegw.drivers.dlt645.driver import Dlt645Driver, MeterBus
from edgegw.drivers.registry import plugin_for
from edgegw.gateway.config import load_config
from edgegw.simulators.faults import Fault
from edgegw.simulators.runner import build_simulators

CONFIG = """
gateway: {{id: gw-drv, data_dir: {tmp}/data}}
devices:
  - id: meter-a
    protocol: dlt645
    connection: {{port: {tmp}/tty/bus, baudrate: 115200, parity: N, address: "000000000001", timeout: 200ms}}
    points:
      - {{id: energy, type: float64, dlt645: {{di: "00010000"}}}}
      - {{id: voltage, type: float64, range: [200, 240], dlt645: {{di: "02010100"}}}}
      - {{id: current, type: float64, range: [0, 50], dlt645: {{di: "02020100"}}}}
  - id: meter-b
    protocol: dlt645
    connection: {{port: {tmp}/tty/bus, baudrate: 115200, parity: N, address: "000000000002", timeout: 200ms}}
    points:
      - {{id: voltage, type: float64, range: [200, 240], dlt645: {{di: "02010100"}}}}
"""


def test_silent_meter_and_late_replies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEGW_DLT645_TURNAROUND", "0.002")
    path = tmp_path / "c.yaml"
    path.write_text(CONFIG.format(tmp=tmp_path))
    loaded = load_config(str(path))

    async def scenario() -> None:
        (sim,) = build_simulators(loaded, "127.0.0.1", 60.0)
        await sim.start()
        drivers = {}
        try:
            for r in loaded.devices:
                dev = loaded.config.devices[r.index]
                drivers[dev.id] = plugin_for(dev.protocol).build_driver(loaded, dev, r.points, r.plan)
            a, b = drivers["meter-a"], drivers["meter-b"]
            assert all(not isinstance(v, PointError) for v in await a.read())

            # silent: one timeout for the whole poll (the other requests are skipped), then
            # unreachable; the other meter on the bus reads as before
            sim.devices["meter-a"].set_fault(Fault("silent"))
            requests, errors = a.request_count, a.error_count
            with pytest.raises(DeviceUnreachable, match=r"no response from meter 000000000001 within 0\.2s"):
                await a.read()
            assert (a.request_count - requests, a.error_count - errors) == (1, 1)  # one request, not three
            assert not isinstance((await b.read())[0], PointError)

            # slow beyond the timeout: its late replies arrive while later requests wait, and
            # are passed over (their DI is not the one asked)
            sim.devices["meter-a"].set_fault(Fault("slow", delay=0.25))
            with pytest.raises(DeviceUnreachable):
                await a.read()
            sim.devices["meter-a"].set_fault(Fault())
            for _ in range(3):
                values = await a.read()
                assert all(not isinstance(v, PointError) for v in values), values

            # an abnormal reply (no DI in it) to a request that timed out: it arrives while the
            # meter's next request would wait, and must not become that request's answer
            unknown = MeterPoint("frequency", 0x02800002, parse_format("XX.XX"), "float64")
            other = Dlt645Driver(a.bus, "000000000001", 0.2, [unknown])  # a DI the meter lacks: ERR
            sim.devices["meter-a"].set_fault(Fault("slow", delay=0.3))
            with pytest.raises(DeviceUnreachable):
                await other.read()
            sim.devices["meter-a"].set_fault(Fault())
            values = await a.read()
            assert all(not isinstance(v, PointError) for v in values), values
            await other.close()

            # line noise before each reply, with a fake header announcing 255 data bytes
            sim.devices["meter-a"].set_fault(Fault("garbage"))
            for _ in range(2):
                values = await a.read()
                assert all(not isinstance(v, PointError) for v in values), values
            sim.devices["meter-a"].set_fault(Fault())
        finally:
            await sim.stop()
            for d in drivers.values():
                await d.close()
        assert MeterBus._buses == {}

    asyncio.run(scenario())


def test_the_port_is_released_when_the_meters_stop(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(CONFIG.format(tmp=tmp_path))
    loaded = load_config(str(path))
    port = str(tmp_path / "tty" / "bus")

    def build() -> dict[str, Dlt645Driver]:
        drivers = {}
        for r in loaded.devices:
            dev = loaded.config.devices[r.index]
            d = plugin_for(dev.protocol).build_driver(loaded, dev, r.points, r.plan)
            assert isinstance(d, Dlt645Driver)
            drivers[dev.id] = d
        return drivers

    async def run(stop: bool) -> None:
        (sim,) = build_simulators(loaded, "127.0.0.1", 60.0)
        await sim.start()
        try:
            a, b = build().values()
            assert a.bus is b.bus
            assert not isinstance((await a.read())[0], PointError)
            assert not isinstance((await b.read())[0], PointError)
            if not stop:
                return  # the loop ends with the port open: a gateway that did not stop its meters
            await a.close()
            assert b.connected  # meter-b still runs on the port
            assert not isinstance((await b.read())[0], PointError)
            await b.close()
            assert not b.connected and port not in MeterBus._buses
            # nothing holds the port: another program can open it for itself
            serial.Serial(port, exclusive=True).close()
            # a meter read again after stopping (a restarted device) opens the port again
            assert not isinstance((await a.read())[0], PointError)
            await a.close()
            assert port not in MeterBus._buses
        finally:
            await sim.stop()

    asyncio.run(run(stop=True))
    # a gateway started again in the same process: the bus left from the old event loop is
    # closed and replaced, not reused with its old loop's reader and locks
    asyncio.run(run(stop=False))
    asyncio.run(run(stop=True))
    assert MeterBus._buses == {}


class _SlowSerial:
    """An open that finishes after the driver gave up on it, or a port that fails at once."""

    opened: ClassVar[list[_SlowSerial]] = []
    delay = 0.3
    fails_after_open = False

    def __init__(self, port: str, **kwargs: object) -> None:
        time.sleep(self.delay)
        self.closed = False
        _SlowSerial.opened.append(self)

    def reset_input_buffer(self) -> None:
        if self.fails_after_open:
            raise OSError(5, "Input/output error")

    def fileno(self) -> int:
        raise AssertionError("not reached")

    def close(self) -> None:
        self.closed = True


def test_a_port_that_opens_late_or_fails_after_opening_is_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = tmp_path / "ttyUSB9"
    port.touch()
    monkeypatch.setattr(serial, "Serial", _SlowSerial)
    monkeypatch.setattr(MeterBus, "OPEN_TIMEOUT", 0.05)
    _SlowSerial.opened = []

    async def scenario() -> None:
        bus = MeterBus(str(port), (2400, 8, "E", 1.0))
        with pytest.raises(DeviceUnreachable, match=r"opening took longer than 0\.05s"):
            await bus.open()
        assert not bus.connected
        for _ in range(100):
            if _SlowSerial.opened and _SlowSerial.opened[0].closed:
                break
            await asyncio.sleep(0.02)
        assert [s.closed for s in _SlowSerial.opened] == [True]  # closed when its open finished

        _SlowSerial.delay, _SlowSerial.fails_after_open = 0.0, True
        with pytest.raises(DeviceUnreachable, match=r"failed after opening: .*Input/output error"):
            await bus.open()
        assert not bus.connected
        assert [s.closed for s in _SlowSerial.opened] == [True, True]

    try:
        asyncio.run(scenario())
    finally:
        _SlowSerial.delay, _SlowSerial.fails_after_open = 0.3, False


def _driver() -> tuple[Dlt645Driver, MeterPoint]:
    point = MeterPoint("voltage", 0x02010100, parse_format("XXX.X"), "float64")
    bus = MeterBus("/nonexistent", (2400, 8, "E", 1.0))
    return Dlt645Driver(bus, "000000001234", 1.0, Dlt645Plan([point]).points), point


def _reply(control: int, data: bytes) -> Frame:
    return Frame(address_bytes("000000001234"), control, data)


def test_replies_map_to_values_or_reasons() -> None:
    d, p = _driver()
    di = (0x02010100).to_bytes(4, "little")
    value = encode(p.format, 231.4)
    assert d._value(p, _reply(0x91, di + value)) == 231.4
    # follow-up frames announced: the value is used when it is whole
    assert d._value(p, _reply(0xB1, di + value)) == 231.4
    short = d._value(p, _reply(0xB1, di + value[:1]))
    assert isinstance(short, PointError) and "follow-up frames" in short.reason
    err = d._value(p, _reply(0xD1, b"\x04"))
    assert err == PointError("meter answered ERR 0x04: password error or unauthorised (DI 02010100)")
    both = d._value(p, _reply(0xD1, b"\x12"))
    assert isinstance(both, PointError) and "no requested data, annual time zones exceeded" in both.reason
    not_bcd = d._value(p, _reply(0x91, di + b"\x4a\x23"))
    assert isinstance(not_bcd, PointError) and "234A is not BCD" in not_bcd.reason
    wrong_len = d._value(p, _reply(0x91, di + b"\x00\x00\x00"))
    assert isinstance(wrong_len, PointError) and "format XXX.X needs 2" in wrong_len.reason
    other = d._value(p, _reply(0x94, b""))
    assert isinstance(other, PointError) and "control code 94" in other.reason
