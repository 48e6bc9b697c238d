"""What every driver offers the runtime: connect, read a planned batch, write a point, close."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class DeviceUnreachable(Exception):
    """The device cannot be reached at all (connect failed, connection lost, every read timed
    out). The message is the reason users see in the device's status."""


class WriteFailed(Exception):
    """A write was not accepted by the device; the message says why (timeout, exception code)."""


@dataclass(slots=True, frozen=True)
class PointError:
    """A value that could not be read; `reason` ends up in the sample as `bad` quality."""

    reason: str


class Driver(Protocol):
    async def connect(self) -> None: ...

    async def read(self) -> list[object]:
        """One value per configured point, in configuration order: the raw decoded value
        (before scale/offset), or a PointError. Raises DeviceUnreachable when nothing could
        be read."""
        ...

    async def write(self, point_id: str, raw_value: object) -> None: ...

    async def close(self) -> None: ...
