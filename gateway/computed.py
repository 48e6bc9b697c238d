"""Computed points (DESIGN §4b): values derived from other points by an expression, after each
poll of their device, and then ordinary points downstream (dictionary, classification, MQTT,
InfluxDB, API, identifier rules).

A computed point's quality is the worst of its inputs': a bad input makes it bad ("input X is
bad: <why>"), an uncertain one uncertain; a value the expression cannot have (division by zero)
makes it bad with that reason. An input of another device (`other.point`) is that device's
latest reading, kept on the `Board`; its time counts for the computed point's time only when
no input of the device itself is involved.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from .dictionary import DictionaryEntry
from .expr import EvalError, Fn, Ref, compile_expr, parse
from .normalise import BAD, GOOD, UNCERTAIN, Reading

_RANK = {GOOD: 0, UNCERTAIN: 1, BAD: 2}
_INTEGER = {
    "int8": (-(2**7), 2**7 - 1),
    "uint8": (0, 2**8 - 1),
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint64": (0, 2**64 - 1),
}


class Board:
    """The latest reading of the points other devices' expressions name: (device, point) →
    (value, quality, reason, ts ms). Only the points some expression names are kept."""

    def __init__(self) -> None:
        self.wanted: dict[str, set[str]] = {}
        self.values: dict[tuple[str, str], tuple[object, str, str | None, int]] = {}

    def want(self, device: str, point: str) -> None:
        self.wanted.setdefault(device, set()).add(point)

    def put(self, device: str, readings: Sequence[Reading], ts: int) -> None:
        points = self.wanted.get(device)
        if not points:
            return
        for r in readings:
            if r.id in points:
                self.values[(device, r.id)] = (r.v, r.q, r.reason, r.ts or ts)


@dataclass(slots=True)
class _Computed:
    position: int  # in the device's full point list
    entry: DictionaryEntry
    fn: Fn
    own: tuple[tuple[Ref, int], ...]  # inputs of this device, with their positions
    foreign: tuple[Ref, ...]  # inputs of other devices


class Computer:
    """The computed points of one device, evaluated in dependency order."""

    def __init__(
        self,
        device: str,
        entries: Sequence[DictionaryEntry],
        devices: Sequence[str],
        board: Board,
        shared: dict[str, object] | None = None,
    ):
        """`shared`: kept by every device with these same `entries` (one model): the parsed and
        compiled expressions are made once there (they name no device of their own)."""
        self.device = device
        self.board = board
        if shared is not None and "computed" in shared:
            self.steps: list[_Computed] = shared["computed"]  # type: ignore[assignment]
            for step in self.steps:
                for r in step.foreign:
                    board.want(r.device or "", r.point)
            return
        index = {e.id: i for i, e in enumerate(entries)}
        parsed = {e.id: parse(e.compute, devices) for e in entries if e.compute is not None}
        order: list[str] = []
        state: dict[str, int] = {}

        def visit(pid: str) -> None:  # validate refused cycles: this is a plain topological sort
            if state.get(pid):
                return
            state[pid] = 1
            for r in parsed[pid].refs:
                if r.device is None and r.point in parsed:
                    visit(r.point)
            order.append(pid)

        for pid in parsed:
            visit(pid)
        self.steps = []
        for pid in order:
            expr = parsed[pid]
            own = tuple((r, index[r.point]) for r in sorted(expr.refs, key=str) if r.device is None)
            foreign = tuple(r for r in sorted(expr.refs, key=str) if r.device is not None)
            for r in foreign:
                board.want(r.device or "", r.point)
            self.steps.append(_Computed(index[pid], entries[index[pid]], compile_expr(expr), own, foreign))
        if shared is not None:
            shared["computed"] = self.steps

    def complete(self, readings: list[Reading | None]) -> None:
        """Fill the computed points' places in `readings` (the device's full list, in order;
        the read points already there)."""
        env: dict[Ref, object] = {}
        for step in self.steps:
            quality, why, ts = GOOD, None, None
            for ref, at in step.own:
                r = readings[at]
                if r is None:  # an instrument that has not sent this point yet
                    quality, why = BAD, f"input {ref} has no value yet"
                    break
                q = r.q
                if q != GOOD and _RANK[q] > _RANK[quality]:
                    quality, why = q, f"input {ref} is {q}" + (f": {r.reason}" if r.reason else "")
                env[ref] = r.v
            for ref in step.foreign if quality != BAD else ():
                got = self.board.values.get((ref.device or "", ref.point))
                if got is None:
                    quality, why = BAD, f"input {ref} has no value yet"
                    break
                value, q, reason, at_ts = got
                if q != GOOD and _RANK[q] > _RANK[quality]:
                    quality, why = q, f"input {ref} is {q}" + (f": {reason}" if reason else "")
                env[ref] = value
                ts = at_ts if ts is None else max(ts, at_ts)
            if step.own:
                ts = None  # the device's own poll is the newest input: the sample's time
            e = step.entry
            if quality == BAD:
                readings[step.position] = Reading(e.id, None, BAD, why, ts)
                continue
            try:
                value = _as_type(step.fn(env), e.type)
            except EvalError as exc:
                readings[step.position] = Reading(e.id, None, BAD, str(exc), ts)
                continue
            if e.range is not None and isinstance(value, int | float) and not isinstance(value, bool):
                lo, hi = e.range
                if not lo <= value <= hi:
                    quality, why = UNCERTAIN, why or f"outside range [{lo:g}, {hi:g}]"
            readings[step.position] = Reading(e.id, value, quality, why, ts)


def _as_type(value: object, point_type: str) -> object:
    bounds = _INTEGER.get(point_type)
    if bounds is not None:
        if isinstance(value, float):
            if not math.isfinite(value):
                raise EvalError(f"the value {value} is not a number")
            value = round(value)
        if not bounds[0] <= value <= bounds[1]:  # type: ignore[operator]
            raise EvalError(f"the value {value} does not fit {point_type}")
        return value
    if point_type == "float32":
        return float(f"{float(value):.7g}")  # type: ignore[arg-type]
    if point_type == "float64" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value
