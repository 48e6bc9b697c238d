"""DL/T 645-2007 meters on a pseudo-terminal pair: several addresses on one simulated RS-485 bus.

For each serial port of a config, socat makes two linked pseudo-terminals: the gateway opens the
path the config names, the meters answer at `<path>.sim`. Each meter answers reads (C = 0x11)
of its configured data identifiers with values that follow the dictionary (or the value held
through the control API), ERR 0x02 (no requested data) for any other DI, and the read of its
address (C = 0x13) sent to the wildcard AAAAAAAAAAAA, which `doctor` uses to find a meter whose
nameplate address is not the configured one. Replies start with the FE preamble.

A pty carries bytes at any speed, so the simulator paces itself like the line: before a reply
it waits the time the request and the reply take on the wire at the configured baud rate (1
start bit, the data bits, a parity bit unless parity is N, the stop bits per byte) plus the
meter's turnaround, 20 ms by default (`EDGEGW_DLT645_TURNAROUND`, in seconds; 0 measures pure
line rate).

Faults, per meter: `silent` (never answers), `slow` (answers `delay` seconds late), `garbage`
(line noise before each reply: a stray 0x68, and a fake header `68 x6 68 11 FF` announcing 255
data bytes), `checksum` (replies with a wrong CS), `error` (an abnormal reply with ERR = `code`
to every read) and `error:<point id>` (the same for that point's DI only). `unplug()` makes
the port vanish, as a pulled USB adapter.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from edgegw.gateway.dictionary import DictionaryEntry
from edgegw.gateway.writeback import raw_value
from edgegw.simulators.faults import Fault, OnPty, PtyPair
from edgegw.simulators.values import HeldValues, ValueGenerator

from .checks import Dlt645Plan, MeterPoint
from .codec import (
    READ,
    READ_ADDRESS,
    WILDCARD,
    Format,
    FormatError,
    Frame,
    address_bytes,
    encode,
    frame,
    parse,
)

if TYPE_CHECKING:
    from .config import Dlt645Device

log = logging.getLogger("edgegw.simulate")

METER_FAULTS = ("none", "silent", "slow", "garbage", "checksum", "error")
# line noise: a 0x68 that starts nothing, then a fake header `68 x6 68 11 FF` whose length
# (255) no frame has and which would swallow the reply behind it if it were believed
NOISE = b"\x00\x55\x68\x13\xff\x21" + b"\x68\x21\x43\x65\x87\x09\x00\x68\x11\xff"


def char_bits(settings: tuple[int, int, str, float]) -> float:
    """Bits per character on the line: start bit, data bits, parity bit, stop bits."""
    _, bytesize, parity, stopbits = settings
    return 1 + bytesize + (0 if parity == "N" else 1) + stopbits


def turnaround() -> float:
    try:
        return max(0.0, float(os.environ.get("EDGEGW_DLT645_TURNAROUND", "0.02")))
    except ValueError:
        return 0.02


@dataclass
class SimulatedMeter(HeldValues):
    """One meter: what the control API sees of it (`unit_id` is its address)."""

    unit_id: str = ""
    points: list[MeterPoint] = field(default_factory=list)
    fault: Fault = field(default_factory=Fault)
    faults: tuple[str, ...] = METER_FAULTS

    @classmethod
    def of(
        cls, dev: Dlt645Device, entries: list[DictionaryEntry], plan: Dlt645Plan, period: float
    ) -> SimulatedMeter:
        planned = {p.id for p in plan.points}
        kept = [e for e in entries if e.id in planned]
        return cls(
            dev.id,
            kept,
            [ValueGenerator(dev.id, e, period) for e in kept],
            unit_id=dev.connection.address,
            points=list(plan.points),
            faults=METER_FAULTS + tuple(f"error:{p.id}" for p in plan.points),
        )

    def generated(self, entry: DictionaryEntry, gen: ValueGenerator, t: float) -> object:
        p = next(q for q in self.points if q.id == entry.id)
        fmt = p.format
        if not fmt.numeric:
            return _text_value(fmt, self.unit_id, gen.seed)
        v = gen.value(t)
        if isinstance(v, bool) or not isinstance(v, int | float):
            v = 0.0
        if p.di >> 24 == 0x00:  # an energy register: counts up
            v = (gen.seed % 10000) + t * 0.01
        raw = float(v)
        if not fmt.signed:
            raw = abs(raw)
        raw = max(-fmt.largest, min(fmt.largest, raw))
        if entry.type not in ("float64", "float32"):
            raw = round(raw)
        return raw * entry.scale + entry.offset if (entry.scale, entry.offset) != (1.0, 0.0) else raw

    def set_fault(self, fault: Fault) -> None:
        self.fault = fault


def _text_value(fmt: Format, address: str, seed: int) -> str:
    now = time.localtime()
    if fmt.text == "YYMMDDWW":
        return time.strftime("%Y-%m-%d", now)
    if fmt.text == "hhmmss":
        return time.strftime("%H:%M:%S", now)
    if fmt.text == "YYMMDDhhmm":
        return time.strftime("%Y-%m-%dT%H:%M", now)
    if fmt.text == "YYMMDDhhmmss":
        return time.strftime("%Y-%m-%dT%H:%M:%S", now)
    if fmt.text == "MMDDhhmm":
        return time.strftime("%m-%dT%H:%M", now)
    digits = fmt.size * 2
    if digits == 12:
        return address
    return f"{seed % 10**digits:0{digits}d}"


class MeterBusSimulator(OnPty):
    """The meters of one RS-485 bus behind one pty pair."""

    def __init__(self, port: str, settings: tuple[int, int, str, float], meters: list[SimulatedMeter]):
        self.path = port
        self.settings = settings
        self.pair = PtyPair(port)
        self.devices = {m.id: m for m in meters}
        self._by_address = {address_bytes(m.unit_id): m for m in meters}
        self.plugged = False
        self.bits = char_bits(settings)
        self.turnaround = turnaround()
        self._fd: int | None = None
        self._task: asyncio.Task[None] | None = None

    def describe(self) -> list[str]:
        baud = self.settings[0]
        return [
            f"{m.id}: dlt645 meter {m.unit_id} on {self.path} (meters answer on {self.pair.sim_link}, "
            f"paced at {baud} baud + {self.turnaround * 1000:g} ms turnaround), {len(m.points)} points"
            for m in self.devices.values()
        ]

    def wire_time(self, nbytes: int) -> float:
        return nbytes * self.bits / self.settings[0]

    async def start(self) -> None:
        await self.pair.open()
        self._fd = os.open(self.pair.sim_link, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        self._task = asyncio.create_task(self._serve())
        self.plugged = True

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        await self.pair.close()
        self.plugged = False

    async def _serve(self) -> None:
        assert self._fd is not None
        loop = asyncio.get_running_loop()
        got = asyncio.Event()
        loop.add_reader(self._fd, got.set)
        buf = bytearray()
        try:
            while True:
                await got.wait()
                got.clear()
                try:
                    buf += os.read(self._fd, 4096)
                except (BlockingIOError, OSError):
                    continue
                while True:
                    used, request = parse(buf)
                    del buf[:used]
                    if request is None:
                        break
                    if isinstance(request, Frame) and not request.control & 0x80:
                        await self._answer(request, used)
        finally:
            with contextlib.suppress(ValueError, OSError):
                loop.remove_reader(self._fd)

    async def _answer(self, request: Frame, request_bytes: int) -> None:
        reply: bytes | None = None
        meter: SimulatedMeter | None = None
        if request.control == READ_ADDRESS and request.address == address_bytes(WILDCARD):
            answering = [m for m in self.devices.values() if m.fault.mode != "silent"]
            if len(answering) > 1:  # every meter answers at once: the replies collide on the wire
                replies = [self._address_reply(m) for m in answering]
                size = max(len(r) for r in replies)
                reply = bytes(size)
                for r in replies:
                    reply = bytes(a ^ b for a, b in zip(reply, r.ljust(size, b"\xff"), strict=True))
            elif answering:
                meter = answering[0]
                reply = self._address_reply(meter)
        elif request.address in self._by_address:
            meter = self._by_address[request.address]
            if meter.fault.mode == "silent":
                return
            if request.control == READ and len(request.data) == 4:
                reply = self._read_reply(meter, int.from_bytes(request.data, "little"))
        if reply is None:
            return  # broadcasts, other meters' addresses, commands a meter here does not take
        if meter is not None:
            meter.requests += 1
            mode = meter.fault.mode
            if mode == "checksum":
                reply = reply[:-2] + bytes([(reply[-2] + 1) & 0xFF]) + reply[-1:]
            elif mode == "garbage":
                reply = NOISE + reply
        delay = self.wire_time(request_bytes + len(reply)) + self.turnaround
        if meter is not None and meter.fault.mode == "slow":
            delay += meter.fault.delay
        await asyncio.sleep(delay)
        if self._fd is not None:
            with contextlib.suppress(BlockingIOError, OSError):  # nobody reads the other end
                os.write(self._fd, reply)

    def _address_reply(self, meter: SimulatedMeter) -> bytes:
        a = address_bytes(meter.unit_id)
        return frame(a, READ_ADDRESS | 0x80, a)

    def _read_reply(self, meter: SimulatedMeter, di: int) -> bytes:
        a = address_bytes(meter.unit_id)
        point = next((p for p in meter.points if p.di == di), None)
        fault = meter.fault
        if fault.mode == "error" or (point is not None and fault.mode == f"error:{point.id}"):
            return frame(a, READ | 0xC0, bytes([fault.code]))
        if point is None:
            return frame(a, READ | 0xC0, b"\x02")  # no requested data
        entry = next(e for e in meter.entries if e.id == point.id)
        value = meter.values()[point.id]
        try:
            raw = raw_value(entry, value) if point.format.numeric else value
            data = encode(point.format, raw)
        except (FormatError, TypeError, ValueError) as exc:
            log.warning(
                "%s: %s = %r cannot be sent as %s: %s; answering ERR 0x01",
                meter.id,
                point.id,
                value,
                point.format.text,
                exc,
            )
            return frame(a, READ | 0xC0, b"\x01")
        return frame(a, READ | 0x80, di.to_bytes(4, "little") + data)
