"""Modbus TCP driver on pymodbus' asyncio client: one connection per device.

After a timeout the connection is closed, so that a late answer cannot be taken for the next
request's; the rest of that poll cycle's requests are marked `timeout`.

Every frame the device sends is checked before pymodbus decodes it (response.frame_problem):
an answer that is not a valid answer to the request in progress fails that request at once
with BadResponse saying what is wrong, instead of pymodbus failing to decode it and the request
waiting for its timeout. The connection stays open: the frame's own length kept the stream in
step. Bytes that are not a Modbus/TCP frame at all (protocol id not 0, no length) put the
stream out of step: the connection is closed, as after a timeout. Frames for another unit or
transaction, and a frame cut short, are named in the timeout reason.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from pymodbus.client import AsyncModbusTcpClient

from ..base import DeviceUnreachable
from .codec import BlockDecoder, RegisterPoint
from .driver import ModbusDriver, _short
from .planner import ReadRequest
from .response import BadResponse, Request, frame_problem


class ModbusTcpDriver(ModbusDriver):
    def __init__(
        self,
        host: str,
        port: int,
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
        self.host, self.port = host, port
        self._client: AsyncModbusTcpClient | None = None
        self._pending: Request | None = None  # the request in progress
        self._header = b""  # its MBAP transaction id and unit, as sent
        self._problem: str | None = None  # what is wrong with its answer
        self._resync = False  # the answer was not a frame: the stream is out of step
        self._stray: str | None = None  # what arrived instead of an answer, for the timeout reason

    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.connected

    async def connect(self) -> None:
        await self.close()
        client = AsyncModbusTcpClient(
            self.host,
            port=self.port,
            timeout=self.timeout,
            retries=0,
            reconnect_delay=0,
            trace_packet=self._trace,
        )
        try:
            ok = await asyncio.wait_for(client.connect(), self.timeout + 1)
        except (TimeoutError, OSError):
            ok = False
        if not ok:
            client.close()
            raise DeviceUnreachable(await self._why_unreachable())
        self._client = client

    async def _why_unreachable(self) -> str:
        # pymodbus only says False; one plain connect attempt tells the user why.
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(self.host, self.port), self.timeout)
            writer.close()
            return f"cannot connect to {self.host}:{self.port}"
        except TimeoutError:
            return f"connect to {self.host}:{self.port} timed out"
        except OSError as exc:
            why = os.strerror(exc.errno).lower() if exc.errno else str(exc)
            return f"cannot connect to {self.host}:{self.port}: {why}"

    async def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    async def _request(self, call: Callable[[Any], Awaitable[Any]], asked: Request) -> Any:
        if self._client is None:
            raise ConnectionError("not connected")
        self._pending, self._problem, self._resync = asked, None, False
        try:
            resp = await asyncio.wait_for(call(self._client), self.timeout + 0.5)
        finally:
            self._pending = None
        if self._problem is not None:
            raise BadResponse(self._problem, self._resync)
        return resp

    def _trace(self, sending: bool, data: bytes) -> bytes:
        """pymodbus' packet hook: every frame sent, and the receive buffer each time bytes
        arrive. A complete frame that answers the request in progress wrongly is replaced by an
        exception answer of the same length, which pymodbus takes as the answer (so the request
        ends now) and _request turns into BadResponse with the reason kept here."""
        if sending:
            self._header, self._stray = data[0:2] + data[6:7], None
            return data
        asked = self._pending
        pos = 0
        while asked is not None and len(data) - pos >= 7:
            header = data[pos : pos + 7]
            pid, length = int.from_bytes(header[2:4], "big"), int.from_bytes(header[4:6], "big")
            if pid != 0 or length < 1:
                # not a Modbus/TCP frame: nothing after it can be trusted either
                self._problem = (
                    f"bad response for {asked.what}: not a Modbus/TCP frame (header {header.hex(' ')})"
                )
                self._resync = True
                return data[:pos] + self._substitute(asked, len(data) - pos)
            end = pos + 6 + length
            if len(data) < end:
                self._stray = f"received {len(data) - pos} of the {end - pos} bytes of a response"
                return data
            if header[0:2] + header[6:7] != self._header:
                self._stray = (
                    f"the device answered as unit {header[6]}, expected unit {self._header[2]}"
                    if header[0:2] == self._header[0:2]
                    else "answers to other requests only"
                )
                pos = end  # pymodbus skips such a frame
                continue
            problem = frame_problem(data[pos + 7 : end], asked)
            if problem is None:
                return data
            self._problem = problem
            return data[:pos] + self._substitute(asked, end - pos) + data[end:]
        return data

    def _substitute(self, asked: Request, size: int) -> bytes:
        """An exception answer to `asked` of `size` bytes (at least the 9 one needs)."""
        size = max(size, 9)
        return (
            self._header[0:2]
            + b"\x00\x00"
            + (size - 6).to_bytes(2, "big")
            + self._header[2:3]
            + bytes([asked.function | 0x80])
            + bytes(size - 8)
        )

    async def _after_timeout(self) -> bool:
        await self.close()
        return True

    def _timeout_reason(self) -> str:
        reason = super()._timeout_reason()
        return f"{reason}: {self._stray}" if self._stray else reason

    def _lost_reason(self, exc: BaseException) -> str:
        return f"connection to {self.host}:{self.port} lost: {_short(exc)}"
