"""`validate`'s checks of computed points and alarms (DESIGN §4b): every expression parsed and
its names and kinds checked against the dictionary of every device, cycles between computed
points refused, and what a computed point cannot have (an address, a scale, write access)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..dictionary import DictionaryEntry
from ..expr import BOOL, NUMBER, STRING, ExprError, Expression, Ref, check, parse
from .base import Alarm, DeviceBase, Model
from .source import Path_

Problem = tuple[Path_, str]


def kind_of_type(point_type: str) -> str:
    return BOOL if point_type == "bool" else STRING if point_type == "string" else NUMBER


@dataclass(slots=True)
class DeviceAlarm:
    """An alarm of one device after merging its model's and its own, with where it was written."""

    alarm: Alarm
    path: Path_


def merged_alarms(
    dev: DeviceBase, device_path: Path_, model: Model | None, model_id: str | None
) -> tuple[list[DeviceAlarm], list[Problem]]:
    """The model's alarms, then the device's (a device alarm with a model alarm's id replaces it)."""
    out: dict[str, DeviceAlarm] = {}
    problems: list[Problem] = []
    for alarms, base in (
        (model.alarms if model is not None else [], ("models", model_id or "", "alarms")),
        (dev.alarms, (*device_path, "alarms")),
    ):
        seen: dict[str, int] = {}
        for k, a in enumerate(alarms):
            if a.id in seen:
                problems.append(
                    ((*base, k, "id"), f"duplicate alarm id '{a.id}' (also alarms[{seen[a.id]}])")
                )
                continue
            seen[a.id] = k
            out[a.id] = DeviceAlarm(a, (*base, k))
    return list(out.values()), problems


class ExpressionChecks:
    """The checks over all devices at once (an expression may name another device's point)."""

    def __init__(self, points: dict[str, Sequence[DictionaryEntry]]):
        self.points = points  # device id -> its merged points
        self.kinds: dict[str, dict[str, str]] = {
            d: {e.id: kind_of_type(e.type) for e in pts} for d, pts in points.items()
        }
        self.devices = frozenset(points)
        self._parsed: dict[str, Expression | ExprError] = {}
        self.problems: list[Problem] = []
        # computed point -> the computed points it reads, for cycles
        self._graph: dict[tuple[str, str], list[tuple[str, str]]] = {}
        self._where: dict[tuple[str, str], Path_] = {}

    def _parse(self, text: str) -> Expression | ExprError:
        got = self._parsed.get(text)
        if got is None:
            try:
                got = parse(text, self.devices)
            except ExprError as exc:
                got = exc
            self._parsed[text] = got
        return got

    def _check(self, device: str, text: str, path: Path_, want: str | None) -> Expression | None:
        expr = self._parse(text)
        if isinstance(expr, ExprError):
            self.problems.append((path, str(expr)))
            return None
        own = self.kinds.get(device, {})

        def kind(ref: Ref) -> str | None:
            if ref.device is None:
                return own.get(ref.point)
            return self.kinds.get(ref.device, {}).get(ref.point)

        known = list(own) + [f"{d}.{p}" for d, ks in self.kinds.items() if d != device for p in ks]
        try:
            got = check(expr, kind, known)
        except ExprError as exc:
            self.problems.append((path, str(exc)))
            return None
        if want is not None and got != want:
            what = {BOOL: "a bool", NUMBER: "a number", STRING: "a string"}
            self.problems.append((path, f"the expression gives {what[got]}, the point needs {what[want]}"))
            return None
        return expr

    def device(self, device: str, points: Sequence[DictionaryEntry], alarms: Sequence[DeviceAlarm]) -> None:
        for e in points:
            if e.compute is None:
                continue
            self._computed_point(device, e)
        for a in alarms:
            self._check(device, a.alarm.when, (*a.path, "when"), BOOL)
            if a.alarm.clear is not None:
                self._check(device, a.alarm.clear, (*a.path, "clear"), BOOL)

    def _computed_point(self, device: str, e: DictionaryEntry) -> None:
        path = e.where("compute")
        if e.address is not None:
            self.problems.append((e.where("address"), "a computed point is not read: it has no address"))
        if e.scale != 1.0 or e.offset != 0.0:
            self.problems.append(
                (
                    e.where("scale" if e.scale != 1.0 else "offset"),
                    "a computed point has no raw value to scale: put the factor in the expression",
                )
            )
        if e.access == "rw":
            self.problems.append((e.where("access"), "a computed point cannot be written"))
        expr = self._check(device, e.compute or "", path, kind_of_type(e.type))
        if expr is None:
            return
        node = (device, e.id)
        self._where[node] = path
        self._graph[node] = [(r.device or device, r.point) for r in expr.refs]

    def cycles(self) -> list[Problem]:
        """Each cycle between computed points, once, at the first of its points."""
        out: list[Problem] = []
        state: dict[tuple[str, str], int] = {}  # 1 on the stack, 2 done
        reported: set[frozenset[tuple[str, str]]] = set()

        def visit(node: tuple[str, str], stack: list[tuple[str, str]]) -> None:
            state[node] = 1
            stack.append(node)
            for nxt in self._graph.get(node, ()):
                if nxt not in self._graph:
                    continue  # a read point
                if state.get(nxt) == 1:
                    cycle = stack[stack.index(nxt) :]
                    key = frozenset(cycle)
                    if key not in reported:
                        reported.add(key)
                        names = " → ".join(_name(n, cycle[0][0]) for n in [*cycle, nxt])
                        out.append((self._where[cycle[0]], f"computed points form a cycle: {names}"))
                elif state.get(nxt) is None:
                    visit(nxt, stack)
            stack.pop()
            state[node] = 2

        for node in self._graph:
            if state.get(node) is None:
                visit(node, [])
        return out


def _name(node: tuple[str, str], device: str) -> str:
    return node[1] if node[0] == device else f"{node[0]}.{node[1]}"
