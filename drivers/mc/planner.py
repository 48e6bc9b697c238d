"""The MC read planner: points coalesced per device into ranges of words, contiguous ranges
read with batch reads (0401, up to 960 words each) and small scattered ones gathered into
random reads (0403, up to 192 word/double-word access points; 96 with the iQ-R subcommands).

Everything is read in word units: a bit device's word holds 16 consecutive points from its
head number (the head need not be a multiple of 16 on Q/L/iQ-R/iQ-F CPUs), so one word of M
reads 16 relays, and a scattered relay costs one random-read access point.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .codec import MAX_BATCH_WORDS, MAX_RANDOM


class PlanError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Span:
    """What one point occupies: for a word device, `size` words from `start`; for a bit
    device, one bit at `start`."""

    device: str
    bit_device: bool
    start: int
    size: int


@dataclass(frozen=True, slots=True)
class ReadRange:
    """A run of one device read together. `words` words from the head `start` (for a bit
    device: 16 points per word)."""

    device: str
    bit_device: bool
    start: int
    words: int
    points: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class ReadRequest:
    """A batch read of one range, or a random read of small ranges (one word access point
    per 1-word range, one double-word access point per 2-word range)."""

    random: bool
    ranges: tuple[int, ...]


def _extent(bit_device: bool, start: int, end: int) -> int:
    """Words covering [start, end) of a device (units: bits for bit devices)."""
    return (end - start + 15) // 16 if bit_device else end - start


def coalesce(spans: Sequence[Span], max_gap: int, max_words: int = MAX_BATCH_WORDS) -> list[ReadRange]:
    """Spans of one device joined where at most `max_gap` unused words lie between them, and
    cut where a range would pass `max_words`."""
    order = sorted(range(len(spans)), key=lambda i: (spans[i].device, spans[i].start, -spans[i].size))
    ranges: list[ReadRange] = []
    cur: list[int] = []
    device, bitdev, start, end = "", False, 0, 0
    for i in order:
        s = spans[i]
        unit = 16 if s.bit_device else 1
        if cur and s.device == device and s.start - end <= max_gap * unit:
            new_end = max(end, s.start + s.size)
            if _extent(bitdev, start, new_end) <= max_words:
                end = new_end
                cur.append(i)
                continue
        if cur:
            ranges.append(ReadRange(device, bitdev, start, _extent(bitdev, start, end), tuple(cur)))
        cur, device, bitdev, start, end = [i], s.device, s.bit_device, s.start, s.start + s.size
    if cur:
        ranges.append(ReadRange(device, bitdev, start, _extent(bitdev, start, end), tuple(cur)))
    for r in ranges:
        if r.words > max_words:
            raise PlanError(
                f"{r.device}{r.start}: {r.words} words in one point, more than one request reads ({max_words})"
            )
    return ranges


def pack(ranges: Sequence[ReadRange], iqr: bool = False, random: bool = True) -> list[ReadRequest]:
    """Ranges of 1 or 2 words go into random reads when there are at least two of them; the
    others are batch reads."""
    small = [n for n, r in enumerate(ranges) if r.words <= 2] if random else []
    if len(small) < 2:
        small = []
    requests = [ReadRequest(False, (n,)) for n, r in enumerate(ranges) if n not in set(small)]
    limit = MAX_RANDOM[iqr]
    for k in range(0, len(small), limit):
        requests.append(ReadRequest(True, tuple(small[k : k + limit])))
    return requests


def plan_reads(
    spans: Sequence[Span],
    max_gap: int = 16,
    iqr: bool = False,
    max_words: int = MAX_BATCH_WORDS,
    random: bool = True,
) -> tuple[list[ReadRange], list[ReadRequest]]:
    ranges = coalesce(spans, max_gap, max_words)
    return ranges, pack(ranges, iqr, random)
