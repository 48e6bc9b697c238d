"""The MC driver against the plugin's simulator over real TCP on loopback: every device kind
and type decoded exactly (binary and ASCII, Q/L and iQ-R subcommands, octal X on iQ-F),
writes landing in the simulator's memory, a refused range retried point by point, a PLC that
restarts, one that hangs, one that sends garbage."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from edgegw.drivers.base import DeviceUnreachable, PointError, WriteFailed, WriteTimeout
from edgegw.drivers.mc.driver import RETRY_REFUSED, McDriver
from edgegw.drivers.mc.simulator import McSimulator
from edgegw.drivers.registry import plugin_for
from edgegw.gateway.config import load_config
from edgegw.simulators.faults import Fault
from edgegw.simulators.runner import build_simulators
from harness import free_port

POINTS = """
      - {id: temp,     type: int16,   mc: {address: D100}, access: rw}
      - {id: word,     type: uint16,  mc: {address: D101}}
      - {id: counter,  type: int32,   mc: {address: D200}, access: rw}
      - {id: dword,    type: uint32,  mc: {address: D202}}
      - {id: real,     type: float32, mc: {address: D204}}
      - {id: hiword,   type: int32,   mc: {address: D206}, byte_order: ABCD}
      - {id: big,      type: uint64,  mc: {address: D210}}
      - {id: small,    type: int64,   mc: {address: D214}}
      - {id: lreal,    type: float64, mc: {address: D218}}
      - {id: flag,     type: bool,    mc: {address: D300.3}}
      - {id: flag_f,   type: bool,    mc: {address: D300.F}}
      - {id: lowbyte,  type: uint8,   mc: {address: D301}}
      - {id: sbyte,    type: int8,    mc: {address: D302}}
      - {id: name,     type: string,  length: 7, mc: {address: D400}, access: rw}
      - {id: run,      type: bool,    mc: {address: M10}, access: rw}
      - {id: run2,     type: bool,    mc: {address: M27}}
      - {id: latch,    type: bool,    mc: {address: L5}}
      - {id: alarm,    type: bool,    mc: {address: F3}}
      - {id: link,     type: bool,    mc: {address: B1A}, access: rw}
      - {id: always,   type: bool,    mc: {address: SM400}}
      - {id: input,    type: bool,    mc: {address: X1F}}
      - {id: lamp,     type: bool,    mc: {address: Y20}, access: rw}
      - {id: lw,       type: int16,   mc: {address: W1A}}
      - {id: file,     type: float32, mc: {address: R10}}
      - {id: zfile,    type: uint16,  mc: {address: ZR1000}}
      - {id: special,  type: uint16,  mc: {address: SD203}}
      - {id: timer,    type: uint16,  mc: {address: TN5}}
      - {id: count,    type: uint16,  mc: {address: CN3}}
"""

EXACT: dict[str, Any] = {
    "temp": -3,
    "word": 65535,
    "counter": -2_000_000_000,
    "dword": 4_000_000_000,
    "real": 63.25,
    "hiword": 0x12345678,
    "big": 2**64 - 1,
    "small": -(2**63),
    "lreal": 123456.789012345,
    "flag": True,
    "flag_f": True,
    "lowbyte": 200,
    "sbyte": -128,
    "name": "Mould A",
    "run": True,
    "run2": False,
    "latch": True,
    "alarm": True,
    "link": False,
    "always": True,
    "input": True,
    "lamp": False,
    "lw": -32768,
    "file": -0.5,
    "zfile": 4242,
    "special": 7,
    "timer": 150,
    "count": 9,
}


def config(port: int, plc: str = "Q", code: str = "binary", timeout: str = "1s", points: str = POINTS) -> str:
    return f"""
gateway: {{id: gw-mc}}
devices:
  - id: plc-01
    protocol: mc
    connection: {{host: 127.0.0.1, port: {port}, plc: {plc}, code: {code}, timeout: {timeout}}}
    points:{points}
"""


def with_plc(tmp_path: Path, job: Callable[[McDriver, McSimulator], Awaitable[Any]], **kw: Any) -> Any:
    port = free_port()
    path = tmp_path / "c.yaml"
    path.write_text(config(port, **kw))
    loaded = load_config(str(path))

    async def main() -> Any:
        (sim,) = build_simulators(loaded, "127.0.0.1", 60.0)
        assert isinstance(sim, McSimulator)
        await sim.start()
        r, dev = loaded.devices[0], loaded.config.devices[0]
        driver = plugin_for("mc").build_driver(loaded, dev, r.points, r.plan)
        assert isinstance(driver, McDriver)
        try:
            return await job(driver, sim)
        finally:
            await driver.close()
            await sim.stop()

    return asyncio.run(main())


def ids(d: McDriver) -> list[str]:
    return [p.id for p in d.points]


def hold_all(sim: McSimulator, values: dict[str, Any]) -> None:
    for k, v in values.items():
        assert sim.plc.hold(k, v), k


@pytest.mark.parametrize(
    ("plc", "code"), [("Q", "binary"), ("Q", "ascii"), ("iQ-R", "binary"), ("iQ-R", "ascii")]
)
def test_every_device_and_type_decodes_exactly(tmp_path: Path, plc: str, code: str) -> None:
    async def job(d: McDriver, sim: McSimulator) -> None:
        hold_all(sim, EXACT)
        got = dict(zip(ids(d), await d.read(), strict=True))
        assert got == EXACT
        assert d.codec.iqr == (plc == "iQ-R")
        assert 1 < len(d.requests) <= 8  # batch reads for runs, one random read for the scattered
        assert any(r.random for r in d.requests)
        mem = sim.plc.memory
        assert list(mem["D"][200:202]) == [0x6C00, 0x88CA]  # -2e9 = 88CA6C00H, low word first
        assert list(mem["D"][206:208]) == [0x1234, 0x5678]  # ABCD: high word first

    with_plc(tmp_path, job, plc=plc, code=code)


def test_iq_f_numbers_x_and_y_in_octal(tmp_path: Path) -> None:
    points = """
      - {id: x17, type: bool, mc: {address: X17}}
      - {id: x20, type: bool, mc: {address: X20}}
      - {id: y7,  type: bool, mc: {address: Y7}, access: rw}
      - {id: d,   type: int16, mc: {address: D7999}}
"""

    async def job(d: McDriver, sim: McSimulator) -> None:
        hold_all(sim, {"x17": True, "x20": False, "y7": False, "d": 12})
        assert await d.read() == [True, False, False, 12]
        x = sim.plc.memory["X"]
        assert x[15] == 1 and x[16] == 0  # X17 octal is the 16th input
        await d.write("y7", True)
        assert sim.plc.memory["Y"][7] == 1

    for code in ("binary", "ascii"):
        with_plc(tmp_path, job, plc="iQ-F", code=code, points=points)


def test_writes_land_in_the_plc_memory(tmp_path: Path) -> None:
    async def job(d: McDriver, sim: McSimulator) -> None:
        hold_all(sim, {"run": False, "run2": True, "lamp": False, "link": True})
        await d.read()
        mem = sim.plc.memory
        await d.write("temp", -2)
        await d.write("counter", 70000)
        await d.write("name", "R-99")
        await d.write("run", True)
        await d.write("lamp", True)
        await d.write("link", False)
        assert mem["D"][100] == 0xFFFE
        assert list(mem["D"][200:202]) == [70000 & 0xFFFF, 70000 >> 16]
        assert bytes(mem["D"][400:404].tobytes()) == b"R-99\x00\x00\x00\x00"  # first character low byte
        assert (mem["M"][10], mem["M"][27], mem["Y"][0x20], mem["B"][0x1A]) == (1, 1, 1, 0)
        got = dict(zip(ids(d), await d.read(), strict=True))
        assert (
            got["temp"],
            got["counter"],
            got["name"],
            got["run"],
            got["run2"],
            got["lamp"],
            got["link"],
        ) == (
            -2,
            70000,
            "R-99",
            True,
            True,
            True,
            False,
        )
        with pytest.raises(WriteFailed, match="longer than 7 characters"):
            await d.write("name", "x" * 8)
        with pytest.raises(WriteFailed, match="does not fit int16"):
            await d.write("temp", 40000)

    with_plc(tmp_path, job, code="ascii")
    with_plc(tmp_path, job)


def test_a_refused_range_is_read_point_by_point(tmp_path: Path) -> None:
    async def job(d: McDriver, sim: McSimulator) -> None:
        sim.plc.set_fault(Fault("refuse", code=250))  # the CPU's ranges end at 250
        got = dict(zip(ids(d), await d.read(), strict=True))
        beyond = {"flag", "flag_f", "lowbyte", "sbyte", "name", "always", "zfile"}
        for k in beyond:
            assert isinstance(got[k], PointError), k
            assert got[k].reason == "C056: request exceeds the maximum address", got[k]
        for k in set(EXACT) - beyond:
            assert not isinstance(got[k], PointError), (k, got[k])
        assert d.connected  # an end code is an answer: still online
        # later polls read the other points without the refused request and without reading
        # each point alone: the refused points keep their reason
        sent = d.request_count
        again = dict(zip(ids(d), await d.read(), strict=True))
        assert d.request_count - sent <= len(d.requests) + 2, d.request_count - sent
        assert {k for k, v in again.items() if isinstance(v, PointError)} == beyond
        assert all(again[k].reason == got[k].reason for k in beyond)
        with pytest.raises(WriteFailed, match="C056"):
            await d.write("name", "x")
        sim.plc.set_fault(Fault())
        for _ in range(RETRY_REFUSED):  # the refused points are tried again every few polls
            values = await d.read()
        assert not any(isinstance(v, PointError) for v in values)
        assert not d._split  # back to the planned requests
        sent = d.request_count
        await d.read()
        assert d.request_count - sent == len(d.requests)

    with_plc(tmp_path, job)


def test_a_restarting_plc_is_unreachable_then_read_again(tmp_path: Path) -> None:
    async def job(d: McDriver, sim: McSimulator) -> None:
        await d.read()
        sim.plc.set_fault(Fault("restart", delay=0.6))
        await asyncio.sleep(0.05)
        with pytest.raises(DeviceUnreachable, match="lost"):
            await d.read()
        with pytest.raises(DeviceUnreachable, match="connection refused"):
            await d.read()
        for _ in range(40):
            await asyncio.sleep(0.1)
            try:
                values = await d.read()
                break
            except DeviceUnreachable:
                continue
        else:
            raise AssertionError("the PLC did not come back")
        assert not any(isinstance(v, PointError) for v in values)

    with_plc(tmp_path, job)


def test_a_hanging_plc_times_out_and_garbage_is_named(tmp_path: Path) -> None:
    async def job(d: McDriver, sim: McSimulator) -> None:
        await d.read()
        sim.plc.set_fault(Fault("silent"))
        with pytest.raises(DeviceUnreachable, match=r"no response within 0\.3s"):
            await d.read()
        sim.plc.set_fault(Fault())
        await d.read()
        sim.plc.set_fault(Fault("silent"))
        with pytest.raises(WriteTimeout, match=r"no response within 0\.3s"):
            await d.write("temp", 5)
        sim.plc.set_fault(Fault("garbage"))
        values = await d.read()
        assert all(isinstance(v, PointError) and "malformed reply" in v.reason for v in values)
        sim.plc.set_fault(Fault("drop"))
        with pytest.raises(DeviceUnreachable, match="lost"):
            await d.read()
        sim.plc.set_fault(Fault())
        assert not any(isinstance(v, PointError) for v in await d.read())

    with_plc(tmp_path, job, timeout="300ms")


def test_a_binary_client_of_an_ascii_module_is_told_so(tmp_path: Path) -> None:
    port = free_port()
    path = tmp_path / "c.yaml"
    path.write_text(config(port, code="ascii"))
    loaded = load_config(str(path))
    wrong = tmp_path / "w.yaml"
    wrong.write_text(config(port, code="binary"))
    other = load_config(str(wrong))

    async def main() -> None:
        (sim,) = build_simulators(loaded, "127.0.0.1", 60.0)
        await sim.start()
        r, dev = other.devices[0], other.config.devices[0]
        d = plugin_for("mc").build_driver(other, dev, r.points, r.plan)
        try:
            values = await d.read()
            assert all(isinstance(v, PointError) and "set code: ascii" in v.reason for v in values), values
        finally:
            await d.close()
            await sim.stop()

    asyncio.run(main())
