"""The read planner: coalesce a device's points into the fewest Modbus read requests.

A pure function. Points of one area are sorted by start and merged greedily while the request
stays within `max_registers` (or `max_bits` for coils and discrete inputs) and the unused span
between two points is at most `max_gap`. Greedy-by-start is optimal for this covering problem:
any plan must start a request at the first uncovered point, and extending it as far as the
limits allow never leaves more work for later.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from .address import BIT_AREAS, Area


@dataclass(frozen=True, slots=True)
class RegisterSpan:
    """What the planner needs to know of a point: where it is and how wide."""

    area: Area
    offset: int
    width: int  # registers, or 1 for a coil/discrete input


@dataclass(slots=True)
class ReadRequest:
    area: Area
    start: int
    count: int
    points: list[int] = field(default_factory=list)  # indexes into the planned points

    @property
    def end(self) -> int:
        return self.start + self.count


class PlanError(ValueError):
    pass


def plan_reads(
    points: Sequence[RegisterSpan],
    max_registers: int = 125,
    max_bits: int = 2000,
    max_gap: int = 16,
) -> list[ReadRequest]:
    requests: list[ReadRequest] = []
    by_area: dict[Area, list[int]] = {}
    for i, p in enumerate(points):
        by_area.setdefault(p.area, []).append(i)
    for area in sorted(by_area):
        limit = max_bits if area in BIT_AREAS else max_registers
        order = sorted(by_area[area], key=lambda i: (points[i].offset, -points[i].width))
        current: ReadRequest | None = None
        for i in order:
            p = points[i]
            if p.width > limit:
                raise PlanError(
                    f"{area}:{p.offset} spans {p.width} registers, more than the {limit} a request may read"
                )
            end = p.offset + p.width
            if end > 65536:
                raise PlanError(f"{area}:{p.offset} runs past the end of the address space")
            if (
                current is not None
                and p.offset - current.end <= max_gap
                and max(current.end, end) - current.start <= limit
            ):
                current.count = max(current.end, end) - current.start
                current.points.append(i)
                continue
            current = ReadRequest(area, p.offset, p.width, [i])
            requests.append(current)
    return requests
