"""The DL/T 645 driver against the simulated meters on a real pty pair, in one event loop: a
silent meter costs the bus one timeout per poll and is unreachable while the other meter reads;
a late reply to a timed-out request is passed over instead of being taken for the next value;
and each kind of reply maps to a value or to a reason."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
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
        try:
            drivers = {}
            for r in loaded.devices:
                dev = loaded.config.devices[r.index]
                drivers[dev.id] = plugin_for(dev.protocol).build_driver(loaded, dev, r.points, r.plan)
            a, b = drivers["meter-a"], drivers["meter-b"]
            assert all(not isinstance(v, PointError) for v in await a.read())

            # silent: one timeout for the whole poll (the other requests are skipped), then
            # unreachable; the other meter on the bus reads as before
            sim.devices["meter-a"].set_fault(Fault("silent"))
            started = time.monotonic()
            with pytest.raises(DeviceUnreachable, match=r"no response from meter 000000000001 within 0\.2s"):
                await a.read()
            assert time.monotonic() - started < 0.35
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
        finally:
            await sim.stop()
            for bus in list(MeterBus._buses.values()):
                bus.close()

    asyncio.run(scenario())


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
