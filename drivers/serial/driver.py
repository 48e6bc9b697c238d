"""Line-protocol instruments on a serial port (pyserial, read through the event loop).

`stream` instruments print on their own (a scale printing every weighing, a barcode reader
each scan): every valid frame is one sample, stamped when its last byte arrived. `poll`
instruments answer a request (`SI\r\n` asks a scale for a stable weight): `read()` sends it
and waits for the first valid answer.

Frames that are not values (noise, partial, overlong, not text, not matching the pattern) are
counted per kind, logged at most once a minute per kind, and never passed on. A partial frame
followed by a silence longer than `partial_timeout` is discarded, so the rest of it arriving
later cannot be joined to it into a different, wrong value.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import deque
from typing import Any

import serial
from edgegw.gateway.logs import RateLimited

from ..base import DeviceUnreachable, DriverBase, LatencyHistogram, WriteFailed
from ..serialport import line_setting, open_failure, port_problem
from .framing import Framer, Problem
from .lines import FrameRejected, LineParser

log = logging.getLogger("edgegw.serial")

FRAME_ERRORS = ("noise", "partial", "overlong", "encoding", "no_match", "overrun")
_QUEUE = 1024  # frames received and not yet taken by the gateway (a burst of scans)


class SerialLineDriver(DriverBase):
    def __init__(
        self,
        device: str,
        port: str,
        settings: tuple[int, int, str, float],
        framer: Framer,
        parser: LineParser,
        *,
        request: bytes | None = None,
        timeout: float = 1.0,
        partial_timeout: float = 1.0,
        idle_timeout: float | None = None,
    ):
        self.device = device
        self.port = port
        self.settings = settings
        self.framer = framer
        self.parser = parser
        self.request = request
        self.stream = request is None
        self.timeout = timeout
        self.partial_timeout = partial_timeout
        self.idle_timeout = idle_timeout  # stream mode: no valid frame this long means offline
        self.request_count = 0  # valid frames received
        self.error_count = 0  # frames rejected, for any reason
        self.frame_errors: dict[str, int] = dict.fromkeys(FRAME_ERRORS, 0)
        self.last_rejected: str | None = None
        self.latency = LatencyHistogram()  # poll mode: request to answer
        self._serial: serial.Serial | None = None
        self._frames: deque[tuple[list[object], int]] = deque()
        self._wake = asyncio.Event()
        self._lost: str | None = None
        self._last_byte = 0.0
        self._ratelimit = RateLimited(log, 60.0)

    @property
    def connected(self) -> bool:
        return self._serial is not None

    async def connect(self) -> None:
        await self.close()
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
        self._frames.clear()
        self.framer.discard()
        ser.reset_input_buffer()  # what queued while nobody listened is of another time
        asyncio.get_running_loop().add_reader(ser.fileno(), self._readable)

    async def close(self) -> None:
        self._release()

    def _release(self) -> None:
        ser, self._serial = self._serial, None
        if ser is not None:
            with contextlib.suppress(RuntimeError, ValueError, OSError):
                asyncio.get_running_loop().remove_reader(ser.fileno())
            with contextlib.suppress(OSError, serial.SerialException):
                ser.close()

    def _drop(self, reason: str) -> None:
        self._release()
        p = self.framer.discard()
        if p is not None:
            self._problem(p.kind, repr(p.data))
        self._lost = port_problem(self.port) or reason
        self._wake.set()

    # ---- receiving ----

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
        if not data:  # readable and nothing to read: the other end hung up (adapter gone)
            self._drop(f"serial port {self.port} hung up")
            return
        now = time.monotonic()
        if self.framer.pending and now - self._last_byte > self.partial_timeout:
            self._report(self.framer.discard())
        self._last_byte = now
        frames, problems = self.framer.feed(data)
        for p in problems:
            self._report(p)
        if not frames:
            return
        ts = time.time_ns() // 1_000_000
        for frame in frames:
            parsed = self.parser.parse(frame)
            if parsed is None:
                continue
            if isinstance(parsed, FrameRejected):
                self._problem(parsed.kind, parsed.text)
                continue
            if len(self._frames) >= _QUEUE:
                self._frames.popleft()
                self._problem("overrun", "frames arrive faster than they are taken")
            self._frames.append((parsed, ts))
            self.request_count += 1
        self._wake.set()

    def _report(self, p: Problem | None) -> None:
        if p is not None:
            self._problem(p.kind, repr(p.data))

    def _problem(self, kind: str, sample: str) -> None:
        self.frame_errors[kind] += 1
        self.error_count += 1
        self.last_rejected = f"{kind}: {sample}"
        self._ratelimit.log(
            kind,
            logging.WARNING,
            "serial frame rejected",
            device=self.device,
            kind=kind,
            frame=sample,
            total=self.frame_errors[kind],
        )

    async def next_sample(self, timeout: float | None) -> tuple[list[object], int] | None:
        """The next valid frame's values (point order) and its time (ms since the epoch); None
        when `timeout` passes without one. Raises DeviceUnreachable when the port is lost."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self._frames:
                return self._frames.popleft()
            if self._lost is not None or self._serial is None:
                raise DeviceUnreachable(self._lost or f"serial port {self.port} is closed")
            self._wake.clear()
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return None
            wait = self.partial_timeout if remaining is None else min(remaining, self.partial_timeout)
            try:
                await asyncio.wait_for(self._wake.wait(), wait + 0.05)
            except TimeoutError:
                # the line went quiet: an unfinished frame will not be finished
                if self.framer.pending and time.monotonic() - self._last_byte > self.partial_timeout:
                    self._report(self.framer.discard())

    # ---- poll mode ----

    async def read(self) -> list[object]:
        if self._serial is None:
            await self.connect()
        assert self._serial is not None and self.request is not None
        if self._frames:
            self._frames.clear()  # answers to nobody (a late one, or the instrument on its own)
        rejected = self.error_count
        sent = time.monotonic()
        try:
            self._serial.write(self.request)
        except (OSError, serial.SerialException) as exc:
            self._drop(f"serial port {self.port} failed: {exc}")
            raise DeviceUnreachable(self._lost or str(exc)) from None
        got = await self.next_sample(self.timeout)
        if got is None:
            self.error_count += 1
            why = f"no valid answer to {self.request.decode('latin-1')!r} within {self.timeout:g}s"
            if self.error_count - 1 > rejected:
                why += f" (last frame rejected: {self.last_rejected})"
            raise DeviceUnreachable(why)
        self.latency.observe(time.monotonic() - sent)
        return got[0]

    async def write(self, point_id: str, raw_value: Any) -> None:
        raise WriteFailed("a serial line-protocol instrument has no writable points")
