"""Values out of the words a read returned: one range's words -> its points' raw values.
Pure functions, so that whatever a device sends ends as values, a named refusal or a
`Malformed` reason (the tests fuzz them)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from .codec import McPoint, decode_words
from .planner import ReadRange


class RangeDecoder:
    """The raw values of one range's points (in the range's point order) from its words."""

    def __init__(self, r: ReadRange, points: Sequence[McPoint]):
        self.words = r.words
        self.fns: list[Callable[[Sequence[int]], object]] = [self._one(r, p) for p in points]

    @staticmethod
    def _one(r: ReadRange, p: McPoint) -> Callable[[Sequence[int]], object]:
        if r.bit_device:
            off = p.number - r.start
            idx, mask = off >> 4, 1 << (off & 15)
            return lambda w: bool(w[idx] & mask)
        off = p.number - r.start
        if p.bit is not None:
            m = 1 << p.bit
            return lambda w: bool(w[off] & m)
        if p.type == "uint16":
            return lambda w: w[off]
        if p.type == "int16":
            return lambda w: w[off] - 0x10000 if w[off] & 0x8000 else w[off]
        n = p.words
        return lambda w: decode_words(p, w[off : off + n])

    def decode(self, words: Sequence[int]) -> list[object]:
        if len(words) != self.words:
            raise ValueError(f"{len(words)} words for a range of {self.words}")
        return [f(words) for f in self.fns]
