"""The status page's trends: a bounded in-memory history of every numeric point.

Every `step` seconds one sample of each numeric point's latest reading (None while it is bad)
goes into a ring shared by all devices: one timestamp ring, and per device one float32 array
holding each of its numeric points' rings. Memory is fixed when the layout is made and never
grows: `samples` per point is what fits MAX_BYTES, between MIN_SAMPLES and MAX_SAMPLES, and the
step widens so that the ring still covers WINDOW seconds. At 1,000 devices x 100 points that is
83 samples a point, one every 3.6 s, 32 MiB; a gateway with about 28,000 points or fewer keeps 300
samples a second apart (5 minutes at 1 s). Points beyond MAX_BYTES even at MIN_SAMPLES (more
than about 140,000) get no history, and the page says so.

The history is read from the devices' latest readings (what the API and the page show anyway),
so it costs nothing per poll: one pass over the numeric points per step.

It is kept while someone looks: the first request of the status page's feed or view starts it
(the trends fill from then on), and IDLE seconds without one stop it and give its memory back.
A gateway nobody watches, which is most of them most of the time, holds none of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from array import array
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..normalise import _NUMERIC

if TYPE_CHECKING:
    from ..dictionary import DictionaryEntry
    from ..runtime import Gateway

log = logging.getLogger("edgegw.api")

WINDOW = 300.0  # seconds a trend covers
STEP = 1.0  # the finest step, seconds
MAX_SAMPLES = 300  # per point
MIN_SAMPLES = 60  # per point: below this a trend says little; points beyond the budget get none
MAX_BYTES = 32 * 1024 * 1024  # for all the values (4 bytes each)
IDLE = 900.0  # seconds without a viewer before the history is dropped
NAN = math.nan


def decimals(e: DictionaryEntry) -> int | None:
    """The point's resolution as decimals to show: an integer register scaled by 0.1 has one,
    an unscaled integer none; a float has what its range calls for (4 significant digits of
    the span), or None (the page shows 5 significant digits) without a range."""
    if e.type not in _NUMERIC:
        return None
    if e.type.startswith("float"):
        if e.range is None:
            return None
        span = abs(e.range[1] - e.range[0])
        if span <= 0:
            return None
        return max(0, min(6, 3 - math.floor(math.log10(span))))
    return max(_places(e.scale), _places(e.offset))


def _places(x: float) -> int:
    if float(x).is_integer():
        return 0
    text = f"{x:.10f}".rstrip("0")
    return min(10, len(text.split(".")[1]))


@dataclass
class _Device:
    points: list[str]  # numeric point ids, in the order of their rings
    at: list[int]  # each one's position in the device's list of points
    digits: list[int | None]  # decimals to round to when sent
    values: array  # len(points) * samples float32, point-major
    key: tuple[tuple[str, str], ...]  # (id, type) of every point: a changed device gets new rings


class History:
    def __init__(
        self,
        gw: Gateway,
        window: float = WINDOW,
        max_bytes: int = MAX_BYTES,
        max_samples: int = MAX_SAMPLES,
        min_samples: int = MIN_SAMPLES,
        idle: float = IDLE,
    ):
        self.gw = gw
        self.idle = idle
        self._viewed = -math.inf
        self._stopping: asyncio.Event | None = None
        self.window, self.max_bytes = window, max_bytes
        self.max_samples, self.min_samples = max_samples, min_samples
        self.samples = 0  # per point
        self.step = STEP
        self.devices: dict[str, _Device] = {}
        self.without: list[str] = []  # devices left out: over the byte budget
        self.ts = array("d")  # ms, per slot
        self.head = 0  # the next slot written
        self.filled = 0
        self.ticks = 0
        self._layout_of: object = None
        self._task: asyncio.Task[None] | None = None

    @property
    def points(self) -> int:
        return sum(len(d.points) for d in self.devices.values())

    @property
    def nbytes(self) -> int:
        return sum(d.values.itemsize * len(d.values) for d in self.devices.values()) + 8 * len(self.ts)

    def _layout(self) -> None:
        """Rings for the devices of the running config: kept for unchanged devices, new for the
        others; the size per point is fixed by the number of numeric points."""
        gw = self.gw
        self._layout_of = gw.loaded
        wanted: list[tuple[str, list[DictionaryEntry]]] = []
        for r in gw.loaded.devices:
            wanted.append((gw.cfg.devices[r.index].id, r.points))
        total = sum(1 for _, pts in wanted for e in pts if e.type in _NUMERIC)
        samples = self.max_samples if total == 0 else min(self.max_samples, self.max_bytes // (4 * total))
        samples = max(samples, self.min_samples)
        budget = self.max_bytes // (4 * samples)  # points that fit
        if samples != self.samples:  # a new size: every ring starts again
            self.devices = {}
            self.samples = samples
            self.ts = array("d", [0.0]) * samples
            self.head = self.filled = 0
        self.step = max(STEP, self.window / samples)
        old, self.devices, self.without = self.devices, {}, []
        used = 0
        for device, pts in wanted:
            at = [i for i, e in enumerate(pts) if e.type in _NUMERIC]
            if not at:
                continue
            if used + len(at) > budget:
                self.without.append(device)
                continue
            used += len(at)
            key = tuple((e.id, e.type) for e in pts)
            kept = old.get(device)
            if kept is not None and kept.key == key:
                self.devices[device] = kept
                continue
            self.devices[device] = _Device(
                [pts[i].id for i in at],
                at,
                [decimals(pts[i]) for i in at],
                array("f", [NAN]) * (len(at) * samples),
                key,
            )

    def tick(self, now_ms: float | None = None) -> None:
        """One sample of every numeric point's latest reading."""
        if self._layout_of is not self.gw.loaded:
            self._layout()
        n, head = self.samples, self.head
        runners = self.gw.runners
        for device, d in self.devices.items():
            values = d.values
            runner = runners.get(device)
            latest = runner.latest if runner is not None else ()
            if len(latest) <= d.at[-1]:  # nothing read yet
                for k in range(len(d.at)):
                    values[k * n + head] = NAN
                continue
            slot = head
            for i in d.at:
                r = latest[i]
                v = r.v
                cls = v.__class__
                values[slot] = v if (cls is float or cls is int) and r.q != "bad" else NAN
                slot += n
        self.ts[head] = time.time_ns() // 1_000_000 if now_ms is None else now_ms  # whole ms, as sent
        self.head = (head + 1) % n
        self.filled = min(self.filled + 1, n)
        self.ticks += 1

    def _slots(self, since: float) -> list[int]:
        n = self.samples
        start = (self.head - self.filled) % n if n else 0
        slots = [(start + j) % n for j in range(self.filled)]
        return [s for s in slots if self.ts[s] > since]

    def series(self, device: str, since: float = 0.0) -> dict[str, Any]:
        """The samples newer than `since` (ms): {"ts": [ms…], "points": {id: [value or None…]}};
        values rounded to one decimal more than the point shows."""
        d = self.devices.get(device)
        slots = self._slots(since) if d is not None else []
        out: dict[str, Any] = {"ts": [int(self.ts[s]) for s in slots], "points": {}}
        if d is None:
            return out
        n, values, points = self.samples, d.values, out["points"]
        for k, pid in enumerate(d.points):
            base = k * n
            digits = d.digits[k]
            places = 6 if digits is None else digits + 1
            row = []
            for s in slots:
                v = values[base + s]
                row.append(None if v != v or v in (math.inf, -math.inf) else round(v, places))
            points[pid] = row
        return out

    def describe(self) -> dict[str, Any]:
        return {
            "step_s": round(self.step, 3),
            "window_s": round(self.step * self.samples, 1),
            "samples": self.samples,
            "points": self.points,
            "bytes": self.nbytes,
            **({"without_history": self.without} if self.without else {}),
        }

    def start(self, stopping: asyncio.Event) -> None:
        """Ready to record; recording starts with the first viewer (`watched`)."""
        self._stopping = stopping

    def watched(self) -> None:
        """Someone looks at the trends: record (from now, if nobody looked for IDLE seconds)."""
        self._viewed = time.monotonic()
        if self._task is None and self._stopping is not None and not self._stopping.is_set():
            self._task = asyncio.create_task(self._run(self._stopping), name="status-history")

    def _drop(self) -> None:
        self.devices, self.without = {}, []
        self.ts = array("d")
        self.samples = self.head = self.filled = 0
        self._layout_of = None

    async def _run(self, stopping: asyncio.Event) -> None:
        try:
            await self._record(stopping)
        finally:
            self._task = None
            self._drop()

    async def _record(self, stopping: asyncio.Event) -> None:
        failures = 0
        while not stopping.is_set() and time.monotonic() - self._viewed < self.idle:
            try:
                self.tick()
            except Exception as exc:  # a history gap, never a gateway failure
                failures += 1
                if failures == 1 or failures % 1000 == 0:
                    log.error("recording the status page's history failed", exc_info=exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), self.step)
