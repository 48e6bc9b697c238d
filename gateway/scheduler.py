"""Polling: one task per device, on monotonic deadlines.

A device's task never waits for another's, so a slow or dead device delays only itself.
Deadlines advance by the interval from the previous deadline (no drift); a poll that overruns
its slot skips the missed deadlines and counts them instead of queueing catch-up polls. While
a device is unreachable each attempt still yields a sample with every point bad, and attempts
back off exponentially up to `poll.backoff_max`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from drivers.base import DeviceUnreachable, Driver

from .logs import RateLimited, event
from .normalise import Normaliser, Reading, Sample

log = logging.getLogger("edgegw.poll")


@dataclass
class DeviceCounters:
    polls: int = 0
    failed_polls: int = 0
    overruns: int = 0
    last_error: str | None = None
    last_poll_ms: float = 0.0


@dataclass
class PollGroup:
    """A device's points polled together at one interval."""

    device: str
    interval: float
    backoff_max: float
    offline_after: int
    counters: DeviceCounters = field(default_factory=DeviceCounters)


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
        self.latest: list[Reading] = []
        self._failures = 0
        self._ratelimit = RateLimited(log, 60.0)

    def _set_state(self, state: str, reason: str | None = None) -> None:
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

    async def run(self) -> None:
        g = self.group
        c = g.counters
        self.status(g.device, "connecting", None)
        deadline = time.monotonic()
        while True:
            now = time.monotonic()
            if deadline > now:
                await asyncio.sleep(deadline - now)
            started = time.monotonic()
            c.polls += 1
            try:
                raw = await self.driver.read()
            except DeviceUnreachable as exc:
                reason = str(exc)
                c.failed_polls += 1
                c.last_error = reason
                self._failures += 1
                readings = self.normaliser.all_bad(reason)
                if self._failures >= g.offline_after:
                    if self.state != "offline":
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
                c.last_error = f"internal error: {exc!r}"
                log.exception("poll failed", extra={"fields": {"device": g.device}})
                readings = self.normaliser.all_bad("internal error")
            else:
                self._failures = 0
                if self.state != "online":
                    self._set_state("online")
                readings = self.normaliser.normalise(raw)
            finished = time.monotonic()
            c.last_poll_ms = (finished - started) * 1000
            self.latest = readings
            ts = time.time_ns() // 1_000_000
            out, full = self.normaliser.to_publish(readings, finished)
            self.emit(Sample(g.device, ts, out, full))
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
