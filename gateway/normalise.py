"""Normalisation: raw driver values -> engineering values with quality, per the dictionary.

This is the hot path (every point of every poll passes here). Each model's points are turned
once into one straight-line function (`_compile`): per point, the common case (a number of
the point's own kind, finite) is inline arithmetic with the point's constants, and anything
else (a device error, an Uncertain, an array, a value of another kind) goes through the
general path, `_Plan.slow`, which the generated code must agree with (tests/test_normalise.py
compares the two on random input).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edgegw.drivers.base import ABSENT, PointError, Uncertain

from .dictionary import DictionaryEntry

if TYPE_CHECKING:
    from .computed import Computer

GOOD, UNCERTAIN, BAD = "good", "uncertain", "bad"
_NUMERIC = {"int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64"}


@dataclass(slots=True)
class Reading:
    """One point's value in one poll. `v` is None when `q` is bad."""

    id: str
    v: object
    q: str
    reason: str | None = None
    ts: int | None = None  # source timestamp (ms), when the device supplies one


@dataclass(slots=True)
class Sample:
    """What a device produced in one poll (or one subscription batch), for the sinks."""

    device: str
    ts: int  # ms since the epoch, UTC
    readings: list[Reading]
    full: bool = True  # False: an on_change subset


def _decimals(x: float) -> int:
    text = repr(float(x))
    if "e" in text:
        mant, exp = text.split("e")
        d = len(mant.split(".")[1].rstrip("0")) if "." in mant else 0
        return max(0, d - int(exp))
    frac = text.split(".")[1].rstrip("0") if "." in text else ""
    return len(frac)


# per point: id, type, scaled, scale, offset, digits, is float32, is a float, range low, high
_Step = tuple[str, str, bool, float, float, int | None, bool, bool, float | None, float | None]
_INTEGER = _NUMERIC - {"float32", "float64"}


def _integers(scale: float, offset: float, digits: int) -> tuple[int, int, int]:
    """scale and offset as integers over 10**digits (exact: neither has more decimals)."""
    p = 10**digits
    return round(scale * p), round(offset * p), p


def _exact(raw: int, scale: float, offset: float, digits: int) -> float:
    """raw * scale + offset at `digits` decimals, as round(raw * scale + offset, digits) means
    it, without its cost: integer arithmetic is exact, and one division by 10**digits gives the
    double nearest to the exact decimal (round() gives the same up to the float error of the
    product, which only shows on integers beyond about 2**50)."""
    si, oi, p = _integers(scale, offset, digits)
    return (raw * si + oi) / p


def _general(plan: list[_Step]) -> Callable[[int, object, list[Reading], bool], None]:
    """The general path for one point: any value a driver may give."""

    def slow(i: int, value: object, out: list[Reading], keep_absent: bool) -> None:
        pid, _type, scaled, scale, offset, digits, f32, is_float, lo, hi = plan[i]
        cls = value.__class__
        if cls is PointError:
            if value is ABSENT:  # a frame with some of the points
                if keep_absent:
                    out.append(Reading(pid, None, BAD, "absent"))
                return
            out.append(Reading(pid, None, BAD, value.reason))  # type: ignore[attr-defined]
            return
        quality, why = GOOD, None
        if cls is Uncertain:  # the device says so (OPC UA Uncertain*)
            quality, why = UNCERTAIN, value.reason  # type: ignore[attr-defined]
            value = value.value  # type: ignore[attr-defined]
            cls = value.__class__
        if cls is list:  # an array (OPC UA): published as a JSON list, unscaled
            out.append(Reading(pid, value, quality, why))
            return
        if is_float and not math.isfinite(value):  # type: ignore[arg-type]
            out.append(Reading(pid, None, BAD, "not a finite number"))
            return
        if scaled:
            if digits is not None and cls is int:
                value = _exact(value, scale, offset, digits)  # type: ignore[arg-type]
            else:
                value = value * scale + offset  # type: ignore[operator]
                if digits is not None:
                    value = round(value, digits)
        if f32:
            # a float32 carries ~7 significant digits; don't publish float64 noise
            value = float(f"{value:.7g}")
        if lo is not None and not (lo <= value <= hi):  # type: ignore[operator]
            out.append(Reading(pid, value, UNCERTAIN, why or f"outside range [{lo:g}, {hi:g}]"))
            return
        out.append(Reading(pid, value, quality, why))

    return slow


def _compile(plan: list[_Step]) -> Callable[[list[object], bool], list[Reading]]:
    """One function for the whole plan. The source is made from this module's own template
    and the points' positions only: ids, scales and ranges are bound as names, never written
    into the text, so nothing from a config becomes code."""
    names: dict[str, object] = {"R": Reading, "GOOD": GOOD, "UNCERTAIN": UNCERTAIN, "slow": _general(plan)}
    names["int"], names["float"], names["bool"], names["str"] = int, float, bool, str
    lines = [
        "def normalise(raw, keep_absent=False):",
        f"    if len(raw) != {len(plan)}:",
        f"        raise ValueError(f'{{len(raw)}} values for {len(plan)} points')",
        "    out = []",
        "    append = out.append",
    ]
    for i, (pid, type_, scaled, scale, offset, digits, f32, is_float, lo, hi) in enumerate(plan):
        names[f"I{i}"] = pid
        if type_ in _INTEGER:
            test = "v.__class__ is int"
        elif is_float:
            test = "v.__class__ is float and v - v == 0.0"  # finite: inf - inf and nan are nan
        elif type_ == "bool":
            test = "v.__class__ is bool"
        elif type_ == "string":
            test = "v.__class__ is str"
        else:  # a kind without a fast path
            test = "False"
        lines += [f"    v = raw[{i}]", f"    if {test}:"]
        if scaled:
            if digits is not None:  # an integer type: see _exact
                names[f"S{i}"], names[f"O{i}"], names[f"P{i}"] = _integers(scale, offset, digits)
                lines.append(f"        v = (v * S{i} + O{i}) / P{i}")
            else:
                names[f"S{i}"], names[f"O{i}"] = scale, offset
                lines.append(f"        v = v * S{i} + O{i}")
        if f32:
            lines.append('        v = float(f"{v:.7g}")')
        if lo is not None:
            names[f"L{i}"], names[f"H{i}"] = lo, hi
            names[f"W{i}"] = f"outside range [{lo:g}, {hi:g}]"
            lines += [
                f"        append(R(I{i}, v, GOOD, None) if L{i} <= v <= H{i} else R(I{i}, v, UNCERTAIN, W{i}))",
            ]
        else:
            lines.append(f"        append(R(I{i}, v, GOOD, None))")
        lines += ["    else:", f"        slow({i}, v, out, keep_absent)"]
    lines.append("    return out")
    code = compile("\n".join(lines), "<normaliser>", "exec")
    exec(code, names)
    return names["normalise"]  # type: ignore[return-value]


class Normaliser:
    def __init__(
        self,
        entries: list[DictionaryEntry],
        publish: str = "always",
        heartbeat: float = 60.0,
        shared: dict[str, Any] | None = None,
        computer: Computer | None = None,
    ):
        """`shared`: a dict kept by every device with these same `entries` (one model); the plan
        derived from the entries is made once and kept there. `computer`: the device's computed
        points, when it has any: `normalise` then takes the raw values of the read points only
        and returns every point."""
        self.entries = entries
        self.computer = computer
        # with computed points: where each read point's reading goes in the full list, and the
        # latest reading of every point (a stream device sends some points per frame)
        self._read_at = [i for i, e in enumerate(entries) if e.compute is None] if computer else []
        self._full: list[Reading | None] = [None] * len(entries)
        self.on_change = publish == "on_change"
        self.heartbeat = heartbeat
        self._last: list[tuple[object, str] | None] = [None] * len(entries)
        self._last_full = -math.inf
        self._plan: list[_Step]
        self._deadband: list[float | None]
        self._index: dict[str, int]
        self._normalise: Callable[..., list[Reading]]
        if shared is not None and "normalise" in shared:
            self._plan, self._deadband, self._index, self._normalise = shared["normalise"]
            return
        self._plan = []
        for e in entries:
            if e.compute is not None:
                continue  # computed, not read: the Computer makes its reading
            scaled = e.type in _NUMERIC and (e.scale != 1.0 or e.offset != 0.0)
            digits: int | None = None
            if scaled and e.type != "float32" and e.type != "float64":
                digits = max(_decimals(e.scale), _decimals(e.offset))
            lo, hi = e.range if e.range is not None else (None, None)
            self._plan.append(
                (
                    e.id,
                    e.type,
                    scaled,
                    e.scale,
                    e.offset,
                    digits,
                    e.type == "float32",
                    e.type in ("float32", "float64"),
                    lo,
                    hi,
                )
            )
        self._deadband = [e.deadband for e in entries]
        self._index = {e.id: i for i, e in enumerate(entries)}
        self._normalise = _compile(self._plan)
        if shared is not None:
            shared["normalise"] = (self._plan, self._deadband, self._index, self._normalise)

    def normalise(self, raw: list[object]) -> list[Reading]:
        if self.computer is None:
            return self._normalise(raw)
        full = self._full
        read_at = self._read_at
        out = []
        for at, value, r in zip(read_at, raw, self._normalise(raw, True), strict=True):
            if value is not ABSENT:
                full[at] = r
                out.append(at)
        self.computer.complete(full)
        if len(out) == len(read_at):  # every point, in order
            return list(full)  # type: ignore[arg-type]
        # a frame with some of the points: those, and every computed point
        shown = set(out) | {i for i, e in enumerate(self.entries) if e.compute is not None}
        return [r for i, r in enumerate(full) if i in shown and r is not None]

    def position(self, point_id: str) -> int:
        return self._index[point_id]

    def all_bad(self, reason: str) -> list[Reading]:
        readings = [Reading(e.id, None, BAD, reason) for e in self.entries]
        if self.computer is not None:
            self._full = list(readings)
        return readings

    def read_positions(self) -> list[int]:
        """Where the driver's points are in the full list (its source timestamps follow them)."""
        return self._read_at if self.computer is not None else list(range(len(self.entries)))

    def to_publish(self, readings: list[Reading], now: float) -> tuple[list[Reading], bool]:
        """With publish: on_change, the readings that changed beyond their deadband (all of
        them at each heartbeat). Returns (readings, full); full means every point is there."""
        some = len(readings) != len(self.entries)  # a frame with some of the points
        if not self.on_change:
            return readings, not some
        full = now - self._last_full >= self.heartbeat
        out = []
        last = self._last
        index = self._index
        for i, r in enumerate(readings):
            if some:
                i = index[r.id]
            prev = last[i]
            if full or prev is None or prev[1] != r.q or _changed(prev[0], r.v, self._deadband[i]):
                out.append(r)
                last[i] = (r.v, r.q)
        if full and not some:
            self._last_full = now
        return out, full and not some


def _changed(old: object, new: object, deadband: float | None) -> bool:
    if deadband is not None and isinstance(new, int | float) and isinstance(old, int | float):
        return abs(new - old) > deadband
    return old != new
