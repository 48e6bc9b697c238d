"""The S7 driver against python-snap7's server (the plugin's simulator) over real TCP on
loopback: every type and area decoded exactly, writes landing in the server's memory (a bit
write leaving its neighbours alone), a refused area, PUT/GET refused, a CPU that restarts, one
that hangs, one that sends garbage, a small PDU."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from edgegw.drivers.base import DeviceUnreachable, PointError, WriteFailed, WriteTimeout
from edgegw.drivers.registry import plugin_for
from edgegw.drivers.s7.driver import S7Driver
from edgegw.drivers.s7.simulator import S7Simulator
from edgegw.gateway.config import load_config
from edgegw.simulators.faults import Fault
from edgegw.simulators.runner import build_simulators
from harness import free_port

POINTS = """
      - {id: running,  type: bool,    s7: {address: DB10.DBX0.0}}
      - {id: door,     type: bool,    s7: {address: DB10.DBX0.1}, access: rw}
      - {id: mode,     type: int16,   s7: {address: DB10.DBW2}, access: rw}
      - {id: oil_temp, type: float32, s7: {address: DB10.DBD4}}
      - {id: parts,    type: int32,   s7: {address: DB10.DBD8}}
      - {id: energy,   type: float64, s7: {address: DB10.DBB12}}
      - {id: recipe,   type: string,  length: 20, s7: {address: DB10.DBB20}, access: rw}
      - {id: stamp,    type: string,  s7: {address: DB10.DBB44, format: DTL}}
      - {id: label,    type: string,  length: 8, s7: {address: DB10.DBB56, format: WSTRING}, access: rw}
      - {id: lot,      type: string,  length: 6, s7: {address: DB10.DBB80, format: CHAR}}
      - {id: made,     type: string,  s7: {address: DB10.DBB90, format: DATE_AND_TIME}}
      - {id: big,      type: uint64,  s7: {address: DB10.DBB100}}
      - {id: small,    type: int64,   s7: {address: DB10.DBB108}}
      - {id: word,     type: uint16,  s7: {address: DB10.DBW116}}
      - {id: dword,    type: uint32,  s7: {address: DB10.DBD118}}
      - {id: sint,     type: int8,    s7: {address: DB10.DBB122}}
      - {id: estop,    type: bool,    s7: {address: I0.3}}
      - {id: in_word,  type: uint16,  s7: {address: EW2}}
      - {id: lamp,     type: bool,    s7: {address: Q0.1}, access: rw}
      - {id: horn,     type: bool,    s7: {address: A0.2}}
      - {id: out_byte, type: uint8,   s7: {address: QB4}, access: rw}
      - {id: speed_sp, type: int16,   s7: {address: MW20}, access: rw}
      - {id: m_real,   type: float32, s7: {address: MD24}}
      - {id: m_bit,    type: bool,    s7: {address: M28.7}}
      - {id: other_db, type: int16,   s7: {address: DB11.DBW0}}
"""

EXACT: dict[str, Any] = {
    "running": True,
    "door": False,
    "mode": -3,
    "oil_temp": 63.25,
    "parts": -2_000_000_000,
    "energy": 123456.789012345,
    "recipe": "Mould A/ß-7",
    "stamp": "2026-11-29T08:30:05",
    "label": "温度计-1",
    "lot": "L42",
    "made": "1999-12-31T23:59:59",
    "big": 2**64 - 1,
    "small": -(2**63),
    "word": 65535,
    "dword": 4_000_000_000,
    "sint": -128,
    "estop": True,
    "in_word": 0x1234,
    "lamp": False,
    "horn": True,
    "out_byte": 200,
    "speed_sp": 1500,
    "m_real": -0.5,
    "m_bit": True,
    "other_db": 7,
}


def config(port: int, pdu: int = 480, timeout: str = "1s") -> str:
    return f"""
gateway: {{id: gw-s7}}
devices:
  - id: press-07
    protocol: s7
    connection: {{host: 127.0.0.1, port: {port}, plc: s7-1500, timeout: {timeout}, pdu_size: {pdu}}}
    points:{POINTS}
"""


def with_plc(tmp_path: Path, job: Callable[[S7Driver, S7Simulator], Awaitable[Any]], **kw: Any) -> Any:
    port = free_port()
    path = tmp_path / "c.yaml"
    path.write_text(config(port, **kw))
    loaded = load_config(str(path))

    async def main() -> Any:
        (sim,) = build_simulators(loaded, "127.0.0.1", 60.0)
        assert isinstance(sim, S7Simulator)
        await sim.start()
        r, dev = loaded.devices[0], loaded.config.devices[0]
        driver = plugin_for("s7").build_driver(loaded, dev, r.points, r.plan)
        assert isinstance(driver, S7Driver)
        try:
            return await job(driver, sim)
        finally:
            await driver.close()
            await sim.stop()

    return asyncio.run(main())


def ids(d: S7Driver) -> list[str]:
    return [p.id for p in d.points]


def test_every_type_and_area_decodes_exactly(tmp_path: Path) -> None:
    async def job(d: S7Driver, sim: S7Simulator) -> None:
        for k, v in EXACT.items():
            assert sim.plc.hold(k, v)
        await d.connect()
        assert d.pdu == 480
        got = dict(zip(ids(d), await d.read(), strict=True))
        assert got == EXACT
        assert len(d.requests) == 1  # DB10, DB11, I, Q and M in one multi-variable read

    with_plc(tmp_path, job)


def test_writes_land_in_the_cpu_memory_and_a_bit_write_leaves_its_neighbours(tmp_path: Path) -> None:
    async def job(d: S7Driver, sim: S7Simulator) -> None:
        sim.plc.hold("running", True)  # DB10.DBX0.0, next to door's bit 0.1
        sim.plc.hold("lamp", False)
        sim.plc.hold("horn", True)  # Q0.2, next to lamp's Q0.1
        await d.read()
        db10 = sim._memory[(0x84, 10)]
        q = sim._memory[(0x82, 0)]
        assert db10[0] & 0b11 == 0b01 and q[0] & 0b110 == 0b100
        await d.write("door", True)
        await d.write("lamp", True)
        assert db10[0] & 0b11 == 0b11  # running kept
        assert q[0] & 0b110 == 0b110  # horn kept
        await d.write("mode", -2)
        await d.write("speed_sp", 2750)
        await d.write("recipe", "R-99")
        await d.write("label", "Ω-2")
        await d.write("out_byte", 255)
        assert struct.unpack_from(">h", db10, 2)[0] == -2
        assert struct.unpack_from(">h", sim._memory[(0x83, 0)], 20)[0] == 2750
        assert bytes(db10[20:26]) == bytes([20, 4]) + b"R-99"
        assert struct.unpack_from(">HH", db10, 56) == (8, 3) and bytes(db10[60:66]) == "Ω-2".encode(
            "utf-16-be"
        )
        assert q[4] == 255
        got = dict(zip(ids(d), await d.read(), strict=True))
        assert (got["door"], got["lamp"], got["running"], got["horn"]) == (True, True, True, True)
        assert (got["mode"], got["speed_sp"], got["recipe"], got["label"], got["out_byte"]) == (
            -2,
            2750,
            "R-99",
            "Ω-2",
            255,
        )
        with pytest.raises(WriteFailed, match="longer than STRING\\[20\\]"):
            await d.write("recipe", "x" * 21)

    with_plc(tmp_path, job)


def test_a_refused_db_leaves_the_other_areas_good(tmp_path: Path) -> None:
    async def job(d: S7Driver, sim: S7Simulator) -> None:
        sim.plc.set_fault(Fault("refuse", code=10))
        got = dict(zip(ids(d), await d.read(), strict=True))
        db10 = [
            k
            for k in got
            if k
            not in ("estop", "in_word", "lamp", "horn", "out_byte", "speed_sp", "m_real", "m_bit", "other_db")
        ]
        for k in db10:
            assert isinstance(got[k], PointError)
            assert "optimized block access on DB10" in got[k].reason, got[k]
        for k in ("estop", "lamp", "speed_sp", "m_real", "other_db"):
            assert not isinstance(got[k], PointError), (k, got[k])
        with pytest.raises(WriteFailed):
            await d.write("mode", 1)
        sim.plc.set_fault(Fault())
        assert not any(isinstance(v, PointError) for v in await d.read())

    with_plc(tmp_path, job)


def test_put_get_refused_names_the_setting(tmp_path: Path) -> None:
    async def job(d: S7Driver, sim: S7Simulator) -> None:
        sim.plc.set_fault(Fault("putget"))
        values = await d.read()  # the CPU answered: not unreachable
        assert all(isinstance(v, PointError) and "PUT/GET" in v.reason for v in values)
        with pytest.raises(WriteFailed, match="Permit access with PUT/GET"):
            await d.write("speed_sp", 1)

    with_plc(tmp_path, job)


def test_a_restarting_cpu_is_unreachable_then_read_again(tmp_path: Path) -> None:
    async def job(d: S7Driver, sim: S7Simulator) -> None:
        await d.read()
        sim.plc.set_fault(Fault("restart", delay=1.0))
        with pytest.raises(DeviceUnreachable, match="lost"):
            await d.read()
        with pytest.raises(DeviceUnreachable, match="connection refused"):
            await d.read()
        for _ in range(50):
            await asyncio.sleep(0.1)
            try:
                values = await d.read()
                break
            except DeviceUnreachable:
                continue
        else:
            raise AssertionError("the CPU did not come back")
        assert not any(isinstance(v, PointError) for v in values)

    with_plc(tmp_path, job)


def test_a_hanging_cpu_times_out_and_garbage_is_named(tmp_path: Path) -> None:
    async def job(d: S7Driver, sim: S7Simulator) -> None:
        await d.read()
        sim.plc.set_fault(Fault("silent"))
        with pytest.raises(DeviceUnreachable, match=r"no response within 0\.3s"):
            await d.read()
        sim.plc.set_fault(Fault())
        await d.read()
        sim.plc.set_fault(Fault("silent"))
        with pytest.raises(WriteTimeout, match=r"no response within 0\.3s"):
            await d.write("speed_sp", 5)  # sent on the open session: it may have landed
        with pytest.raises(DeviceUnreachable, match="timed out"):
            await d.read()  # a new session: the CPU does not even answer the negotiation
        sim.plc.set_fault(Fault("garbage"))
        values = await d.read()
        assert all(isinstance(v, PointError) and "malformed reply" in v.reason for v in values)
        sim.plc.set_fault(Fault())
        assert not any(isinstance(v, PointError) for v in await d.read())

    with_plc(tmp_path, job, timeout="300ms")


def test_a_small_pdu_splits_reads_and_a_long_wstring_write(tmp_path: Path) -> None:
    async def job(d: S7Driver, sim: S7Simulator) -> None:
        for k, v in EXACT.items():
            sim.plc.hold(k, v)
        await d.connect()
        assert d.pdu == 240 and len(d.requests) == 1
        got = dict(zip(ids(d), await d.read(), strict=True))
        assert got == EXACT

    with_plc(tmp_path, job, pdu=240)


def test_the_driver_plans_again_for_the_pdu_the_cpu_grants(tmp_path: Path) -> None:
    async def job(d: S7Driver, sim: S7Simulator) -> None:
        assert d.plan.pdu == 960
        await d.connect()
        assert d.pdu == 480  # python-snap7's server grants at most 480
        for p in d.requests:
            assert sum(4 + i.size + 1 for i in p.items) + 14 <= 480 + 1
        assert not any(isinstance(v, PointError) for v in await d.read())

    with_plc(tmp_path, job, pdu=960)
