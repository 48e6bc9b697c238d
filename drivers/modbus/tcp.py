"""Modbus TCP driver: one connection per device, speaking Modbus/TCP itself over an asyncio
protocol (MBAP header + PDU; Modbus Application Protocol v1.1b3 and Messaging on TCP/IP
Implementation Guide v1.0b). pymodbus' client did the same work at several times the CPU per
request, and at a thousand requests a second that was a fifth of the gateway's.

One request at a time per connection. Every frame the device sends is checked against the
request in progress (response.frame_problem): an answer that is not a valid answer to it
fails that request at once with BadResponse saying what is wrong. The connection stays open:
the frame's own length kept the stream in step. Frames for another unit or transaction are
skipped and named in the timeout reason, as is a frame cut short. Bytes that are not a
Modbus/TCP frame at all (protocol id not 0, no length) put the stream out of step: the
connection is closed, as after a timeout, so a late answer cannot be taken for the next
request's; the rest of that poll cycle's requests are marked `timeout`.
"""

from __future__ import annotations

import asyncio
import os
import struct
from collections.abc import Sequence

from ..base import DeviceUnreachable
from .codec import BlockDecoder, RegisterPoint
from .driver import ModbusDriver, _short
from .planner import ReadRequest
from .response import BadResponse, Reply, Request, frame_problem, request_pdu

_MBAP = struct.Struct(">HHHB")  # transaction id, protocol id (0), length, unit id


class _Link(asyncio.Protocol):
    """The connection: frames out, and frames in matched to the request in progress."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiting: asyncio.Future[bytes] | None = None
        self.header = b""  # transaction id and unit of the request in progress
        self.asked: Request | None = None
        self.stray: str | None = None  # what arrived instead of an answer, for the timeout reason
        self.lost: BaseException | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = exc or ConnectionResetError("connection closed by the device")
        self.transport = None
        self._fail(ConnectionError(str(self.lost) or type(self.lost).__name__))

    def _fail(self, exc: BaseException) -> None:
        fut, self.waiting = self.waiting, None
        if fut is not None and not fut.done():
            fut.set_exception(exc)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        while len(buf) >= 7:
            pid, length = int.from_bytes(buf[2:4], "big"), int.from_bytes(buf[4:6], "big")
            if pid != 0 or length < 1:
                # not a Modbus/TCP frame: nothing after it can be trusted either
                header = bytes(buf[:7])
                buf.clear()
                asked = self.asked
                what = asked.what if asked is not None else "no request"
                self._fail(
                    BadResponse(
                        f"bad response for {what}: not a Modbus/TCP frame (header {header.hex(' ')})", True
                    )
                )
                return
            end = 6 + length
            if len(buf) < end:
                self.stray = f"received {len(buf)} of the {end} bytes of a response"
                return
            head = bytes(buf[0:2] + buf[6:7])
            pdu = bytes(buf[7:end])
            del buf[:end]
            fut = self.waiting
            if fut is None or head != self.header:
                if self.header:
                    self.stray = (
                        f"the device answered as unit {head[2]}, expected unit {self.header[2]}"
                        if head[0:2] == self.header[0:2]
                        else "answers to other requests only"
                    )
                continue
            self.waiting = None
            if not fut.done():
                fut.set_result(pdu)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.abort()
            self.transport = None


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
        self._link: _Link | None = None
        self._tid = 0
        self._stray: str | None = None  # what arrived instead of the last answer

    @property
    def connected(self) -> bool:
        return self._link is not None and self._link.transport is not None

    async def connect(self) -> None:
        await self.close()
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.timeout):
                _, link = await loop.create_connection(_Link, self.host, self.port)
        except TimeoutError:
            raise DeviceUnreachable(f"connect to {self.host}:{self.port} timed out") from None
        except OSError as exc:
            why = os.strerror(exc.errno).lower() if exc.errno else _short(exc)
            raise DeviceUnreachable(f"cannot connect to {self.host}:{self.port}: {why}") from None
        self._link = link
        self._tid = 0  # transaction ids count from 1 on each connection

    async def close(self) -> None:
        if self._link is not None:
            self._link.close()
            self._link = None

    async def _request(self, asked: Request) -> Reply:
        link = self._link
        if link is None or link.transport is None:
            raise ConnectionError("not connected")
        self._tid = tid = (self._tid + 1) & 0xFFFF
        pdu = request_pdu(asked)
        head = _MBAP.pack(tid, 0, len(pdu) + 1, self.unit_id)
        link.header = head[0:2] + head[6:7]
        link.asked, link.stray = asked, None
        fut = link.waiting = asyncio.get_running_loop().create_future()
        link.transport.write(head + pdu)
        try:
            async with asyncio.timeout(self.timeout):
                answer = await fut
        finally:
            link.waiting = None
            self._stray = link.stray
        problem = frame_problem(answer, asked)
        if problem is not None:
            raise BadResponse(problem)
        return Reply(answer)

    async def _after_timeout(self) -> bool:
        await self.close()
        return True

    def _timeout_reason(self) -> str:
        reason = super()._timeout_reason()
        return f"{reason}: {self._stray}" if self._stray else reason

    def _lost_reason(self, exc: BaseException) -> str:
        return f"connection to {self.host}:{self.port} lost: {_short(exc)}"
