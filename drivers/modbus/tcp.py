"""Modbus TCP driver on pymodbus' asyncio client.

One connection per device. Reads go through the read planner; each request's block is decoded
at once. A Modbus exception response marks only that request's points bad; a timeout or a lost
connection on every request makes the device unreachable (the scheduler then backs off).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Sequence

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException

from ..base import DeviceUnreachable, LatencyHistogram, PointError, WriteFailed, WriteTimeout
from .address import BIT_AREAS
from .codec import BlockDecoder, EncodeError, RegisterPoint, encode_value
from .planner import ReadRequest, RegisterSpan, plan_reads

# pymodbus logs every frame at debug and tracebacks at error; the gateway reports outcomes itself.
logging.getLogger("pymodbus").setLevel(logging.CRITICAL)

EXCEPTION_NAMES = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge",
    6: "server device busy",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}


def exception_reason(code: int) -> str:
    return f"modbus exception {code} ({EXCEPTION_NAMES.get(code, 'unknown')})"


class ModbusTcpDriver:
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
    ):
        self.host, self.port, self.unit_id, self.timeout = host, port, unit_id, timeout
        self.points = list(points)
        self._by_id = {p.id: p for p in self.points}
        spans = [RegisterSpan(p.area, p.offset, p.width) for p in self.points]
        self.requests: list[ReadRequest] = plan_reads(spans, max_registers, max_bits, max_gap)
        self._decoders = [
            BlockDecoder(r.start, r.count, [self.points[i] for i in r.points]) for r in self.requests
        ]
        self._client: AsyncModbusTcpClient | None = None
        self.request_count = 0
        self.error_count = 0
        self.latency = LatencyHistogram()

    async def connect(self) -> None:
        await self.close()
        client = AsyncModbusTcpClient(
            self.host, port=self.port, timeout=self.timeout, retries=0, reconnect_delay=0
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

    def _call(self, area: str, start: int, count: int):  # type: ignore[no-untyped-def]
        c = self._client
        assert c is not None
        if area == "hr":
            return c.read_holding_registers(start, count=count, device_id=self.unit_id)
        if area == "ir":
            return c.read_input_registers(start, count=count, device_id=self.unit_id)
        if area == "co":
            return c.read_coils(start, count=count, device_id=self.unit_id)
        return c.read_discrete_inputs(start, count=count, device_id=self.unit_id)

    async def read(self) -> list[object]:
        if self._client is None or not self._client.connected:
            await self.connect()
        values: list[object] = [None] * len(self.points)
        answered = 0
        last_failure = "timeout"
        for n, (req, decoder) in enumerate(zip(self.requests, self._decoders, strict=True)):
            self.request_count += 1
            sent = time.monotonic()
            try:
                resp = await asyncio.wait_for(self._call(req.area, req.start, req.count), self.timeout + 0.5)
            except (ModbusIOException, TimeoutError):
                self.error_count += 1
                failure: object = PointError("timeout")
                last_failure = f"no response within {self.timeout:g}s"
                await self.close()  # a late answer must not be taken for the next request's
            except (ConnectionException, OSError) as exc:
                self.error_count += 1
                await self.close()
                raise DeviceUnreachable(
                    f"connection to {self.host}:{self.port} lost: {_short(exc)}"
                ) from None
            except ModbusException as exc:
                self.error_count += 1
                failure = PointError(f"protocol error: {_short(exc)}")
                last_failure = str(failure.reason)
                await self.close()
            else:
                self.latency.observe(time.monotonic() - sent)
                if resp.isError():
                    self.error_count += 1
                    failure = PointError(exception_reason(resp.exception_code))
                    answered += 1
                else:
                    answered += 1
                    data = resp.bits if req.area in BIT_AREAS else resp.registers
                    try:
                        decoded = decoder.decode(data)
                    except Exception as exc:  # a short or malformed answer from the device
                        failure = PointError(f"bad response: {_short(exc)}")
                    else:
                        for i, v in zip(req.points, decoded, strict=True):
                            values[i] = v
                        continue
            for i in req.points:
                values[i] = failure
            if self._client is None:
                # the connection was closed after a timeout: the rest of this cycle is lost
                for later in self.requests[n + 1 :]:
                    for i in later.points:
                        values[i] = PointError("timeout")
                break
        if answered == 0:
            raise DeviceUnreachable(last_failure)
        return values

    async def write(self, point_id: str, raw_value: object) -> None:
        p = self._by_id[point_id]
        if self._client is None or not self._client.connected:
            try:
                await self.connect()
            except DeviceUnreachable as exc:
                raise WriteFailed(str(exc)) from None
        c = self._client
        assert c is not None
        try:
            if p.area == "co":
                resp = await c.write_coil(p.offset, bool(raw_value), device_id=self.unit_id)
            elif p.bit is not None:
                cur = await c.read_holding_registers(p.offset, count=1, device_id=self.unit_id)
                if cur.isError():
                    raise WriteFailed(exception_reason(cur.exception_code))
                mask = 1 << p.bit
                word = (cur.registers[0] | mask) if raw_value else (cur.registers[0] & ~mask)
                resp = await c.write_register(p.offset, word, device_id=self.unit_id)
            else:
                regs = encode_value(p, raw_value)
                if len(regs) == 1:
                    resp = await c.write_register(p.offset, regs[0], device_id=self.unit_id)
                else:
                    resp = await c.write_registers(p.offset, regs, device_id=self.unit_id)
        except EncodeError as exc:
            raise WriteFailed(str(exc)) from None
        except (ModbusIOException, TimeoutError):
            await self.close()
            raise WriteTimeout(f"no response within {self.timeout:g}s") from None
        except (ModbusException, OSError) as exc:
            await self.close()
            raise WriteFailed(_short(exc)) from None
        if resp.isError():
            raise WriteFailed(exception_reason(resp.exception_code))


def _short(exc: BaseException) -> str:
    text = str(exc).replace("Modbus Error: ", "")
    return text.split("\n", 1)[0][:200] or type(exc).__name__
