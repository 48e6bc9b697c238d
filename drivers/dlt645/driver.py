"""DL/T 645-2007 meters on an RS-485 bus, through pyserial read by the event loop.

Every meter configured on one serial port goes through one `MeterBus`: one open port, one
request at a time, each request after the FE wake-up preamble. The port stays open while a meter
on it runs: the last one to stop (removed by a reload, the gateway stopping) closes it. A meter
reads one data identifier per request, so a poll is one request per point. A meter that does not
answer costs the bus one timeout per poll: its remaining requests of that poll are skipped, and
it goes offline when nothing of it answered, while the other meters keep being read. Its next
request waits until one more timeout has passed since, so that a late reply is dropped rather
than taken for the answer to that request (an abnormal reply carries no DI to tell them apart).
An abnormal reply makes only its point bad, with the meaning of its error bits. A reply with a
bad checksum makes its point bad, unless a good reply from the meter follows it in what has
arrived (line noise that looked like a frame); the bus drops whatever else arrived (it starts
the next request clean). A port that disappears (a USB adapter unplugged) makes every meter on
it unreachable; each poll tries to open it again (with the scheduler's backoff).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
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
    """One serial port and the meters on it. Shared by the devices configured on that port: each
    driver holds the bus while it runs, and the last one to close closes the port."""

    _buses: ClassVar[dict[str, MeterBus]] = {}
    OPEN_TIMEOUT: ClassVar[float] = 5.0  # a port that takes longer to open is unreachable

    @classmethod
    def for_port(cls, port: str, settings: Settings) -> MeterBus:
        """The bus of `port`, made anew when the line settings changed (a reload) or when the
        one there belongs to another event loop (the gateway started again in this process)."""
        loop = _running_loop()
        bus = cls._buses.get(port)
        if bus is not None and (bus.settings != settings or _other_loop(bus.loop, loop)):
            bus.close()
            cls._forget(bus)
            bus = None
        if bus is None:
            bus = cls._buses[port] = MeterBus(port, settings)
        return bus

    @classmethod
    def _forget(cls, bus: MeterBus) -> None:
        if cls._buses.get(bus.port) is bus:
            del cls._buses[bus.port]

    def __init__(self, port: str, settings: Settings):
        self.port = port
        self.settings = settings
        self.loop = _running_loop()  # the loop its locks and its reader belong to
        self.lock = asyncio.Lock()
        self._opening = asyncio.Lock()
        self._serial: serial.Serial | None = None
        self._reader_loop: asyncio.AbstractEventLoop | None = None
        self._buf = bytearray()
        self._wake = asyncio.Event()
        self._lost: str | None = None
        self._quiet_until: dict[bytes, float] = {}  # meter address -> until when late replies may come
        self.users = 0
        self.sent_at = 0.0

    @property
    def connected(self) -> bool:
        return self._serial is not None

    def hold(self) -> None:
        self.users += 1

    def release(self) -> None:
        """One driver less on the bus: the last one closes the port and the bus is forgotten."""
        self.users = max(0, self.users - 1)
        if self.users == 0:
            self.close()
            self._forget(self)

    async def open(self) -> None:
        async with self._opening:  # the meters of a bus start together: one of them opens it
            if self._serial is None:
                await self._open()

    async def _open(self) -> None:
        problem = port_problem(self.port)
        if problem:
            raise DeviceUnreachable(problem)
        baudrate, bytesize, parity, stopbits = self.settings
        loop = asyncio.get_running_loop()
        opening = loop.run_in_executor(
            None,
            functools.partial(
                serial.Serial,
                self.port,
                baudrate=baudrate,
                bytesize=bytesize,
                parity=parity,
                stopbits=stopbits,
                timeout=0,
                exclusive=True,
            ),
        )
        try:
            ser = await asyncio.wait_for(asyncio.shield(opening), self.OPEN_TIMEOUT)
        except BaseException as exc:
            # timed out or cancelled: the open goes on in its thread; the port it opens is closed
            opening.add_done_callback(_close_opened)
            if not isinstance(exc, Exception):
                raise
            if isinstance(exc, TimeoutError):
                reason = f"opening took longer than {self.OPEN_TIMEOUT:g}s"
                raise DeviceUnreachable(
                    f"cannot open serial port {self.port} at {line_setting(self.settings)}: {reason}"
                ) from None
            # SerialException, termios.error, OSError, ValueError: cannot open
            raise DeviceUnreachable(
                port_problem(self.port)
                or f"cannot open serial port {self.port} at {line_setting(self.settings)}{open_failure(exc)}"
            ) from None
        try:
            ser.reset_input_buffer()
            loop.add_reader(ser.fileno(), self._readable)
        except Exception as exc:  # the port opened but cannot be used: it is not left open
            with contextlib.suppress(Exception):
                ser.close()
            raise DeviceUnreachable(
                port_problem(self.port) or f"serial port {self.port} failed after opening: {exc}"
            ) from None
        self._serial = ser
        self._reader_loop = loop
        self.loop = loop
        self._lost = None
        self._buf.clear()

    def close(self) -> None:
        ser, self._serial = self._serial, None
        loop, self._reader_loop = self._reader_loop, None
        if ser is not None:
            if loop is not None:
                with contextlib.suppress(Exception):  # a loop already closed has no reader left
                    loop.remove_reader(ser.fileno())
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

    async def transact(
        self, request: bytes, address: bytes | None, timeout: float, di: int | None = None
    ) -> Frame | BadFrame:
        """Send `request` and return the first reply frame from `address` (None: from any meter,
        for a read of the address). With `di`, a normal reply carrying another DI is a late
        answer to an earlier request (one that timed out) and is passed over. After a timeout,
        the next request to that meter waits out one more `timeout` first: an abnormal reply
        carries no DI, so a late one must arrive (and be dropped) before the next request goes.
        Raises TimeoutError, or PortLost when the port failed."""
        if address is not None:
            wait = self._quiet_until.pop(address, 0.0) - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
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
                        if isinstance(got, BadFrame) and address is not None:
                            got = self._reply_after(address, di) or got  # noise that looked like a frame
                        if not _stale(got, di):
                            return got
                    continue
                if used:
                    del self._buf[:used]
                if self._lost is not None or self._serial is None:
                    raise PortLost(self._lost or f"serial port {self.port} is closed")
                left = deadline - time.monotonic()
                if left <= 0:
                    if address is not None:
                        self._quiet_until[address] = time.monotonic() + timeout
                    raise TimeoutError
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), left)

    def _reply_after(self, address: bytes, di: int | None) -> Frame | None:
        """A good reply from `address` among the bytes already received, if there is one."""
        buf = bytes(self._buf)
        while True:
            used, got = parse(buf)
            if got is None:
                return None
            buf = buf[used:]
            if (
                isinstance(got, Frame)
                and got.address == address
                and got.control & 0x80
                and not _stale(got, di)
            ):
                return got


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _other_loop(mine: asyncio.AbstractEventLoop | None, now: asyncio.AbstractEventLoop | None) -> bool:
    """A bus of `mine` cannot serve `now`: its loop ended, or another loop runs."""
    return mine is not None and (mine.is_closed() or (now is not None and mine is not now))


def _close_opened(opening: asyncio.Future[serial.Serial]) -> None:
    """Close a port whose open finished after it was given up on (its exclusive lock with it)."""
    if opening.cancelled() or opening.exception() is not None:
        return
    with contextlib.suppress(Exception):
        opening.result().close()


def _stale(got: Frame | BadFrame, di: int | None) -> bool:
    """A normal read reply for another DI than the one asked: a meter's late answer."""
    if di is None or isinstance(got, BadFrame) or got.control & 0x40 or got.control & 0x1F != READ:
        return False
    return len(got.data) >= 4 and int.from_bytes(got.data[:4], "little") != di


class Dlt645Driver(DriverBase):
    def __init__(self, bus: MeterBus, address: str, timeout: float, points: list[MeterPoint]):
        self.bus = bus
        bus.hold()
        self._holding = True
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
        self._hold()
        await self.bus.open()

    async def close(self) -> None:
        """The meter stops (removed by a reload, the gateway stopping): the last meter of the
        bus to stop closes the port. Reading again holds the bus of the port again."""
        if self._holding:
            self._holding = False
            self.bus.release()

    def _hold(self) -> None:
        if not self._holding:
            self.bus = MeterBus.for_port(self.bus.port, self.bus.settings)
            self.bus.hold()
            self._holding = True

    async def write(self, point_id: str, raw_value: object) -> None:
        raise WriteFailed("DL/T 645 points are read-only: the driver sends reads only")

    async def read(self) -> list[object]:
        self._hold()
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
                got = await self.bus.transact(request, self._address, self.timeout, p.di)
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
