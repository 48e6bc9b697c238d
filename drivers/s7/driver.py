"""S7 driver on python-snap7: ISO-on-TCP (RFC 1006) with the TSAPs of the configured CPU,
multi-variable reads packed to the negotiated PDU, single-item writes.

python-snap7 supplies the transport (`AsyncISOTCPConnection`: TPKT, the COTP handshake with
the TSAPs) and builds the S7comm requests (`S7Protocol`); the replies are checked here
(`response.py`), item by item, because the library's own multi-read stops at the first
refused item and its `AsyncClient.read_multi_vars` sends one request per item.

A refused item marks only the points it covers bad, with the return code's meaning; a header
error (PUT/GET not permitted) marks the request's points bad and keeps the device online: the
CPU answered. A timeout closes the connection (a late reply must not be taken for the next
request's); no answer to any request of a poll, or a lost connection, makes the device
unreachable and the scheduler retries with its capped back-off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import struct
import time

from snap7.async_client import AsyncISOTCPConnection
from snap7.datatypes import S7Area, S7WordLen
from snap7.error import S7Error, S7TimeoutError
from snap7.s7protocol import S7Protocol

from ..base import DeviceUnreachable, DriverBase, LatencyHistogram, PointError, WriteFailed, WriteTimeout
from .checks import S7Plan
from .codec import EncodeError, RangeDecoder, S7Point, encode_value
from .planner import ReadRange, ReadRequest, Span, plan_reads
from .response import Malformed, Refused, item_reason, read_items, sequence_of, write_result

# python-snap7 logs each connect and disconnect at info, stale packets at warning: the gateway
# reports outcomes itself
logging.getLogger("snap7").setLevel(logging.ERROR)

WRITE_OVERHEAD = 10 + 2 + 12 + 4  # header, function+count, one item spec, data header


def decoders_for(plan_points: list[S7Point], ranges: list[ReadRange]) -> list[RangeDecoder]:
    return [RangeDecoder(r.start, r.size, [plan_points[i] for i in r.points]) for r in ranges]


class S7Driver(DriverBase):
    def __init__(
        self,
        host: str,
        port: int,
        tsaps: tuple[int, int],
        timeout: float,
        plan: S7Plan,
        decoders: list[RangeDecoder] | None = None,
        describe: str = "",
    ):
        self.host, self.port = host, port
        self.local_tsap, self.remote_tsap = tsaps
        self.timeout = timeout
        self.plan = plan
        self.points = plan.points
        self._by_id = {p.id: p for p in self.points}
        self.ranges: list[ReadRange] = plan.ranges
        self.requests: list[ReadRequest] = plan.requests
        self._decoders = decoders if decoders is not None else decoders_for(self.points, self.ranges)
        self._describe = describe or f"{host}:{port}"
        self.pdu = plan.pdu  # the negotiated PDU once connected
        self._conn: AsyncISOTCPConnection | None = None
        self._proto = S7Protocol()
        self._items = self._request_items()
        self.request_count = 0
        self.error_count = 0
        self.latency = LatencyHistogram()

    def _request_items(self) -> list[list[tuple[int, int, int, int]]]:
        return [
            [(self.ranges[i.range].area, self.ranges[i.range].db, i.start, i.size) for i in req.items]
            for req in self.requests
        ]

    # ---- connection ----

    @property
    def connected(self) -> bool:
        return self._conn is not None and self._conn.connected

    async def connect(self) -> None:
        await self.close()
        conn = AsyncISOTCPConnection(self.host, self.port, self.local_tsap, self.remote_tsap)
        try:
            await asyncio.wait_for(conn.connect(self.timeout), self.timeout + 0.5)
            conn.timeout = self.timeout + 1.0  # each exchange's own timeout (below) comes first
            self._conn = conn
            await self._negotiate()
        except (TimeoutError, S7Error, OSError, Malformed, Refused) as exc:
            await self.close()
            with contextlib.suppress(Exception):
                await conn.disconnect()
            raise DeviceUnreachable(self._connect_reason(exc)) from None

    async def _negotiate(self) -> None:
        request = self._proto.build_setup_communication_request(1, 1, self.plan.pdu)
        reply = await self._exchange(request)
        if len(reply) < 20 or reply[12] != 0xF0:
            raise Malformed("not an answer to the PDU negotiation")
        pdu = struct.unpack_from(">H", reply, 18)[0]
        if pdu < 64:
            raise Malformed(f"the CPU offered a PDU of {pdu} bytes")
        if pdu != self.pdu or pdu != self.plan.pdu:
            self._replan(min(pdu, self.plan.pdu))

    def _replan(self, pdu: int) -> None:
        """Plan the reads for the PDU the CPU granted (an S7-300 gives 240 when asked for 480)."""
        self.pdu = pdu
        if pdu == self.plan.pdu:
            self.ranges, self.requests = self.plan.ranges, self.plan.requests
        else:
            spans = [Span(p.area, p.db, p.byte, p.size) for p in self.points]
            self.ranges, self.requests = plan_reads(spans, pdu, self.plan.max_gap, self.plan.max_items)
        self._decoders = decoders_for(self.points, self.ranges)
        self._items = self._request_items()

    def _connect_reason(self, exc: BaseException) -> str:
        where = self._describe
        cause = exc.__context__ if isinstance(exc, S7Error) and exc.__context__ is not None else exc
        if isinstance(cause, ConnectionRefusedError):
            return (
                f"cannot connect to {self.host}:{self.port}: connection refused (is it an S7 CPU, port 102?)"
            )
        if isinstance(cause, TimeoutError) or "timeout" in str(exc).lower():
            return f"connect to {where} timed out"
        if isinstance(cause, OSError) and cause.errno:
            return f"cannot connect to {self.host}:{self.port}: {os.strerror(cause.errno).lower()}"
        if isinstance(exc, Refused):
            return f"{where} refused the S7 session: {exc}"
        text = str(exc)
        if "closed by peer" in text or "COTP" in text:
            return (
                f"{where} accepted TCP but refused the S7 connection: check rack/slot or the TSAPs "
                "(S7-1200/1500: rack 0 slot 1; S7-300: slot 2; S7-200 SMART and LOGO!: the plc preset)"
            )
        return f"cannot connect to {where}: {text[:200]}"

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.disconnect(), 1.0)

    async def _exchange(self, request: bytes) -> bytes:
        conn = self._conn
        if conn is None:
            raise S7Error("not connected")
        self.request_count += 1
        sent = time.monotonic()
        async with asyncio.timeout(self.timeout):
            await conn.send_data(request)
            reply = await conn.receive_data()
        self.latency.observe(time.monotonic() - sent)
        return reply

    # ---- reading ----

    async def read(self) -> list[object]:
        if not self.connected:
            await self.connect()
        values: list[object] = [None] * len(self.points)
        pieces: dict[int, list[tuple[int, bytes | str]]] = {}
        answered = 0
        last_failure = f"no response within {self.timeout:g}s"
        for n, (req, items) in enumerate(zip(self.requests, self._items, strict=True)):
            request = self._proto.build_multi_read_request(items)
            got: list[bytes | int | str]
            try:
                reply = await self._exchange(request)
                got = list(read_items(reply, sequence_of(request), [i.size for i in req.items]))
            except Refused as exc:
                self.error_count += 1
                answered += 1
                got = [str(exc)] * len(req.items)
            except Malformed as exc:
                self.error_count += 1
                answered += 1
                last_failure = f"malformed reply: {exc}"
                got = [last_failure] * len(req.items)
                await self.close()  # out of step: a fresh session for what follows
            except (TimeoutError, S7TimeoutError):
                self.error_count += 1
                await self.close()  # a late reply must not be taken for the next request's
                self._mark_rest(n, pieces, "timeout")
                break
            except (S7Error, OSError, asyncio.IncompleteReadError) as exc:
                self.error_count += 1
                await self.close()
                raise DeviceUnreachable(
                    f"connection to {self.host}:{self.port} lost: {_short(exc)}"
                ) from None
            else:
                answered += 1
            for item, result in zip(req.items, got, strict=True):
                r = self.ranges[item.range]
                if isinstance(result, int):
                    self.error_count += 1
                    result = item_reason(result, r.area, r.db)
                pieces.setdefault(item.range, []).append((item.start, result))
            if self._conn is None and n + 1 < len(self.requests):
                self._mark_rest(n + 1, pieces, last_failure)
                break
        if answered == 0:
            raise DeviceUnreachable(last_failure)
        for k, (r, decoder) in enumerate(zip(self.ranges, self._decoders, strict=True)):
            parts = pieces.get(k)
            failure = next((p for _, p in parts if isinstance(p, str)), None) if parts else "not read"
            if failure is None and parts is not None:
                buf = parts[0][1] if len(parts) == 1 else b"".join(p for _, p in sorted(parts))  # type: ignore[misc]
                try:
                    decoded = decoder.decode(buf)  # type: ignore[arg-type]
                except Exception as exc:  # an answer the checks let through
                    failure = f"malformed reply: {_short(exc)}"
                else:
                    for i, v in zip(r.points, decoded, strict=True):
                        values[i] = v
                    continue
            bad = PointError(failure or "not read")
            for i in r.points:
                values[i] = bad
        return values

    def _mark_rest(self, n: int, pieces: dict[int, list[tuple[int, bytes | str]]], reason: str) -> None:
        for later in self.requests[n:]:
            for item in later.items:
                pieces.setdefault(item.range, []).append((item.start, reason))

    # ---- writing ----

    async def write(self, point_id: str, raw_value: object) -> None:
        p = self._by_id[point_id]
        try:
            data = encode_value(p, raw_value)
        except EncodeError as exc:
            raise WriteFailed(str(exc)) from None
        if not self.connected:
            try:
                await self.connect()
            except DeviceUnreachable as exc:
                raise WriteFailed(str(exc)) from None
        area = S7Area(p.area)
        if p.bit is not None:
            # a single-bit write: the CPU sets that bit alone, its neighbours stay as they are
            writes = [(p.byte * 8 + p.bit, S7WordLen.BIT, data)]
        else:
            room = self.pdu - WRITE_OVERHEAD
            writes = [
                (p.byte + off, S7WordLen.BYTE, data[off : off + room]) for off in range(0, len(data), room)
            ]
        try:
            for start, word_len, chunk in writes:
                request = self._proto.build_write_request(area, p.db, start, word_len, chunk)
                code = write_result(await self._exchange(request), sequence_of(request))
                if code != 0xFF:
                    self.error_count += 1
                    raise WriteFailed(item_reason(code, p.area, p.db))
        except Refused as exc:
            self.error_count += 1
            raise WriteFailed(str(exc)) from None
        except Malformed as exc:
            self.error_count += 1
            await self.close()
            raise WriteFailed(f"malformed reply: {exc}") from None
        except (TimeoutError, S7TimeoutError):
            self.error_count += 1
            await self.close()
            raise WriteTimeout(f"no response within {self.timeout:g}s") from None
        except (S7Error, OSError, asyncio.IncompleteReadError) as exc:
            self.error_count += 1
            await self.close()
            raise WriteFailed(f"connection to {self.host}:{self.port} lost: {_short(exc)}") from None


def _short(exc: BaseException) -> str:
    return str(exc).split("\n", 1)[0][:200] or type(exc).__name__
