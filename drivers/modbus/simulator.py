"""Modbus TCP device simulator on pymodbus' server.

Devices sharing a port are served by unit id, like a Modbus TCP gateway in front of a bus.
Registers are refreshed from the value generators when a request touches them, so values
change over time at no cost between polls. Writes are kept: a written point holds the written
value instead of its generated one.

Faults, per device (set through the control API): `silent` (never answers), `exception`
(answers with a Modbus exception code), `drop` (closes the connection), `slow` (answers after
a delay), `garbage` (answers with bytes that are not a Modbus frame), `partial` (sends the first
half of each answer and then hangs, as a device that stalls mid-response).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

from edgegw.drivers.modbus.address import BIT_AREAS
from edgegw.drivers.modbus.codec import BlockDecoder, RegisterPoint, encode_value
from edgegw.gateway.dictionary import DictionaryEntry
from edgegw.gateway.writeback import raw_value
from edgegw.simulators.faults import Fault
from edgegw.simulators.values import ValueGenerator
from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

logging.getLogger("pymodbus").setLevel(logging.CRITICAL)

_FC_AREA = {1: "co", 5: "co", 15: "co", 2: "di", 3: "hr", 6: "hr", 16: "hr", 22: "hr", 23: "hr", 4: "ir"}


@dataclass
class SimulatedPoint:
    register: RegisterPoint
    entry: DictionaryEntry
    generator: ValueGenerator
    held: object = None  # a value written by a client, kept instead of the generated one


# fault modes of the control API
FAULTS = ("none", "silent", "exception", "drop", "slow", "garbage", "partial", "crc")


@dataclass
class SimulatedDevice:
    faults = FAULTS
    id: str
    unit_id: int
    points: list[SimulatedPoint]
    fault: Fault = field(default_factory=Fault)
    started: float = field(default_factory=time.monotonic)
    requests: int = 0
    _cleared: asyncio.Event = field(default_factory=asyncio.Event)
    _refreshed: dict[str, float] = field(default_factory=dict)

    def size(self, area: str) -> int:
        end = max(
            (p.register.offset + p.register.width for p in self.points if p.register.area == area),
            default=0,
        )
        if area in BIT_AREAS:
            return end // 16 + 2  # 16 bits per register in pymodbus' bit blocks
        return end + 16

    def set_fault(self, fault: Fault) -> None:
        self.fault = fault
        if fault.mode == "none":
            self._cleared.set()
            self._cleared = asyncio.Event()

    def values(self) -> dict[str, object]:
        t = time.monotonic() - self.started
        return {p.entry.id: p.held if p.held is not None else p.generator.value(t) for p in self.points}

    def refresh(self, area: str, registers: list[int]) -> None:
        now = time.monotonic()
        if now - self._refreshed.get(area, 0.0) < 0.05:
            return
        self._refreshed[area] = now
        t = now - self.started
        for p in self.points:
            r = p.register
            if r.area != area:
                continue
            value = p.held if p.held is not None else p.generator.value(t)
            if area in BIT_AREAS:
                word, bit = divmod(r.offset, 16)
                registers[word] = (registers[word] | (1 << bit)) if value else (registers[word] & ~(1 << bit))
            elif r.bit is not None:
                mask = 1 << r.bit
                registers[r.offset] = (registers[r.offset] | mask) if value else (registers[r.offset] & ~mask)
            else:
                try:
                    words = encode_value(r, raw_value(p.entry, value))
                except (ValueError, OverflowError):
                    continue
                registers[r.offset : r.offset + len(words)] = words

    def hold(self, point_id: str, value: object) -> bool:
        """Hold a point at an engineering value (None: follow the generator again)."""
        for p in self.points:
            if p.entry.id == point_id:
                p.held = value
                self._refreshed.clear()
                return True
        return False

    def hold_written(self, area: str, address: int, count: int, values: list[Any]) -> None:
        """Keep what a client wrote: those points stop following their generator."""
        for p in self.points:
            r = p.register
            if r.area != area or not (address <= r.offset < address + count):
                continue
            rel = r.offset - address
            if area in BIT_AREAS:
                p.held = bool(values[rel])
            elif r.bit is not None:
                p.held = bool(values[rel] & (1 << r.bit))
            elif rel + r.width <= count:
                raw = BlockDecoder(r.offset, r.width, [r]).decode(list(values[rel : rel + r.width]))[0]
                p.held = raw if p.entry.type in ("bool", "string") else raw * p.entry.scale + p.entry.offset  # type: ignore[operator]
        self._refreshed.clear()


class ModbusTcpSimulator:
    """One listening port, serving one or more devices by unit id."""

    UNIT_AT = 6  # where the unit id is in a frame (MBAP header)

    def __init__(self, host: str, port: int, devices: list[SimulatedDevice]):
        self.host, self.port = host, port
        self.devices = {d.unit_id: d for d in devices}
        self.server: ModbusTcpServer | None = None
        self._task: asyncio.Task[None] | None = None

    def describe(self) -> list[str]:
        return [
            f"{d.id}: modbus-tcp {self.host}:{self.port} unit {d.unit_id}, {len(d.points)} points"
            for d in self.devices.values()
        ]

    def _sim_device(self, dev: SimulatedDevice) -> SimDevice:
        def block(area: str) -> list[SimData]:
            kind = DataType.BITS if area in BIT_AREAS else DataType.REGISTERS
            return [SimData(0, count=dev.size(area), values=0, datatype=kind)]

        async def action(
            fc: int, start: int, address: int, count: int, registers: list[int], values: Any
        ) -> ExcCodes | None:
            return await self._on_request(dev, fc, start, address, count, registers, values)

        return SimDevice(
            id=dev.unit_id,
            simdata=(block("co"), block("di"), block("hr"), block("ir")),
            action=action,
        )

    async def _on_request(
        self,
        dev: SimulatedDevice,
        fc: int,
        start: int,
        address: int,
        count: int,
        registers: list[int],
        values: Any,
    ) -> ExcCodes | None:
        dev.requests += 1
        fault = dev.fault
        if fault.mode == "silent":
            await dev._cleared.wait()
            raise asyncio.CancelledError  # the request that hung is never answered
        if fault.mode == "slow":
            await asyncio.sleep(fault.delay)
        elif fault.mode == "exception":
            return ExcCodes(fault.code)
        elif fault.mode == "drop":
            self.drop_connections()
            raise asyncio.CancelledError
        area = _FC_AREA.get(fc)
        if area is None:
            return None
        if values is not None:
            dev.hold_written(area, address, count, list(values) if isinstance(values, list) else [values])
            return None
        dev.refresh(area, registers)
        return None

    def drop_connections(self) -> None:
        if self.server is None:
            return
        for conn in list(self.server.active_connections.values()):
            conn.close()

    def _trace_packet(self, sending: bool, data: bytes) -> bytes:
        if sending and len(data) > self.UNIT_AT:
            dev = self.devices.get(data[self.UNIT_AT])
            mode = dev.fault.mode if dev is not None else "none"
            if mode == "garbage":
                return os.urandom(max(len(data), 9))
            if mode == "partial":
                return data[: len(data) // 2]
            if mode == "crc":  # the last byte is the CRC's high byte on RTU
                return data[:-1] + bytes([data[-1] ^ 0x5A])
        return data

    async def start(self) -> None:
        self.server = ModbusTcpServer(
            [self._sim_device(d) for d in self.devices.values()],
            address=(self.host, self.port),
            trace_packet=self._trace_packet,
        )
        self._task = asyncio.create_task(self.server.serve_forever())
        for _ in range(100):
            if self.server.transport is not None:
                return
            await asyncio.sleep(0.01)
        raise OSError(f"cannot listen on {self.host}:{self.port}")

    async def stop(self) -> None:
        for d in self.devices.values():
            d.set_fault(Fault())
        if self.server is not None:
            await self.server.shutdown()
        if self._task is not None:
            self._task.cancel()
