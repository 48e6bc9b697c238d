"""What every driver offers the runtime: connect, read a planned batch, write a point, close."""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol

# the value range of each integer type of the dictionary
INT_LIMITS = {
    "int8": (-(2**7), 2**7 - 1),
    "uint8": (0, 2**8 - 1),
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint64": (0, 2**64 - 1),
}


def fit_integer(type_: str, value: object) -> int:
    """A raw value for an integer point of `type_`: a float is rounded; ValueError says why a
    value cannot be written (not finite, not a number, outside the type's range)."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value} is not a finite number")
        value = round(value)
    lo, hi = INT_LIMITS[type_]
    if not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"{value} does not fit {type_} ({lo}..{hi})")
    return value


# seconds; fine at the low end, where device round trips on a LAN or a serial bus fall
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(slots=True)
class LatencyHistogram:
    """Request round trips, counted into fixed buckets: cheap enough for every request, and
    what the metrics endpoint exports as a Prometheus histogram."""

    bounds: tuple[float, ...] = LATENCY_BUCKETS
    counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    sum: float = 0.0
    count: int = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.sum += seconds
        self.count += 1

    def merge(self, other: LatencyHistogram) -> None:
        for i, n in enumerate(other.counts):
            self.counts[i] += n
        self.sum += other.sum
        self.count += other.count

    def quantile(self, q: float) -> float | None:
        """The upper bound of the bucket holding the q-quantile (None before any observation)."""
        if self.count == 0:
            return None
        rank = q * self.count
        seen = 0
        for i, n in enumerate(self.counts):
            seen += n
            if seen >= rank and n:
                return self.bounds[i] if i < len(self.bounds) else float("inf")
        return float("inf")


class DeviceUnreachable(Exception):
    """The device cannot be reached at all (connect failed, connection lost, every read timed
    out). The message is the reason users see in the device's status."""


class WriteFailed(Exception):
    """A write was not accepted by the device; the message says why (exception code, connection)."""


class WriteTimeout(WriteFailed):
    """The device did not answer a write in time: it may or may not have applied it."""


@dataclass(slots=True, frozen=True)
class PointError:
    """A value that could not be read; `reason` ends up in the sample as `bad` quality."""

    reason: str


@dataclass(slots=True, frozen=True)
class Uncertain:
    """A value the device itself qualifies as uncertain (OPC UA Uncertain* status codes)."""

    value: object
    reason: str


# A point that a sample has no value for: a line-protocol frame carries some of a device's
# points (an optional group that did not match). Such a point is left out of the sample.
ABSENT = PointError("not in this frame")


class Driver(Protocol):
    """A device's driver as the scheduler, the metrics and the API see it. The members after
    the counters have defaults in `DriverBase`, which every driver of this repo extends."""

    latency: LatencyHistogram  # round trip of each request to the device
    request_count: int
    error_count: int

    @property
    def timeout(self) -> float:
        """Seconds one request may take; a write is given twice that, plus a second."""
        ...

    @property
    def source_ts(self) -> list[int | None] | None:
        """Per point, the device's own timestamp of the last value read (OPC UA SourceTimestamp),
        in configuration order; None: the device gives none and the gateway's time is used."""
        ...

    @property
    def frame_errors(self) -> Mapping[str, int]:
        """Malformed frames by kind (line protocols); empty when the protocol has none."""
        ...

    @property
    def stream(self) -> bool:
        """True: the device sends on its own and the driver is a StreamDriver."""
        ...

    async def connect(self) -> None: ...

    async def read(self) -> list[object]:
        """One value per configured point, in configuration order: the raw decoded value
        (before scale/offset), or a PointError. Raises DeviceUnreachable when nothing could
        be read."""
        ...

    async def write(self, point_id: str, raw_value: object) -> None:
        """Write one point's raw value (after the inverse of scale/offset). Raises WriteFailed
        with the device's own reason (timeout, exception code)."""
        ...

    async def close(self) -> None: ...


class StreamDriver(Driver, Protocol):
    """A driver whose device sends when it has something (`stream` is True): a line-protocol
    instrument, an OPC UA subscription. The scheduler takes samples instead of polling."""

    @property
    def idle_timeout(self) -> float | None:
        """No sample this long means offline; None: silence is normal."""
        ...

    async def next_sample(self, timeout: float | None) -> tuple[list[object], int] | None:
        """The next values (as `read` returns them) and the time they arrived (ms since the
        epoch), or None when `timeout` passed without one."""
        ...


class DriverBase:
    """The defaults of the Driver contract's members that not every protocol has."""

    timeout: float = 2.0
    source_ts: list[int | None] | None = None
    frame_errors: Mapping[str, int] = MappingProxyType({})
    stream: bool = False
    idle_timeout: float | None = None
