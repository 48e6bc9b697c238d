"""Modbus RTU driver on pymodbus' serial client, with several devices sharing one bus.

Every device on one serial port (RS-485 multidrop: one master, unit ids 1–247) goes through one
`SerialBus`: one open port, one request at a time, with `inter_frame` of silence between frames
for devices that need more than the 3.5 character times of the standard. A device that times
out does not close the port (the others still use it): its remaining requests of that poll are
skipped, so a dead unit costs the bus one timeout per poll. A response whose CRC does not match
is reported as such (pymodbus discards it and waits for the timeout). A port that disappears (a
USB adapter unplugged) makes every device on it unreachable; each poll tries to open it again
(with the scheduler's backoff), and data resumes when it is back.
"""

from __future__ import annotations

import asyncio
import errno
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, ClassVar

from pymodbus.client import AsyncModbusSerialClient

from ..base import DeviceUnreachable
from ..serialport import line_setting, open_failure, port_problem
from .codec import BlockDecoder, RegisterPoint
from .driver import ModbusDriver, pymodbus_call
from .planner import ReadRequest
from .response import Request


def crc16(data: bytes) -> int:
    """Modbus RTU CRC (polynomial 0xA001, initial 0xFFFF), low byte first on the wire."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def crc_ok(frame: bytes) -> bool:
    return len(frame) >= 4 and crc16(frame[:-2]) == int.from_bytes(frame[-2:], "little")


class SerialBus:
    """One serial port and everything on it. Shared by the devices configured on that port."""

    _buses: ClassVar[dict[str, SerialBus]] = {}

    @classmethod
    def for_port(cls, port: str, settings: tuple[int, int, str, float], inter_frame: float) -> SerialBus:
        bus = cls._buses.get(port)
        if bus is not None and bus.settings != settings:
            # new line settings (a reload): the devices on the old bus have been stopped; the
            # port is closed here and reopened with the new settings, or it would stay locked
            bus.close()
            bus = None
        if bus is None:
            bus = cls._buses[port] = SerialBus(port, settings, inter_frame)
        bus.inter_frame = max(bus.inter_frame, inter_frame)
        return bus

    def __init__(self, port: str, settings: tuple[int, int, str, float], inter_frame: float):
        self.port = port
        self.settings = settings  # baudrate, bytesize, parity, stopbits
        baudrate = settings[0]
        # 3.5 character times (11 bits each), and at least 1.75 ms above 19200 baud (the spec's floor)
        self.inter_frame = max(inter_frame, 3.5 * 11 / baudrate, 0.00175)
        self.lock = asyncio.Lock()
        self._opening = asyncio.Lock()
        self.client: AsyncModbusSerialClient | None = None
        self._last_frame = 0.0
        self.received = bytearray()  # the bytes of the answer to the request in progress

    @property
    def connected(self) -> bool:
        return self.client is not None and self.client.connected

    async def open(self, timeout: float) -> None:
        async with self._opening:  # the devices of a bus start together: one of them opens it
            if not self.connected:
                await self._open(timeout)

    async def _open(self, timeout: float) -> None:
        self.close()
        problem = port_problem(self.port)
        if problem:
            raise DeviceUnreachable(problem)
        baudrate, bytesize, parity, stopbits = self.settings
        client = AsyncModbusSerialClient(
            self.port,
            baudrate=baudrate,
            bytesize=bytesize,
            parity=parity,
            stopbits=stopbits,  # type: ignore[arg-type]
            timeout=timeout,
            retries=0,
            reconnect_delay=0,
            trace_packet=self._trace,
        )
        line = line_setting(self.settings)
        why = ""
        try:
            ok = await asyncio.wait_for(client.connect(), timeout + 1)
        except Exception as exc:  # OSError, termios.error, serial.SerialException: all mean "cannot open"
            ok, why = False, open_failure(exc)
        if not ok:
            client.close()
            raise DeviceUnreachable(
                port_problem(self.port) or f"cannot open serial port {self.port} at {line}{why}"
            )
        self.client = client

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None

    def _trace(self, sending: bool, data: bytes) -> bytes:
        if sending:
            self.received = bytearray()
        else:
            self.received += data
        return data

    async def transact(self, call: Callable[[Any], Awaitable[Any]], timeout: float) -> Any:
        async with self.lock:
            if self.client is None or not self.client.connected:
                raise ConnectionError(f"serial port {self.port} is closed")
            quiet = self._last_frame + self.inter_frame - time.monotonic()
            if quiet > 0:
                await asyncio.sleep(quiet)
            try:
                return await asyncio.wait_for(call(self.client), timeout + 0.5)
            finally:
                self._last_frame = time.monotonic()


class ModbusRtuDriver(ModbusDriver):
    def __init__(
        self,
        bus: SerialBus,
        unit_id: int,
        timeout: float,
        points: Sequence[RegisterPoint],
        max_registers: int = 125,
        max_bits: int = 2000,
        max_gap: int = 16,
        requests: list[ReadRequest] | None = None,
        decoders: list[BlockDecoder] | None = None,
    ):
        super().__init__(unit_id, timeout, points, max_registers, max_bits, max_gap, requests, decoders)
        self.bus = bus
        self._crc_error = False

    @property
    def connected(self) -> bool:
        return self.bus.connected

    async def connect(self) -> None:
        await self.bus.open(self.timeout)

    async def close(self) -> None:
        # the port belongs to the bus: it is closed when it fails, not when one device stops
        return None

    async def _request(self, asked: Request) -> Any:
        self._crc_error = False
        try:
            return await self.bus.transact(pymodbus_call(asked, self.unit_id), self.timeout)
        except OSError as exc:
            if exc.errno in (errno.EIO, errno.ENXIO, errno.ENODEV, errno.EBADF) or not os.path.exists(
                self.bus.port
            ):
                self.bus.close()
            raise
        except Exception:
            got = bytes(self.bus.received)
            self._crc_error = bool(got) and got[0] == self.unit_id and not crc_ok(got)
            raise

    async def _after_timeout(self) -> bool:
        return True  # skip this device's other requests this cycle; the port stays open

    def _timeout_reason(self) -> str:
        if self._crc_error:
            return f"CRC error in the response from unit {self.unit_id}"
        return f"no response from unit {self.unit_id} within {self.timeout:g}s"

    def _lost_reason(self, exc: BaseException) -> str:
        self.bus.close()
        return port_problem(self.bus.port) or f"serial port {self.bus.port} failed: {exc}"
