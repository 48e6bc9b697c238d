"""Polling: one task per device, on monotonic deadlines.

A device's task never waits for another's, so a slow or dead device delays only itself.
Instruments that send on their own (a `stream` driver: scales, barcode readers) have no poll:
each frame they send is a sample when it arrives.
Devices start at different phases of their interval (see PollGroup.phase), so their polls do
not all end at the same instant. Deadlines advance by the interval from the previous deadline
(no drift); a poll that overruns its slot skips the missed deadlines and counts them instead of
queueing catch-up polls. While a device is unreachable each attempt still yields a sample with
every point bad, and attempts back off exponentially up to `poll.backoff_max`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

from edgegw.drivers.base import DeviceUnreachable, Driver, LatencyHistogram, StreamDriver

from .logs import RateLimited, event
from .normalise import Normaliser, Reading, Sample

log = logging.getLogger("edgegw.poll")


@dataclass
class DeviceCounters:
    polls: int = 0
    failed_polls: int = 0
    overruns: int = 0
    last_error: str | None = None
    last_error_ts: int | None = None  # ms since the epoch
    last_poll_ms: float = 0.0
    writes: int = 0
    failed_writes: int = 0
    internal_errors: int = 0  # exceptions in the gateway's own code while serving this device
    restarts: int = 0  # times the device's task was restarted after one
    poll_latency: LatencyHistogram = field(default_factory=LatencyHistogram)


@dataclass
class PollGroup:
    """A device's points polled together at one interval."""

    device: str
    interval: float
    backoff_max: float
    offline_after: int
    counters: DeviceCounters = field(default_factory=DeviceCounters)

    @property
    def phase(self) -> float:
        """Delay of the first poll: a fraction (from the device id, stable across restarts and
        reloads) of the interval, at most 1 s. A thousand devices at 1 s then poll spread over
        the second instead of all at once, so no burst of samples queues up behind itself."""
        return zlib.crc32(self.device.encode()) % 10_000 / 10_000 * min(self.interval, 1.0)


class DeviceRunner:
    def __init__(
        self,
        group: PollGroup,
        driver: Driver,
        normaliser: Normaliser,
        emit: Callable[[Sample], None],
        status: Callable[[str, str, str | None], None],
    ):
        self.group = group
        self.driver = driver
        self.normaliser = normaliser
        self.emit = emit
        self.status = status
        self.state = "connecting"
        self.reason: str | None = None
        self.latest: list[Reading] = []
        # per point (in the order of `latest`): when the gateway received its latest reading, ms
        self.latest_point_ts: list[int | None] = []
        self.latest_ts: int | None = None
        # polls and writes share the device's one connection: one at a time
        self.io = asyncio.Lock()
        self._failures = 0
        self._ratelimit = RateLimited(log, 60.0)
        self._ratelimit_internal = RateLimited(log, 60.0)
        # per point, the device's own timestamp of the last value read (OPC UA SourceTimestamp)
        self._source_ts: list[int | None] | None = driver.source_ts

    def _set_state(self, state: str, reason: str | None = None) -> None:
        self.reason = reason
        if state != self.state:
            self.state = state
            event(
                log,
                logging.INFO if state == "online" else logging.WARNING,
                f"device {state}",
                device=self.group.device,
                reason=reason or "",
            )
        self.status(self.group.device, state, reason)

    def _error(self, reason: str) -> None:
        self.group.counters.last_error = reason
        self.group.counters.last_error_ts = time.time_ns() // 1_000_000

    async def write(self, point_id: str, raw: object, timeout: float) -> None:
        """Write one raw value through the driver, between polls. Raises WriteFailed (the
        device's answer) or TimeoutError (no answer, or the connection stayed busy)."""
        c = self.group.counters
        c.writes += 1
        try:
            async with asyncio.timeout(timeout):
                async with self.io:
                    await self.driver.write(point_id, raw)
        except BaseException as exc:
            c.failed_writes += 1
            if isinstance(exc, Exception):
                self._error(f"write {point_id}: {exc or 'timeout'}")
            raise

    def crashed(self, exc: BaseException, failures: int) -> None:
        """The device's task ended with an exception (the supervisor restarts it): every point
        bad and the device offline with the reason, so nobody mistakes stale values for live."""
        c = self.group.counters
        c.restarts += 1
        c.internal_errors += 1
        reason = f"internal error: {exc!r}"[:200]
        self._error(reason)
        self._set_state("offline", reason)
        self._emit_all_bad(reason)

    def _internal_error(self, what: str, exc: BaseException) -> None:
        c = self.group.counters
        c.internal_errors += 1
        self._error(f"internal error: {exc!r}"[:200])
        if self._ratelimit_internal.allow(what):
            log.error(what, exc_info=exc, extra={"fields": {"device": self.group.device}})

    def _emit_all_bad(self, reason: str) -> None:
        readings = self.normaliser.all_bad(reason)
        ts = time.time_ns() // 1_000_000
        self.latest, self.latest_ts = readings, ts
        self.latest_point_ts = [ts] * len(readings)
        self.emit(Sample(self.group.device, ts, readings, True))

    def _backoff(self) -> float:
        g = self.group
        return float(min(g.interval * 2 ** min(max(self._failures - 1, 0), 16), g.backoff_max))

    async def _stream(self) -> None:
        """A device that sends when it has something: connect, then take frames as they come.
        A quiet instrument is online as long as its port is open (a barcode reader waits for
        the next scan); with an idle timeout, silence longer than it means offline."""
        g = self.group
        c = g.counters
        d = cast(StreamDriver, self.driver)
        self.latest = self.normaliser.all_bad("nothing received yet")
        self.latest_point_ts = [None] * len(self.latest)
        while True:
            try:
                await d.connect()
            except DeviceUnreachable as exc:
                self._failures += 1
                c.failed_polls += 1
                self._unreachable(str(exc))
                await asyncio.sleep(self._backoff())
                continue
            self._failures = 0
            self._set_state("online")
            try:
                while True:
                    got = await d.next_sample(d.idle_timeout)
                    if got is None and d.idle_timeout is None:
                        continue
                    if got is None:
                        reason = f"nothing received from the instrument for {d.idle_timeout:g}s"
                        if self.state != "offline":
                            self._error(reason)
                            self._set_state("offline", reason)
                            self._emit_all_bad(reason)
                        continue
                    if self.state != "online":
                        self._set_state("online")
                    values, ts = got
                    c.polls += 1
                    readings = self.normaliser.normalise(values)
                    if self._source_ts is not None:
                        for r in readings:
                            r.ts = self._source_ts[self.normaliser.position(r.id)]
                    latest = list(self.latest)
                    times = list(self.latest_point_ts)
                    for r in readings:
                        at = self.normaliser.position(r.id)
                        latest[at] = r
                        times[at] = ts
                    self.latest, self.latest_ts = latest, ts
                    self.latest_point_ts = times
                    out, full = self.normaliser.to_publish(readings, time.monotonic())
                    if out:
                        self.emit(Sample(g.device, ts, out, full))
            except DeviceUnreachable as exc:  # the port went away: certain, offline at once
                c.failed_polls += 1
                self._failures = g.offline_after
                self._unreachable(str(exc))
                await asyncio.sleep(self._backoff())
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a driver bug must not end the device's task
                c.failed_polls += 1
                log.exception("stream failed", extra={"fields": {"device": g.device}})
                self._failures = g.offline_after
                self._unreachable(f"internal error: {exc!r}")
                with contextlib.suppress(Exception):
                    await d.close()
                await asyncio.sleep(self._backoff())

    def _unreachable(self, reason: str) -> None:
        self._error(reason)
        if self._failures < self.group.offline_after:
            return
        if self.state != "offline":
            self._set_state("offline", reason)
            self._emit_all_bad(reason)
        else:
            if reason != self.reason:  # the cause changed: the status says the current one
                self._set_state("offline", reason)
            self._ratelimit.log(
                "unreachable",
                logging.WARNING,
                "device still unreachable",
                device=self.group.device,
                reason=reason,
            )

    async def run(self) -> None:
        g = self.group
        c = g.counters
        self.status(g.device, "connecting", None)
        if self.driver.stream:
            await self._stream()
            return
        deadline = time.monotonic() + g.phase
        while True:
            now = time.monotonic()
            if deadline > now:
                await asyncio.sleep(deadline - now)
            started = time.monotonic()
            c.polls += 1
            try:
                async with self.io:
                    raw = await self.driver.read()
            except DeviceUnreachable as exc:
                reason = str(exc)
                c.failed_polls += 1
                self._error(reason)
                self._failures += 1
                readings = self.normaliser.all_bad(reason)
                if self._failures >= g.offline_after:
                    if self.state != "offline" or reason != self.reason:
                        self._set_state("offline", reason)
                    else:
                        self._ratelimit.log(
                            "unreachable",
                            logging.WARNING,
                            "device still unreachable",
                            device=g.device,
                            reason=reason,
                        )
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a driver bug must not stop the other devices
                c.failed_polls += 1
                self._error(f"internal error: {exc!r}")
                log.exception("poll failed", extra={"fields": {"device": g.device}})
                readings = self.normaliser.all_bad("internal error")
            else:
                self._failures = 0
                if self.state != "online":
                    self._set_state("online")
                try:
                    readings = self.normaliser.normalise(raw)
                except Exception as exc:  # values the dictionary cannot take: bad, with the reason
                    self._internal_error("normalising a poll failed", exc)
                    readings = self.normaliser.all_bad(f"internal error: {exc!r}"[:200])
                if self._source_ts is not None:
                    for at, ts in zip(self.normaliser.read_positions(), self._source_ts, strict=False):
                        readings[at].ts = ts
            finished = time.monotonic()
            c.last_poll_ms = (finished - started) * 1000
            c.poll_latency.observe(finished - started)
            ts = time.time_ns() // 1_000_000
            self.latest = readings
            self.latest_ts = ts
            if self.latest_point_ts:
                self.latest_point_ts = []  # a poll reads every point: all at latest_ts (see the API)
            try:
                out, full = self.normaliser.to_publish(readings, finished)
                self.emit(Sample(g.device, ts, out, full))
            except Exception as exc:  # a sink or normalisation bug: counted, the device goes on
                self._internal_error("publishing a poll failed", exc)
            if self.state == "offline":
                backoff = min(g.interval * 2 ** min(self._failures - g.offline_after, 16), g.backoff_max)
                deadline = time.monotonic() + max(backoff, g.interval)
                continue
            deadline += g.interval
            now = time.monotonic()
            if deadline <= now:
                missed = int((now - deadline) // g.interval) + 1
                c.overruns += missed
                deadline += missed * g.interval
                self._ratelimit.log(
                    "overrun",
                    logging.WARNING,
                    "poll overran its interval; deadlines skipped",
                    device=g.device,
                    skipped=c.overruns,
                    poll_ms=round(c.last_poll_ms, 1),
                )
