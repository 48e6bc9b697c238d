"""Checks that span keys: ids, model references, units, serial buses, identifier rules; and
each device's protocol checks through its plugin.

Each check adds to one list of problems so that `edgegw validate` reports every error at once.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

from edgegw.drivers.plugin import Context
from edgegw.drivers.registry import plugin_for
from edgegw.identifier.rules import check_rules

from ..dictionary import DictionaryEntry, merge_points
from .expressions import DeviceAlarm, ExpressionChecks, merged_alarms
from .schema import Device, GatewayConfig
from .source import Path_
from .units import UNECE_REC20


@dataclass(slots=True)
class ResolvedDevice:
    """A device's points after merging and checking; `plan` is its plugin's (parsed addresses,
    a read plan), made once by `validate` and used by the driver and the simulator."""

    index: int
    points: list[DictionaryEntry]
    plan: object = None
    # shared by the devices that share `points` and `plan` (one model, same settings): what the
    # runtime derives from them once (the normaliser's plan), not once per device
    shared: dict[str, Any] = field(default_factory=dict, compare=False)
    # the points its driver reads, in configuration order: `points` without the computed ones
    read_points: list[DictionaryEntry] = field(default_factory=list)
    alarms: list[DeviceAlarm] = field(default_factory=list)


def check(
    cfg: GatewayConfig, devices: list[tuple[int, Device]], bad_models: set[str]
) -> tuple[list[ResolvedDevice], list[tuple[Path_, str]]]:
    """Cross-key checks over the devices (with their indexes in the file) that passed the
    schema. `bad_models` failed the schema: references to them are not reported again."""
    problems: list[tuple[Path_, str]] = []
    resolved: list[ResolvedDevice] = []
    seen: dict[str, int] = {}
    shared: dict[tuple[object, ...], ResolvedDevice] = {}
    for i, dev in devices:
        path: Path_ = ("devices", i)
        plugin = plugin_for(dev.protocol)
        if dev.id in seen:
            problems.append(((*path, "id"), f"duplicate device id '{dev.id}' (also devices[{seen[dev.id]}])"))
        else:
            seen[dev.id] = i
        model = None
        if dev.model is not None:
            model = cfg.models.get(dev.model)
            if model is None and dev.model not in bad_models:
                hint = difflib.get_close_matches(dev.model, list(cfg.models), n=1)
                suggestion = (
                    f"did you mean '{hint[0]}'?"
                    if hint
                    else (
                        f"known models: {', '.join(sorted(cfg.models))}"
                        if cfg.models
                        else "no models are defined"
                    )
                )
                problems.append(((*path, "model"), f"unknown model '{dev.model}'; {suggestion}"))
        # devices that take a model as it is share its merged, checked points (a plant has
        # hundreds of the same machine: this keeps validation and memory per model, not per device)
        key = None
        if model is not None and not dev.points and not dev.alarms:
            own = plugin.shared_key(dev)
            key = None if own is None else (dev.protocol, dev.model, *own)
        if key is not None and key in shared:
            first = shared[key]
            resolved.append(
                ResolvedDevice(i, first.points, first.plan, first.shared, first.read_points, first.alarms)
            )
            continue
        entries, merge_problems = merge_points(dev, path, model, dev.model, plugin.address_key)
        mine: list[tuple[Path_, str]] = list(merge_problems)
        points = [e for e in entries if e is not None]
        if not points and not merge_problems and (dev.model is None or model is not None):
            mine.append(((*path, "points"), "the device has no points (give a model or points)"))
        for e in points:
            mine += _check_point(e)
        alarms, alarm_problems = merged_alarms(dev, path, model, dev.model)
        mine += alarm_problems
        read = [e for e in points if e.compute is None]
        checked = plugin.check_device(dev, path, read)
        mine += checked.problems
        this = ResolvedDevice(i, points, checked.plan, read_points=read, alarms=alarms)
        if key is not None and not mine:
            shared[key] = this
        problems += mine
        resolved.append(this)
    problems += check_buses(None, devices)
    problems += _check_expressions(devices, resolved)
    for model_id, model in cfg.models.items():
        ids: set[str] = set()
        for j, p in enumerate(model.points):
            if p.id in ids:
                continue  # reported by merge_points for devices using it; report once here
            ids.add(p.id)
            if p.unit is not None and p.unit not in UNECE_REC20:
                problems.append((("models", model_id, "points", j, "unit"), _unit_message(p.unit)))
    # unit problems of model points are reported once per model, not per device
    problems = _dedupe(problems)
    known: dict[str, set[str] | None] = {d.id: None for _, d in devices}  # None: not checkable
    by_index = dict(devices)  # r.index is the device's place in the file, not in `devices`
    known.update({by_index[r.index].id: {e.id for e in r.points} for r in resolved})
    problems += check_rules(cfg, known)
    return resolved, problems


def _check_expressions(
    devices: list[tuple[int, Device]], resolved: list[ResolvedDevice]
) -> list[tuple[Path_, str]]:
    """Computed points and alarms, once the points of every device are known (an expression
    may name another device's point)."""
    by_index = dict(devices)
    if not any(r.alarms or len(r.read_points) != len(r.points) for r in resolved):
        return []
    checks = ExpressionChecks({by_index[r.index].id: r.points for r in resolved})
    done: set[int] = set()
    for r in resolved:
        if id(r.points) in done:  # devices sharing a model's points share its expressions
            continue
        done.add(id(r.points))
        checks.device(by_index[r.index].id, r.points, r.alarms)
    return checks.problems + checks.cycles()


def check_buses(ctx: Context | None, devices: list[tuple[int, Device]]) -> list[tuple[Path_, str]]:
    """Devices on one serial port share the bus (one line setting, distinct unit addresses)
    when their plugins say the port can be shared and they speak the same bus protocol; a device whose claim is
    not shared (a line-protocol instrument) needs its port to itself."""
    problems: list[tuple[Path_, str]] = []
    first: dict[str, tuple[int, Device, tuple[object, ...]]] = {}
    units: dict[tuple[str, object], int] = {}
    for i, dev in devices:
        claim = plugin_for(dev.protocol).bus_claim(ctx, dev) if dev.enabled else None
        if claim is None:
            continue
        path: Path_ = ("devices", i, "connection")
        if claim.port in first:
            j, other, line = first[claim.port]
            other_claim = plugin_for(other.protocol).bus_claim(ctx, other)
            if not claim.shared or (other_claim is not None and not other_claim.shared):
                problems.append(
                    (
                        (*path, "port"),
                        f"port {claim.port} is also devices[{j}]'s ('{other.id}'): a line-protocol "
                        "instrument needs its port to itself",
                    )
                )
                continue
            if other_claim is not None and other_claim.bus != claim.bus:
                problems.append(
                    (
                        (*path, "port"),
                        f"port {claim.port} is a {other_claim.bus} bus (devices[{j}], '{other.id}'): "
                        f"a {claim.bus} device cannot share it, since each protocol opens the port "
                        "itself; give it a port of its own",
                    )
                )
                continue
            for key, mine, theirs in zip(
                ("baudrate", "bytesize", "parity", "stopbits"), claim.line, line, strict=True
            ):
                if mine != theirs:
                    problems.append(
                        (
                            (*path, key),
                            f"{key} {_line_value(mine)} differs from {_line_value(theirs)} of devices[{j}] "
                            f"('{other.id}') on the same port {claim.port}: one bus has one line setting",
                        )
                    )
        else:
            first[claim.port] = (i, dev, claim.line)
        if not claim.shared:
            continue
        if (claim.port, claim.unit) in units:
            j = units[(claim.port, claim.unit)]
            problems.append(
                (
                    (*path, claim.unit_key),
                    f"{'unit id' if claim.unit_key == 'unit_id' else claim.unit_key} {claim.unit} is also "
                    f"devices[{j}]'s on the bus {claim.port}",
                )
            )
        else:
            units[(claim.port, claim.unit)] = i
    return problems


def _line_value(v: object) -> object:
    return int(v) if isinstance(v, float) and v.is_integer() else v


def _dedupe(problems: list[tuple[Path_, str]]) -> list[tuple[Path_, str]]:
    seen: set[tuple[Path_, str]] = set()
    out = []
    for p in problems:
        if p not in seen:
            seen.add(p)
            out.append(p)
    return out


# spellings people write instead of the code
_UNIT_ALIASES = {
    "DEGC": "CEL",
    "DEG_C": "CEL",
    "C": "CEL",
    "DEGF": "FAH",
    "K": "KEL",
    "W": "WTT",
    "KW": "KWT",
    "MW": "MAW",
    "V": "VLT",
    "KV": "KVT",
    "A": "AMP",
    "MA": "4K",
    "HZ": "HTZ",
    "S": "SEC",
    "MS": "C26",
    "H": "HUR",
    "KG": "KGM",
    "G": "GRM",
    "T": "TNE",
    "M": "MTR",
    "MM": "MMT",
    "CM": "CMT",
    "L": "LTR",
    "M3": "MTQ",
    "M3/H": "MQH",
    "L/MIN": "L2",
    "%": "P1",
    "PCT": "P1",
    "PERCENT": "P1",
    "PA": "PAL",
    "R/MIN": "RPM",
    "N": "NEW",
    "NM": "NU",
    "PPM": "59",
}


def _unit_message(unit: str) -> str:
    alias = _UNIT_ALIASES.get(unit.upper())
    if alias:
        return f"unknown unit code '{unit}'; the UNECE Rec 20 code is '{alias}' ({UNECE_REC20[alias][0]})"
    hint = difflib.get_close_matches(unit.upper(), list(UNECE_REC20), n=3, cutoff=0.5)
    if unit.upper() in UNECE_REC20:
        return f"unknown unit code '{unit}'; UNECE codes are upper case: '{unit.upper()}'"
    for code, (symbol, _) in UNECE_REC20.items():
        if symbol == unit:
            return f"'{unit}' is a symbol; write its UNECE Rec 20 code '{code}'"
    more = f"; did you mean {', '.join(repr(h) for h in hint)}?" if hint else ""
    return f"unknown UNECE Rec 20 unit code '{unit}'{more}"


def _check_point(e: DictionaryEntry) -> list[tuple[Path_, str]]:
    out: list[tuple[Path_, str]] = []
    if e.unit is not None and e.unit not in UNECE_REC20 and e.where("unit")[0] != "models":
        out.append((e.where("unit"), _unit_message(e.unit)))
    if e.type == "string":
        if e.range is not None:
            out.append((e.where("range"), "a string point has no range"))
        if e.scale != 1.0 or e.offset != 0.0:
            out.append((e.where("scale"), "a string point cannot be scaled"))
    if e.type == "bool" and (e.scale != 1.0 or e.offset != 0.0):
        out.append((e.where("scale"), "a bool point cannot be scaled"))
    if e.deadband is not None and e.type in ("string", "bool"):
        out.append((e.where("deadband"), f"a deadband applies to numbers, not to {e.type}"))
    return out
