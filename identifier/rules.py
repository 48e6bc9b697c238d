"""Identifier rules: when to register or resolve, and what to send.

A `trigger` rule fires when its point takes a new non-empty good value: the handle and every
value are formatted from `{value}` (the new value), `{prefix}` (the node's prefix), `{ts}` (the
sample time, ISO 8601 UTC) and `{device.point}` (the latest engineering value of any point).
The firing and the value it fired on are committed to the durable queue together, so a restart
neither loses a firing nor fires twice for the same value. A `resolve` rule resolves each new
value of its point and publishes the record; when the gateway has queued a registration of
that handle, the resolution waits for it first (up to `registrar.RESOLVE_WAIT`).
"""

from __future__ import annotations

import datetime as dt
import difflib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgegw.gateway.normalise import Reading

from .settings import IdentifierRule
from .syntax import IdentifierError, parse
from .templates import RESERVED, Value

if TYPE_CHECKING:
    from edgegw.gateway.config.schema import GatewayConfig

STREAM = "identifier"
_FIELD = re.compile(r"\{([^{}]*)\}")
_BUILTIN = ("value", "prefix", "ts")


def iso(ts_ms: int) -> str:
    return (
        dt.datetime.fromtimestamp(ts_ms / 1000, dt.UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def engineering(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(round(v, 6)).removesuffix(".0") if v.is_integer() else repr(round(v, 6))
    return str(v)


def fields(text: str) -> list[str]:
    return _FIELD.findall(text)


def check_rules(cfg: GatewayConfig, points: dict[str, set[str] | None]) -> list[tuple[tuple[Any, ...], str]]:
    """Config-time checks of the identifier rules. `points`: device id -> its point ids (None for a
    device whose own errors are reported elsewhere)."""
    ident = cfg.identifier
    if ident is None:
        return []
    problems: list[tuple[tuple[Any, ...], str]] = []
    names: dict[str, int] = {}
    for i, rule in enumerate(ident.rules):
        path: tuple[Any, ...] = ("identifier", "rules", i)
        if rule.name in names:
            problems.append(
                ((*path, "name"), f"duplicate rule name '{rule.name}' (also rules[{names[rule.name]}])")
            )
        names.setdefault(rule.name, i)
        ref = rule.trigger or rule.resolve
        key = "trigger" if rule.trigger else "resolve"
        if ref is not None:
            problems += _point_problems(ref.device, ref.point, points, (*path, key))
        problems += _format_problems(rule.handle, points, (*path, "handle"))
        try:
            parse(_render(rule.handle, "SN-1", ident.node.prefix, 0, lambda d, p: "0"))
        except IdentifierError as exc:
            problems.append(((*path, "handle"), f"'{rule.handle}' does not make a valid identifier: {exc}"))
        if rule.trigger is None:
            continue
        if ident.node.kind == "snms" and rule.template is None:
            problems.append(
                ((*path, "template"), "an snms node needs the template (templateVersion) to register with")
            )
        if ident.node.kind == "idhub" and rule.template is None:
            problems.append(
                ((*path, "template"), "an idhub node needs the metadata template's handle to register with")
            )
        elif ident.node.kind == "idhub" and rule.template is not None:
            try:
                parse(rule.template)
            except IdentifierError as exc:
                problems.append(
                    ((*path, "template"), f"'{rule.template}' is not a metadata template handle: {exc}")
                )
        seen: dict[int, int] = {}
        for j, v in enumerate(rule.values):
            vpath = (*path, "values", j)
            if v.index in RESERVED:
                problems.append(
                    ((*vpath, "index"), f"index {v.index} is reserved (1000-1999); use 2000 and above")
                )
            if v.index in seen:
                problems.append(
                    ((*vpath, "index"), f"index {v.index} is used twice (also values[{seen[v.index]}])")
                )
            seen.setdefault(v.index, j)
            problems += _format_problems(v.value, points, (*vpath, "value"))
    return problems


def check_node_files(cfg: GatewayConfig, folder: Path) -> list[tuple[tuple[Any, ...], str]]:
    """The idhub private key file: readable, and a PKCS#8 PEM private key (relative paths from
    the config's folder). Its content is never part of a message."""
    ident = cfg.identifier
    if ident is None or ident.node.kind != "idhub" or ident.node.private_key is None:
        return []
    path = ("identifier", "node", "private_key")
    name = ident.node.private_key
    file = Path(name) if Path(name).is_absolute() else folder / name
    try:
        pem = file.read_bytes()[: 1 << 20]
    except OSError as exc:
        return [(path, f"cannot read {name}: {exc.strerror or exc}")]
    if b"-----BEGIN PRIVATE KEY-----" in pem:
        return []
    if b"-----BEGIN RSA PRIVATE KEY-----" in pem:
        hint = "it is PKCS#1; convert it: openssl pkcs8 -topk8 -nocrypt -in OLD.pem -out NEW.pem"
    elif b"-----BEGIN ENCRYPTED PRIVATE KEY-----" in pem:
        hint = "it is encrypted; give the unencrypted key (keep the file readable by the gateway only)"
    else:
        hint = "no -----BEGIN PRIVATE KEY----- block"
    return [(path, f"{name} is not a PKCS#8 PEM private key: {hint}")]


def _point_problems(
    device: str, point: str, points: dict[str, set[str] | None], path: tuple[Any, ...]
) -> list[tuple[tuple[Any, ...], str]]:
    if device not in points:
        hint = difflib.get_close_matches(device, list(points), n=1)
        return [(path, f"unknown device '{device}'" + (f"; did you mean '{hint[0]}'?" if hint else ""))]
    ids = points[device]
    if ids is not None and point not in ids:
        hint = difflib.get_close_matches(point, sorted(ids), n=1)
        return [
            (
                path,
                f"device '{device}' has no point '{point}'"
                + (f"; did you mean '{hint[0]}'?" if hint else ""),
            )
        ]
    return []


def _format_problems(
    text: str, points: dict[str, set[str] | None], path: tuple[Any, ...]
) -> list[tuple[tuple[Any, ...], str]]:
    out = []
    for name in fields(text):
        if name in _BUILTIN:
            continue
        device, dot, point = name.rpartition(".")
        if not dot or not device:
            out.append(
                (path, f"'{{{name}}}' is not a field: use {{value}}, {{prefix}}, {{ts}} or {{device.point}}")
            )
            continue
        out += [(p, f"{{{name}}}: {m}") for p, m in _point_problems(device, point, points, path)]
    return out


def _render(text: str, value: str, prefix: str, ts_ms: int, lookup: Callable[[str, str], str]) -> str:
    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        if name == "value":
            return value
        if name == "prefix":
            return prefix
        if name == "ts":
            return iso(ts_ms)
        device, _, point = name.rpartition(".")
        return lookup(device, point)

    return _FIELD.sub(sub, text)


@dataclass(slots=True)
class Firing:
    rule: str
    handle: str
    template: str | None
    values: list[Value]
    on_exists: str
    ts: int

    def body(self) -> bytes:
        return json.dumps(
            {
                "rule": self.rule,
                "handle": self.handle,
                "template": self.template,
                "values": [[v.index, v.type, v.value] for v in self.values],
                "on_exists": self.on_exists,
                "ts": self.ts,
            },
            separators=(",", ":"),
            ensure_ascii=False,
        ).encode()

    @classmethod
    def from_body(cls, body: bytes) -> Firing:
        d = json.loads(body)
        return cls(
            d["rule"],
            d["handle"],
            d.get("template"),
            [Value(int(i), t, v) for i, t, v in d["values"]],
            d["on_exists"],
            d["ts"],
        )


class RuleSet:
    """The rules of a config, indexed by the point that drives them."""

    def __init__(self, rules: Sequence[IdentifierRule], prefix: str):
        self.prefix = prefix
        self.triggers: dict[tuple[str, str], list[IdentifierRule]] = {}
        self.resolves: dict[tuple[str, str], list[IdentifierRule]] = {}
        self.by_name = {r.name: r for r in rules}
        for r in rules:
            if r.trigger is not None:
                self.triggers.setdefault((r.trigger.device, r.trigger.point), []).append(r)
            elif r.resolve is not None:
                self.resolves.setdefault((r.resolve.device, r.resolve.point), []).append(r)
        self.devices = {d for d, _ in self.triggers} | {d for d, _ in self.resolves}

    def handle_for(
        self, rule: IdentifierRule, value: str, ts_ms: int, lookup: Callable[[str, str], str]
    ) -> str:
        return _render(rule.handle, value, self.prefix, ts_ms, lookup)

    def firing(
        self, rule: IdentifierRule, value: str, ts_ms: int, lookup: Callable[[str, str], str]
    ) -> Firing:
        """Format a trigger rule's handle and values; raises IdentifierError for a bad handle."""
        handle = str(parse(self.handle_for(rule, value, ts_ms, lookup)))
        values = [
            Value(v.index, v.type, _render(v.value, value, self.prefix, ts_ms, lookup)) for v in rule.values
        ]
        return Firing(rule.name, handle, rule.template, values, rule.on_exists, ts_ms)


def new_value(reading: Reading | None) -> str | None:
    """The value a rule may fire on: good and not empty."""
    if reading is None or reading.q != "good" or reading.v is None:
        return None
    text = engineering(reading.v).strip()
    return text or None
