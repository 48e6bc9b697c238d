"""MC protocol driver: one TCP connection per PLC, 3E frames (binary or ASCII), the planned
batch and random reads, batch word writes and random bit writes.

A refused request (a non-zero end code) keeps the device online: the PLC answered. A refused
request covering several points is retried point by point, so that only the points the PLC
refuses go bad, each with the end code's meaning. A timeout closes the connection (a late
reply must not be taken for the next request's); no answer to any request of a poll, or a lost
connection, makes the device unreachable and the scheduler retries with its back-off.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass

from ..base import DeviceUnreachable, DriverBase, LatencyHistogram, PointError, WriteFailed, WriteTimeout
from .address import DEVICES
from .checks import McPlan, span_of
from .codec import HEADER, Codec, EncodeError, EndCodeError, Malformed, McPoint, encode_words
from .planner import ReadRange, ReadRequest, plan_reads
from .response import RangeDecoder

RETRY_REFUSED = 10  # polls between tries of the points a PLC refused


@dataclass(slots=True)
class _Split:
    frames: list[tuple[ReadRequest, bytes]]
    ranges: list[ReadRange]
    decoders: list[RangeDecoder]
    owners: list[int]  # the device's point index of each point the split requests read
    refused: dict[int, str]  # point index -> the PLC's reason
    polls: int = 0


def decoders_for(plan: McPlan) -> list[RangeDecoder]:
    return [RangeDecoder(r, [plan.points[i] for i in r.points]) for r in plan.ranges]


class McLink:
    """One TCP connection speaking 3E frames, one request at a time."""

    def __init__(self, host: str, port: int, codec: Codec, timeout: float):
        self.host, self.port, self.codec, self.timeout = host, port, codec, timeout
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self._header = HEADER[codec.code]

    @property
    def connected(self) -> bool:
        return self.writer is not None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port), self.timeout
        )

    async def close(self) -> None:
        w, self.writer, self.reader = self.writer, None, None
        if w is not None:
            w.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(w.wait_closed(), 0.5)

    async def exchange(self, request: bytes) -> bytes:
        """The response data of the reply to `request` (EndCodeError, Malformed, TimeoutError,
        OSError / IncompleteReadError)."""
        reader, writer = self.reader, self.writer
        if reader is None or writer is None:
            raise ConnectionResetError("not connected")
        async with asyncio.timeout(self.timeout):
            writer.write(request)
            header = await reader.readexactly(self._header)
            n = self.codec.body_length(header)
            body = await reader.readexactly(n)
        return self.codec.payload(body)


class McDriver(DriverBase):
    def __init__(
        self,
        host: str,
        port: int,
        codec: Codec,
        timeout: float,
        plan: McPlan,
        decoders: list[RangeDecoder] | None = None,
        describe: str = "",
    ):
        self.host, self.port = host, port
        self.codec = codec
        self.timeout = timeout
        self.plan = plan
        self.points = plan.points
        self._by_id = {p.id: p for p in self.points}
        self.ranges: list[ReadRange] = plan.ranges
        self.requests: list[ReadRequest] = plan.requests
        self._decoders = decoders if decoders is not None else decoders_for(plan)
        self._describe = describe or f"{host}:{port}"
        self._conn = McLink(host, port, codec, timeout)
        self._frames = [self._frame(req) for req in self.requests]
        self._split: dict[int, _Split] = {}  # refused requests, read without their refused points
        self.request_count = 0
        self.error_count = 0
        self.latency = LatencyHistogram()

    def _frame(self, req: ReadRequest, ranges: Sequence[ReadRange] | None = None) -> bytes:
        rs = self.ranges if ranges is None else ranges
        if not req.random:
            r = rs[req.ranges[0]]
            return self.codec.batch_read(DEVICES[r.device], r.start, r.words)
        words = [(DEVICES[r.device], r.start) for n in req.ranges if (r := rs[n]).words == 1]
        dwords = [(DEVICES[r.device], r.start) for n in req.ranges if (r := rs[n]).words == 2]
        return self.codec.random_read(words, dwords)

    # ---- connection ----

    @property
    def connected(self) -> bool:
        return self._conn.connected

    async def connect(self) -> None:
        await self._conn.close()
        try:
            await self._conn.open()
        except (TimeoutError, OSError) as exc:
            await self._conn.close()
            raise DeviceUnreachable(self._connect_reason(exc)) from None

    def _connect_reason(self, exc: BaseException) -> str:
        if isinstance(exc, ConnectionRefusedError):
            return (
                f"cannot connect to {self.host}:{self.port}: connection refused (is the port the one of "
                "the MC protocol connection in the PLC's open settings, over TCP?)"
            )
        if isinstance(exc, TimeoutError):
            return f"connect to {self._describe} timed out"
        if isinstance(exc, OSError) and exc.errno:
            return f"cannot connect to {self.host}:{self.port}: {os.strerror(exc.errno).lower()}"
        return f"cannot connect to {self._describe}: {str(exc)[:200]}"

    async def close(self) -> None:
        await self._conn.close()

    async def _exchange(self, request: bytes) -> bytes:
        self.request_count += 1
        sent = time.monotonic()
        data = await self._conn.exchange(request)
        self.latency.observe(time.monotonic() - sent)
        return data

    # ---- reading ----

    async def _read_request(
        self, req: ReadRequest, frame: bytes, all_ranges: Sequence[ReadRange] | None = None
    ) -> list[list[int]]:
        """The words of each range of a request."""
        data = await self._exchange(frame)
        ranges = [(self.ranges if all_ranges is None else all_ranges)[n] for n in req.ranges]
        if not req.random:
            return [self.codec.words(data, ranges[0].words)]
        m = sum(1 for r in ranges if r.words == 1)
        words, dwords = self.codec.random_words(data, m, len(ranges) - m)
        iw, idw = iter(words), iter(dwords)
        out: list[list[int]] = []
        for r in ranges:
            if r.words == 1:
                out.append([next(iw)])
            else:
                d = next(idw)
                out.append([d & 0xFFFF, d >> 16])
        return out

    async def read(self) -> list[object]:
        if not self.connected:
            await self.connect()
        values: list[object] = [None] * len(self.points)
        answered = 0
        last_failure = f"no response within {self.timeout:g}s"
        for n, (req, frame) in enumerate(zip(self.requests, self._frames, strict=True)):
            if not self.connected:  # closed after a bad reply or a point read alone
                await self._reopen_or_mark(n, values, last_failure)
                if not self.connected:
                    break
            try:
                if n in self._split:
                    await self._read_split(n, values)
                    answered += 1
                    continue
                got = await self._read_request(req, frame)
            except EndCodeError as exc:
                self.error_count += 1
                answered += 1
                self._split.pop(n, None)
                refused = await self._point_by_point(req, exc, values)
                if refused and self.connected:
                    self._split[n] = self._make_split(req, refused)
                continue
            except Malformed as exc:
                self.error_count += 1
                answered += 1
                last_failure = f"malformed reply: {exc}"
                self._mark(req, last_failure, values)
                await self.close()  # out of step: a fresh connection for what follows
                if n + 1 < len(self.requests):
                    await self._reopen_or_mark(n + 1, values, last_failure)
                    if not self.connected:
                        break
                continue
            except TimeoutError:
                self.error_count += 1
                await self.close()  # a late reply must not be taken for the next request's
                for later in self.requests[n:]:
                    self._mark(later, "timeout", values)
                break
            except (OSError, asyncio.IncompleteReadError) as exc:
                self.error_count += 1
                await self.close()
                raise DeviceUnreachable(
                    f"connection to {self.host}:{self.port} lost: {_short(exc)}"
                ) from None
            answered += 1
            for k, words in zip(req.ranges, got, strict=True):
                self._decode(k, words, values)
        if answered == 0:
            raise DeviceUnreachable(last_failure)
        return values

    async def _reopen_or_mark(self, n: int, values: list[object], reason: str) -> None:
        try:
            await self._conn.open()
        except (TimeoutError, OSError):
            for later in self.requests[n:]:
                self._mark(later, reason, values)

    def _decode(self, k: int, words: Sequence[int], values: list[object]) -> None:
        r = self.ranges[k]
        try:
            decoded = self._decoders[k].decode(words)
        except Exception as exc:  # an answer the checks let through
            bad = PointError(f"malformed reply: {_short(exc)}")
            for i in r.points:
                values[i] = bad
            return
        for i, v in zip(r.points, decoded, strict=True):
            values[i] = v

    def _mark(self, req: ReadRequest, reason: str, values: list[object]) -> None:
        bad = PointError(reason)
        for k in req.ranges:
            for i in self.ranges[k].points:
                values[i] = bad

    async def _point_by_point(
        self, req: ReadRequest, exc: EndCodeError, values: list[object]
    ) -> dict[int, str]:
        """A refused request read again one point at a time: only refused points go bad.
        Returns the refused points' reasons (point index -> reason)."""
        indexes = [i for k in req.ranges for i in self.ranges[k].points]
        if len(indexes) == 1:
            values[indexes[0]] = PointError(str(exc))
            return {}
        refused: dict[int, str] = {}
        for i in indexes:
            if not self.connected:
                values[i] = PointError("not read: the connection was lost")
                continue
            reason = await self._read_point(i, values)
            if reason is not None:
                refused[i] = reason
        return refused

    async def _read_point(self, i: int, values: list[object]) -> str | None:
        """One point read alone into values[i]; the end code's reason if the PLC refuses it."""
        p = self.points[i]
        words = 1 if p.kind.bit else p.words
        try:
            data = await self._exchange(self.codec.batch_read(p.kind, p.number, words))
            got = self.codec.words(data, words)
        except EndCodeError as one:
            self.error_count += 1
            values[i] = PointError(str(one))
            return str(one)
        except Malformed as bad:
            self.error_count += 1
            values[i] = PointError(f"malformed reply: {bad}")
            await self.close()
            await self._reopen_or_mark(len(self.requests), values, str(bad))
            return None
        except (TimeoutError, OSError, asyncio.IncompleteReadError) as err:
            self.error_count += 1
            values[i] = PointError(
                "timeout" if isinstance(err, TimeoutError) else f"connection lost: {_short(err)}"
            )
            await self.close()
            return None
        one_range = ReadRange(p.device, p.kind.bit, p.number, words, (0,))
        try:
            values[i] = RangeDecoder(one_range, [p]).decode(got)[0]
        except Exception as err:
            values[i] = PointError(f"malformed reply: {_short(err)}")
        return None

    def _make_split(self, req: ReadRequest, refused: dict[int, str]) -> _Split:
        """The requests that read a refused request's other points (planned again without the
        refused ones, reading no word between points), so that later polls do not send the
        request the PLC refuses and then every point alone."""
        good = [i for k in req.ranges for i in self.ranges[k].points if i not in refused]
        ranges, requests = plan_reads([span_of(self.points[i]) for i in good], 0, self.codec.iqr)
        decoders = [RangeDecoder(r, [self.points[good[j]] for j in r.points]) for r in ranges]
        frames = [(q, self._frame(q, ranges)) for q in requests]
        return _Split(frames, ranges, decoders, good, refused)

    async def _read_split(self, n: int, values: list[object]) -> None:
        """A refused request's points: the others with their own requests, the refused ones
        marked with their reason, and tried alone again every RETRY_REFUSED polls (back to the
        whole request once the PLC serves them all)."""
        s = self._split[n]
        s.polls += 1
        for q, frame in s.frames:
            got = await self._read_request(q, frame, s.ranges)
            for k, words in zip(q.ranges, got, strict=True):
                r = s.ranges[k]
                try:
                    decoded = s.decoders[k].decode(words)
                except Exception as exc:
                    bad = PointError(f"malformed reply: {_short(exc)}")
                    decoded = [bad] * len(r.points)
                for j, v in zip(r.points, decoded, strict=True):
                    values[s.owners[j]] = v
        if s.polls % RETRY_REFUSED:
            for i, reason in s.refused.items():
                values[i] = PointError(reason)
            return
        still: dict[int, str] = {}
        for i in s.refused:
            why = await self._read_point(i, values)
            if why is not None:
                still[i] = why
        if still:
            s.refused = still
        else:
            del self._split[n]

    # ---- writing ----

    async def write(self, point_id: str, raw_value: object) -> None:
        p = self._by_id[point_id]
        if p.kind.bit:
            frame = self.codec.random_write_bits([(p.kind, p.number, bool(raw_value))])
        else:
            try:
                words = encode_words(p, raw_value)
            except EncodeError as exc:
                raise WriteFailed(str(exc)) from None
            frame = self.codec.batch_write_words(p.kind, p.number, words)
        if not self.connected:
            try:
                await self.connect()
            except DeviceUnreachable as exc:
                raise WriteFailed(str(exc)) from None
        try:
            await self._exchange(frame)
        except EndCodeError as exc:
            self.error_count += 1
            raise WriteFailed(str(exc)) from None
        except Malformed as exc:
            self.error_count += 1
            await self.close()
            raise WriteFailed(f"malformed reply: {exc}") from None
        except TimeoutError:
            self.error_count += 1
            await self.close()
            raise WriteTimeout(f"no response within {self.timeout:g}s") from None
        except (OSError, asyncio.IncompleteReadError) as exc:
            self.error_count += 1
            await self.close()
            raise WriteFailed(f"connection to {self.host}:{self.port} lost: {_short(exc)}") from None


def _short(exc: BaseException) -> str:
    return str(exc).split("\n", 1)[0][:200] or type(exc).__name__


__all__ = ["McDriver", "McPoint", "decoders_for"]
