"""Values that follow the data dictionary: within range, of the right type, changing over time.

Every value is a pure function of time and the point, so two simulator runs agree and a test
can predict what the gateway should report.
"""

from __future__ import annotations

import math
import time
import zlib
from dataclasses import dataclass, field

from edgegw.gateway.dictionary import DictionaryEntry

_INT_TYPES = {"int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64"}
_UNSIGNED_MAX = {"uint8": 255, "uint16": 65535, "uint32": 2**32 - 1, "uint64": 2**64 - 1}
_SIGNED_MAX = {"int8": 127, "int16": 32767, "int32": 2**31 - 1, "int64": 2**63 - 1}


class ValueGenerator:
    """Engineering value of one point at time t (seconds since the simulator started)."""

    def __init__(self, device_id: str, entry: DictionaryEntry, period: float = 60.0):
        self.entry = entry
        seed = zlib.crc32(f"{device_id}/{entry.id}".encode())
        self.phase = (seed % 1000) / 1000 * 2 * math.pi
        self.period = period * (0.75 + (seed % 500) / 1000)
        self.seed = seed
        self.string_chars = (entry.length or 1) * 2

    def value(self, t: float) -> object:
        e = self.entry
        if e.type == "bool":
            return math.sin(2 * math.pi * t / (self.period / 4) + self.phase) > 0
        if e.type == "string":
            n = int(t // 5) + 1 + self.seed % 1000
            prefix = "SN-" if "serial" in e.id or e.id.endswith("_id") else "R"
            return f"{prefix}{n:06d}"[: self.string_chars]
        if e.range is None:
            if e.type in _INT_TYPES:
                # counters (shots, energy): increase steadily from a per-point base
                return self._counter(self.seed % 10000 + t * 0.5)
            return round(100 * math.sin(2 * math.pi * t / self.period + self.phase), 3)
        lo, hi = e.range
        mid, amp = (lo + hi) / 2, (hi - lo) * 0.35
        v = mid + amp * math.sin(2 * math.pi * t / self.period + self.phase)
        if e.type in _INT_TYPES and e.scale == 1.0 and e.offset == 0.0:
            return round(v)
        return v

    def _counter(self, raw: float) -> float:
        """A counter advancing in raw units, wrapping at the type's maximum, as engineering value."""
        e = self.entry
        wrap = _UNSIGNED_MAX.get(e.type) or _SIGNED_MAX.get(e.type, 2**31)
        return int(raw) % wrap * e.scale + e.offset


@dataclass
class HeldValues:
    """A simulated device's points: each follows its generator unless held at a value (by
    the control API), what the simulators of instruments and OPC UA servers share."""

    id: str
    entries: list[DictionaryEntry]
    generators: list[ValueGenerator]
    held: dict[str, object] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    requests: int = 0

    def generated(self, entry: DictionaryEntry, gen: ValueGenerator, t: float) -> object:
        return gen.value(t)

    def values(self) -> dict[str, object]:
        t = time.monotonic() - self.started
        return {
            e.id: self.held[e.id] if e.id in self.held else self.generated(e, g, t)
            for e, g in zip(self.entries, self.generators, strict=True)
        }

    def hold(self, point_id: str, value: object) -> bool:
        """Hold a point at an engineering value (None: follow the generator again)."""
        if point_id not in {e.id for e in self.entries}:
            return False
        if value is None:
            self.held.pop(point_id, None)
        else:
            self.held[point_id] = value
        return True
