"""DL/T 645-2007 meters on an RS-485 bus, through pyserial read by the event loop.

Every meter configured on one serial port goes through one `MeterBus`: one open port, one
request at a time, each request after the FE wake-up preamble. A meter reads one data
identifier per request, so a poll is one request per point. A meter that does not answer costs
the bus one timeout per poll: its remaining requests of that poll are skipped, and it goes
offline when nothing of it answered, while the other meters keep being read. An abnormal reply
makes only its point bad, with the meaning of its error bits. A reply with a bad checksum makes
its point bad and the bus drops whatever else arrived (it starts the next request clean). A port
that disappears (a USB adapter unplugged) makes every meter on it unreachable; each poll tries to
open it again (with the scheduler's backoff).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from typing import ClassVar

import serial

from ..base import DeviceUnreachable, DriverBase, LatencyHistogram, PointError, WriteFailed
from ..serialport import line_setting, open_failure, port_problem
from .checks import MeterPoint
from .codec import (
    READ,
    READ_ADDRESS,
    BadFrame,
    FormatError,
    Frame,
    address_bytes,
    decode,
    err_meaning,
    parse,
    read_address_request,
    read_request,
)

Settings = tuple[int, int, str, float]


class PortLost(Exception):
    """The port failed under a request (adapter unplugged): every meter on it is unreachable."""


class MeterBus:
    """One serial port and the meters on it. Shared by the devices configured on that port."""

    _buses: ClassVar[dict[str, MeterBus]] = {}

    @classmethod
    def for_port(cls, port: str, settings: Settings) -> MeterBus:
        bus = cls._buses.get(port)
        if bus is not None and bus.settings != settings:
            bus.close()  # new line settings (a reload): reopen with them
            bus = None
        if bus is None:
            bus = cls._buses[port] = MeterBus(port, settings)
        return bus

    def __init__(self, port: str, settings: Settings):
        self.port = port
        self.settings = settings
        self.lock = asyncio.Lock()
        self._opening = asyncio.Lock()
        self._serial: serial.Serial | None = None
        self._buf = bytearray()
        self._wake = asyncio.Event()
        self._lost: str | None = None
        self.sent_at = 0.0

    @property
    def connected(self) -> bool:
        return self._serial is not None

    async def open(self) -> None:
        async with self._opening:  # the meters of a bus start together: one of them opens it
            if self._serial is None:
                await self._open()

    async def _open(self) -> None:
        problem = port_problem(self.port)
        if problem:
            raise DeviceUnreachable(problem)
        baudrate, bytesize, parity, stopbits = self.settings
        try:
            ser = await asyncio.wait_for(
                asyncio.to_thread(
                    serial.Serial,
                    self.port,
                    baudrate=baudrate,
                    bytesize=bytesize,
                    parity=parity,
                    stopbits=stopbits,
                    timeout=0,
                    exclusive=True,
                ),
                5.0,
            )
        except Exception as exc:  # SerialException, termios.error, OSError, ValueError: cannot open
            raise DeviceUnreachable(
                port_problem(self.port)
                or f"cannot open serial port {self.port} at {line_setting(self.settings)}{open_failure(exc)}"
            ) from None
        self._serial = ser
        self._lost = None
        self._buf.clear()
        ser.reset_input_buffer()
        asyncio.get_running_loop().add_reader(ser.fileno(), self._readable)

    def close(self) -> None:
        ser, self._serial = self._serial, None
        if ser is not None:
            with contextlib.suppress(RuntimeError, ValueError, OSError):
                asyncio.get_running_loop().remove_reader(ser.fileno())
            with contextlib.suppress(OSError, serial.SerialException):
                ser.close()

    def _readable(self) -> None:
        ser = self._serial
        if ser is None:
            return
        try:
            data = os.read(ser.fileno(), 4096)
        except BlockingIOError:
            return
        except OSError as exc:
            self._drop(f"serial port {self.port} failed: {exc.strerror or exc}")
            return
        if not data:  # readable and empty: the other end hung up (adapter gone)
            self._drop(f"serial port {self.port} hung up")
            return
        self._buf += data
        self._wake.set()

    def _drop(self, reason: str) -> None:
        self.close()
        self._lost = port_problem(self.port) or reason
        self._wake.set()

    async def transact(self, request: bytes, address: bytes | None, timeout: float) -> Frame | BadFrame:
        """Send `request` and return the first reply frame from `address` (None: from any meter,
        for a read of the address). Raises TimeoutError, or PortLost when the port failed."""
        async with self.lock:
            ser = self._serial
            if ser is None:
                raise PortLost(self._lost or f"serial port {self.port} is closed")
            self._buf.clear()  # whatever arrived between requests belongs to no request: resync
            self.sent_at = time.monotonic()  # the round trip starts here, not while waiting for the bus
            try:
                ser.write(request)
            except (OSError, serial.SerialException) as exc:
                self._drop(f"serial port {self.port} failed: {exc}")
                raise PortLost(self._lost or str(exc)) from None
            deadline = time.monotonic() + timeout
            while True:
                used, got = parse(self._buf)
                if got is not None:
                    del self._buf[:used]
                    mine = address is None or got.address == address
                    if mine and (isinstance(got, BadFrame) or got.control & 0x80):  # a reply, not an echo
                        return got
                    continue
                if used:
                    del self._buf[:used]
                if self._lost is not None or self._serial is None:
                    raise PortLost(self._lost or f"serial port {self.port} is closed")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), left)


class Dlt645Driver(DriverBase):
    def __init__(self, bus: MeterBus, address: str, timeout: float, points: list[MeterPoint]):
        self.bus = bus
        self.address = address
        self._address = address_bytes(address)
        self.timeout = timeout
        self.points = points
        self._requests = [read_request(address, p.di) for p in points]
        self.latency = LatencyHistogram()
        self.request_count = 0
        self.error_count = 0

    @property
    def connected(self) -> bool:
        return self.bus.connected

    async def connect(self) -> None:
        await self.bus.open()

    async def close(self) -> None:
        return None  # the port belongs to the bus: closed when it fails, not when one meter stops

    async def write(self, point_id: str, raw_value: object) -> None:
        raise WriteFailed("DL/T 645 points are read-only: the driver sends reads only")

    async def read(self) -> list[object]:
        if not self.bus.connected:
            await self.bus.open()
        values: list[object] = []
        answered = 0
        silent: str | None = None
        for p, request in zip(self.points, self._requests, strict=True):
            if silent is not None:
                values.append(PointError(f"not read: {silent} earlier in this poll"))
                continue
            self.request_count += 1
            try:
                got = await self.bus.transact(request, self._address, self.timeout)
            except TimeoutError:
                self.error_count += 1
                silent = f"no response from meter {self.address} within {self.timeout:g}s"
                values.append(PointError(f"{silent} (DI {p.di_text})"))
                continue
            except PortLost as exc:
                self.error_count += 1
                raise DeviceUnreachable(str(exc)) from None
            self.latency.observe(time.monotonic() - self.bus.sent_at)
            answered += 1
            value = self._value(p, got)
            if isinstance(value, PointError):
                self.error_count += 1
            values.append(value)
        if answered == 0 and silent is not None:
            raise DeviceUnreachable(silent)
        return values

    def _value(self, p: MeterPoint, got: Frame | BadFrame) -> object:
        if isinstance(got, BadFrame):
            return PointError(f"{got.reason} in the reply from meter {self.address} (DI {p.di_text})")
        control = got.control
        if control & 0x1F != READ:
            return PointError(
                f"meter {self.address} answered control code {control:02X} to a read (DI {p.di_text})"
            )
        if control & 0x40:
            err = got.data[0] if got.data else 0
            return PointError(f"meter answered ERR 0x{err:02X}: {err_meaning(err)} (DI {p.di_text})")
        data = got.data
        if len(data) < 4 or int.from_bytes(data[:4], "little") != p.di:
            what = (
                f"DI {int.from_bytes(data[:4], 'little'):08X}"
                if len(data) >= 4
                else f"{len(data)} data bytes"
            )
            return PointError(f"meter {self.address} answered with {what} to a read of DI {p.di_text}")
        raw = data[4:]
        if control & 0x20 and len(raw) < p.format.size:
            return PointError(
                f"meter {self.address} sends DI {p.di_text} in follow-up frames, which the driver does not read"
            )
        try:
            value = decode(p.format, raw[: p.format.size] if control & 0x20 else raw)
        except FormatError as exc:
            return PointError(f"DI {p.di_text} from meter {self.address}: {exc}")
        if p.type not in ("float64", "float32", "string") and isinstance(value, float):
            return round(value)
        return value


async def read_address(bus: MeterBus, timeout: float) -> str | Frame | BadFrame:
    """Ask every meter on the bus for its address (C = 0x13 to AAAAAAAAAAAA). The reply's
    address field is the meter's; only one meter may be on the bus when this is asked."""
    got = await bus.transact(read_address_request(), None, timeout)
    if isinstance(got, Frame) and got.control == READ_ADDRESS | 0x80:
        return got.address_text
    return got
