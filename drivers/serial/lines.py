"""From one frame to point values: decode, match the pattern, convert each named group.

A frame that is not text in the configured encoding, or that the pattern does not match, gives
no values at all (it is reported, not published). A group whose text does not convert to its
point's type makes that point bad, with the text in the reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..base import ABSENT, INT_LIMITS, PointError

_TRUE = {"1", "true", "on", "yes", "y", "t"}
_FALSE = {"0", "false", "off", "no", "n", "f"}


@dataclass(slots=True, frozen=True)
class FrameRejected:
    kind: str  # encoding | no_match
    text: str  # what the frame held, shortened, for the log


def convert(text: str, type_: str) -> object:
    """A group's text as a value of the point's type, or a PointError saying why not.
    Numbers may have spaces between sign and digits (`-   12.34`: scales pad to a width)."""
    t = text.strip()
    if t[:1] in ("+", "-"):
        t = t[0] + t[1:].lstrip()
    if type_ == "string":
        return text
    if type_ == "bool":
        low = t.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        return PointError(f"'{_short(text)}' is not a bool")
    if type_ in INT_LIMITS:
        try:
            if "_" in t:  # int() accepts "1_000"; no instrument means that
                raise ValueError(t)
            value = int(t)
        except ValueError:
            return PointError(f"'{_short(text)}' is not an integer")
        lo, hi = INT_LIMITS[type_]
        if not lo <= value <= hi:
            return PointError(f"{value} is outside the range of {type_}")
        return value
    if "," in t and "." not in t and t.count(",") == 1:
        t = t.replace(",", ".")  # a decimal comma, as many European instruments print
    try:
        if "_" in t:
            raise ValueError(t)
        return float(t)
    except ValueError:
        return PointError(f"'{_short(text)}' is not a number")


class LineParser:
    """`pattern` has one named group per point id; without a pattern, a device has one point
    and the whole frame (less surrounding whitespace) is its value."""

    def __init__(self, points: list[tuple[str, str]], pattern: str | None, encoding: str = "utf-8"):
        self.points = points  # (id, type) in configuration order
        self.pattern = re.compile(pattern) if pattern is not None else None
        self.encoding = encoding
        if self.pattern is None and len(points) != 1:
            raise ValueError("without a pattern a device has exactly one point")

    def parse(self, frame: bytes) -> list[object] | FrameRejected | None:
        """Values in point order (ABSENT where the frame has none), a rejection, or None for
        an empty frame (blank lines between readings are common and mean nothing)."""
        try:
            text = frame.decode(self.encoding)
        except UnicodeDecodeError:
            return FrameRejected("encoding", repr(frame[:48]))
        if self.pattern is None:
            text = text.strip()
            if not text:
                return None
            return [convert(text, self.points[0][1])]
        if not text.strip():
            return None
        m = self.pattern.search(text)
        if m is None:
            return FrameRejected("no_match", _short(text))
        groups = m.groupdict()
        out: list[object] = []
        for pid, type_ in self.points:
            g = groups.get(pid)
            out.append(ABSENT if g is None else convert(g, type_))
        return out


def _short(text: str, n: int = 48) -> str:
    text = text.encode("unicode_escape").decode("ascii")
    return text if len(text) <= n else text[: n - 1] + "…"
