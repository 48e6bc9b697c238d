"""What Modbus TCP and RTU share: the read plan, decoding whole blocks, exception reasons,
and writes. A subclass supplies the connection (`connect`, `close`) and how one request goes
over it (`_request`, given the `Request`), and says what a timeout does to the line
(`_after_timeout`). Modbus TCP speaks the protocol itself (tcp.py); Modbus RTU goes through
pymodbus (`pymodbus_call` makes its call for a request).

A Modbus exception response marks only that request's points bad; a timeout or a lost
connection on every request makes the device unreachable (the scheduler then backs off).
An answer that is not a valid answer to its request (short, wrong length, another function,
malformed; see response.py) marks that request's points bad with what the device did wrong,
and fails a write with WriteFailed saying the same. Bytes that are not a frame at all count
as no answer, as a timeout does.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException

from ..base import DeviceUnreachable, DriverBase, LatencyHistogram, PointError, WriteFailed, WriteTimeout
from .address import BIT_AREAS
from .codec import BlockDecoder, EncodeError, RegisterPoint, encode_value
from .planner import ReadRequest, RegisterSpan, plan_reads
from .response import READ_FUNCTION, BadResponse, Reply, Request, response_problem

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


def decoders_for(points: Sequence[RegisterPoint], requests: list[ReadRequest]) -> list[BlockDecoder]:
    """One decoder per read request, for the points it covers."""
    return [BlockDecoder(r.start, r.count, [points[i] for i in r.points]) for r in requests]


class ModbusDriver(DriverBase):
    def __init__(
        self,
        unit_id: int,
        timeout: float,
        points: Sequence[RegisterPoint],
        max_registers: int = 125,
        max_bits: int = 2000,
        max_gap: int = 16,
        requests: list[ReadRequest] | None = None,
        decoders: list[BlockDecoder] | None = None,
    ):
        """`requests`: the plan made when the config was checked, planned here without it;
        `decoders`: its decoders (stateless: devices of one model share them)."""
        self.unit_id, self.timeout = unit_id, timeout
        self.points = list(points)
        self._by_id = {p.id: p for p in self.points}
        if requests is None:
            spans = [RegisterSpan(p.area, p.offset, p.width) for p in self.points]
            requests = plan_reads(spans, max_registers, max_bits, max_gap)
        self.requests: list[ReadRequest] = requests
        self._decoders = decoders if decoders is not None else decoders_for(self.points, self.requests)
        self._asked = [Request(READ_FUNCTION[r.area], r.area, r.start, r.count) for r in self.requests]
        # where each request's values go: a slice when its points are consecutive (the usual
        # case), so a block's values are placed at once
        self._places: list[slice | list[int]] = [_as_slice(r.points) for r in self.requests]
        self.request_count = 0
        self.error_count = 0
        self.latency = LatencyHistogram()

    # ---- what a transport supplies ----

    @property
    def connected(self) -> bool:
        raise NotImplementedError

    async def connect(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def _request(self, asked: Request) -> Any:
        """Send one request and return the response (a pymodbus response or a Reply).
        Raises BadResponse when the transport sees an answer that cannot be its answer."""
        raise NotImplementedError

    async def _checked(self, asked: Request) -> Any:
        """_request, and the response checked against what was asked (raises BadResponse)."""
        resp = await self._request(asked)
        if isinstance(resp, Reply):  # checked as a frame already (frame_problem)
            return resp
        problem = response_problem(resp, asked)
        if problem is not None:
            raise BadResponse(problem)
        return resp

    async def _after_timeout(self) -> bool:
        """After a request timed out: make sure a late answer cannot be taken for the next
        request's. Returns True when the connection was closed (the rest of the cycle is lost)."""
        raise NotImplementedError

    def _timeout_reason(self) -> str:
        return f"no response within {self.timeout:g}s"

    def _lost_reason(self, exc: BaseException) -> str:
        return f"connection lost: {_short(exc)}"

    # ---- reading ----

    async def read(self) -> list[object]:
        if not self.connected:
            await self.connect()
        values: list[object] = [None] * len(self.points)
        answered = 0
        last_failure = "timeout"
        for n, (req, decoder, asked, place) in enumerate(
            zip(self.requests, self._decoders, self._asked, self._places, strict=True)
        ):
            self.request_count += 1
            sent = time.monotonic()
            closed = False
            try:
                resp = await self._checked(asked)
            except BadResponse as exc:  # the device answered, wrongly: only these points are bad
                self.error_count += 1
                failure: object = PointError(str(exc))
                if exc.resync:  # not a frame: the connection is out of step, as after a timeout
                    last_failure = str(exc)
                    closed = await self._after_timeout()
                else:
                    self.latency.observe(time.monotonic() - sent)
                    answered += 1
            except (ModbusIOException, TimeoutError):
                self.error_count += 1
                last_failure = self._timeout_reason()
                failure = PointError(last_failure if "CRC" in last_failure else "timeout")
                closed = await self._after_timeout()
            except (ConnectionException, OSError) as exc:
                self.error_count += 1
                await self.close()
                raise DeviceUnreachable(self._lost_reason(exc)) from None
            except ModbusException as exc:
                self.error_count += 1
                failure = PointError(f"protocol error: {_short(exc)}")
                last_failure = str(failure.reason)
                closed = await self._after_timeout()
            else:
                self.latency.observe(time.monotonic() - sent)
                if resp.isError():
                    self.error_count += 1
                    failure = PointError(exception_reason(resp.exception_code))
                    answered += 1
                else:
                    answered += 1
                    try:
                        if req.area in BIT_AREAS:
                            decoded = decoder.decode(resp.bits)
                        elif isinstance(resp, Reply):  # the registers as sent: no list of ints
                            decoded = decoder.decode_bytes(resp.register_bytes)
                        else:
                            decoded = decoder.decode(resp.registers)
                    except Exception as exc:  # an answer the checks above let through
                        self.error_count += 1
                        failure = PointError(f"malformed response for {asked.what}: {_short(exc)}")
                    else:
                        if len(decoded) != len(req.points):
                            raise ValueError(f"{len(decoded)} values decoded for {len(req.points)} points")
                        if place.__class__ is slice:
                            values[place] = decoded
                        else:
                            for i, v in zip(place, decoded, strict=True):  # type: ignore[arg-type]
                                values[i] = v
                        continue
            for i in req.points:
                values[i] = failure
            if closed:
                # the connection was closed after a timeout: the rest of this cycle is lost
                for later in self.requests[n + 1 :]:
                    for i in later.points:
                        values[i] = PointError("timeout")
                break
        if answered == 0:
            raise DeviceUnreachable(last_failure)
        return values

    # ---- writing ----

    async def write(self, point_id: str, raw_value: object) -> None:
        p = self._by_id[point_id]
        if not self.connected:
            try:
                await self.connect()
            except DeviceUnreachable as exc:
                raise WriteFailed(str(exc)) from None
        try:
            if p.area == "co":
                asked = Request(5, "co", p.offset, value=1 if raw_value else 0)
                resp = await self._checked(asked)
            elif p.bit is not None:
                # read-modify-write: the register's other bits are kept as the device has them
                asked = Request(3, "hr", p.offset)
                try:
                    cur = await self._checked(asked)
                except BadResponse as exc:
                    raise BadResponse(f"reading {asked.what} to set bit {p.bit}: {exc}") from None
                if cur.isError():
                    raise WriteFailed(
                        f"reading {asked.what} to set bit {p.bit}: {exception_reason(cur.exception_code)}"
                    )
                mask = 1 << p.bit
                word = (cur.registers[0] | mask) if raw_value else (cur.registers[0] & ~mask)
                asked = Request(6, "hr", p.offset, value=word)
                resp = await self._checked(asked)
            else:
                regs = encode_value(p, raw_value)
                if len(regs) == 1:
                    asked = Request(6, "hr", p.offset, value=regs[0])
                else:
                    asked = Request(16, "hr", p.offset, len(regs), registers=tuple(regs))
                resp = await self._checked(asked)
        except EncodeError as exc:
            raise WriteFailed(str(exc)) from None
        except BadResponse as exc:
            if exc.resync:
                await self._after_timeout()
            raise WriteFailed(str(exc)) from None
        except (ModbusIOException, TimeoutError):
            reason = self._timeout_reason()
            await self._after_timeout()
            raise WriteTimeout(reason) from None
        except (ConnectionException, OSError) as exc:
            await self.close()
            raise WriteFailed(self._lost_reason(exc)) from None
        except ModbusException as exc:
            await self._after_timeout()
            raise WriteFailed(_short(exc)) from None
        if resp.isError():
            raise WriteFailed(exception_reason(resp.exception_code))


def _as_slice(points: list[int]) -> slice | list[int]:
    if points and points == list(range(points[0], points[0] + len(points))):
        return slice(points[0], points[0] + len(points))
    return points


def pymodbus_call(asked: Request, unit: int) -> Callable[[Any], Awaitable[Any]]:
    """The pymodbus client call that sends `asked` to `unit`."""
    a = asked.address

    def call(c: Any) -> Awaitable[Any]:
        fc = asked.function
        if fc == 3:
            return c.read_holding_registers(a, count=asked.count, device_id=unit)
        if fc == 4:
            return c.read_input_registers(a, count=asked.count, device_id=unit)
        if fc == 1:
            return c.read_coils(a, count=asked.count, device_id=unit)
        if fc == 2:
            return c.read_discrete_inputs(a, count=asked.count, device_id=unit)
        if fc == 5:
            return c.write_coil(a, bool(asked.value), device_id=unit)
        if fc == 6:
            return c.write_register(a, asked.value, device_id=unit)
        return c.write_registers(a, list(asked.registers), device_id=unit)

    return call


def _short(exc: BaseException) -> str:
    text = str(exc).replace("Modbus Error: ", "")
    return text.split("\n", 1)[0][:200] or type(exc).__name__


__all__ = ["EXCEPTION_NAMES", "ModbusDriver", "exception_reason", "pymodbus_call"]
