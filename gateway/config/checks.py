"""Checks that span keys: ids, model references, units, Modbus addresses and their overlaps.

Each check adds to one list of problems so that `edgegw validate` reports every error at once.
"""

from __future__ import annotations

import codecs
import difflib
import re
from dataclasses import dataclass

from edgegw.drivers.modbus.address import (
    AREA_NAMES,
    BIT_AREAS,
    READ_ONLY_AREAS,
    AddressError,
    ModbusAddress,
    parse_address,
    width_of,
)
from edgegw.drivers.modbus.planner import PlanError, RegisterSpan, plan_reads
from edgegw.drivers.opcua.nodes import NodeSyntaxError, parse_node
from edgegw.drivers.serial.port import unescape

from ..dictionary import DictionaryEntry, merge_points
from .schema import Device, GatewayConfig, ModbusRtuDevice, ModbusTcpDevice, OpcuaDevice, SerialDevice
from .source import Path_, short
from .units import UNECE_REC20

# Protocols and sections this build can run. Others validate by shape but are refused, so a
# config never silently runs with part of it ignored.
SUPPORTED_PROTOCOLS = {"modbus-tcp", "modbus-rtu", "serial", "opcua"}


@dataclass(slots=True)
class ResolvedDevice:
    index: int
    points: list[DictionaryEntry]
    addresses: dict[str, ModbusAddress]


def check(
    cfg: GatewayConfig, devices: list[tuple[int, Device]], bad_models: set[str]
) -> tuple[list[ResolvedDevice], list[tuple[Path_, str]]]:
    """Cross-key checks over the devices (with their indexes in the file) that passed the
    schema. `bad_models` failed the schema: references to them are not reported again."""
    problems: list[tuple[Path_, str]] = []
    resolved: list[ResolvedDevice] = []
    seen: dict[str, int] = {}
    shared: dict[tuple[object, ...], tuple[list[DictionaryEntry], dict[str, ModbusAddress]]] = {}
    for i, dev in devices:
        path: Path_ = ("devices", i)
        if dev.id in seen:
            problems.append(((*path, "id"), f"duplicate device id '{dev.id}' (also devices[{seen[dev.id]}])"))
        else:
            seen[dev.id] = i
        if dev.protocol not in SUPPORTED_PROTOCOLS:
            problems.append(
                (
                    (*path, "protocol"),
                    f"protocol '{dev.protocol}' is not available in this version of edgegw "
                    f"(available: {', '.join(sorted(SUPPORTED_PROTOCOLS))})",
                )
            )
        model = None
        if dev.model is not None:
            model = cfg.models.get(dev.model)
            if model is None and dev.model not in bad_models:
                hint = difflib.get_close_matches(dev.model, list(cfg.models), n=1)
                known = (
                    f"did you mean '{hint[0]}'?"
                    if hint
                    else (
                        f"known models: {', '.join(sorted(cfg.models))}"
                        if cfg.models
                        else "no models are defined"
                    )
                )
                problems.append(((*path, "model"), f"unknown model '{dev.model}'; {known}"))
        # devices that take a model as it is share its merged, checked points (a plant has
        # hundreds of the same machine: this keeps validation and memory per model, not per device)
        key = _shared_key(dev, model)
        if key is not None and key in shared:
            points, addresses = shared[key]
            resolved.append(ResolvedDevice(i, points, addresses))
            continue
        entries, merge_problems = merge_points(dev, path, model, dev.model)
        mine: list[tuple[Path_, str]] = list(merge_problems)
        points = [e for e in entries if e is not None]
        if not points and not merge_problems and (dev.model is None or model is not None):
            mine.append(((*path, "points"), "the device has no points (give a model or points)"))
        addresses: dict[str, ModbusAddress] = {}
        for e in points:
            mine += _check_point(e)
        if isinstance(dev, ModbusTcpDevice | ModbusRtuDevice):
            addresses = _check_modbus(dev, path, points, mine)
        elif isinstance(dev, SerialDevice):
            mine += _check_serial_line(dev, path, points)
        elif isinstance(dev, OpcuaDevice):
            mine += _check_opcua(dev, path, points)
        if key is not None and not mine:
            shared[key] = (points, addresses)
        problems += mine
        resolved.append(ResolvedDevice(i, points, addresses))
    problems += _check_serial_buses(devices)
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
    from edgegw.identifier.rules import check_rules

    known: dict[str, set[str] | None] = {d.id: None for _, d in devices}  # None: not checkable
    by_index = dict(devices)  # r.index is the device's place in the file, not in `devices`
    known.update({by_index[r.index].id: {e.id for e in r.points} for r in resolved})
    problems += check_rules(cfg, known)
    return resolved, problems


def _shared_key(dev: Device, model: object) -> tuple[object, ...] | None:
    """What a model-only Modbus device's checked points depend on (the model and the read
    planner); None for a device with points of its own or of another protocol, whose checks
    also look at its connection."""
    if model is None or dev.points or not isinstance(dev, ModbusTcpDevice | ModbusRtuDevice):
        return None
    p = dev.planner
    return (dev.model, p.max_registers, p.max_bits, p.max_gap)


def _check_serial_buses(devices: list[tuple[int, Device]]) -> list[tuple[Path_, str]]:
    """Modbus RTU devices on one port share the bus: one line setting, distinct unit ids. A
    line-protocol instrument has its port to itself."""
    problems: list[tuple[Path_, str]] = []
    first: dict[str, tuple[int, ModbusRtuDevice]] = {}
    units: dict[tuple[str, int], int] = {}
    owner: dict[str, tuple[int, Device]] = {}
    for i, dev in devices:
        if not isinstance(dev, ModbusRtuDevice | SerialDevice) or not dev.enabled:
            continue
        c = dev.connection
        path: Path_ = ("devices", i, "connection")
        if c.port in owner:
            j, other = owner[c.port]
            if isinstance(dev, SerialDevice) or isinstance(other, SerialDevice):
                problems.append(
                    (
                        (*path, "port"),
                        f"port {c.port} is also devices[{j}]'s ('{other.id}'): a line-protocol "
                        "instrument needs its port to itself",
                    )
                )
                continue
        else:
            owner[c.port] = (i, dev)
        if not isinstance(dev, ModbusRtuDevice):
            continue
        if c.port in first:
            j, other = first[c.port]
            for key in ("baudrate", "bytesize", "parity", "stopbits"):
                if getattr(c, key) != getattr(other.connection, key):
                    problems.append(
                        (
                            (*path, key),
                            f"{key} {getattr(c, key)} differs from {getattr(other.connection, key)} of "
                            f"devices[{j}] ('{other.id}') on the same port {c.port}: one bus has one line setting",
                        )
                    )
        else:
            first[c.port] = (i, dev)
        if (c.port, c.unit_id) in units:
            j = units[(c.port, c.unit_id)]
            problems.append(
                ((*path, "unit_id"), f"unit id {c.unit_id} is also devices[{j}]'s on the bus {c.port}")
            )
        else:
            units[(c.port, c.unit_id)] = i
    return problems


def _check_serial_line(
    dev: SerialDevice, device_path: Path_, points: list[DictionaryEntry]
) -> list[tuple[Path_, str]]:
    """Framing that can cut frames, a pattern that names every point, a request when polled."""
    out: list[tuple[Path_, str]] = []
    f = dev.framing
    fpath: Path_ = (*device_path, "framing")
    ends = [k for k in ("terminator", "length", "end") if getattr(f, k) is not None]
    if not ends:
        out.append((fpath, 'say where a frame ends: terminator (e.g. "\\r\\n"), length, or start and end'))
    elif len(ends) > 1:
        out.append(((*fpath, ends[1]), f"{' and '.join(ends)} are alternatives: give one"))
    if f.end is not None and f.start is None:
        out.append(((*fpath, "end"), "end needs start (a frame runs from start to end); or use terminator"))
    for key, text in (
        ("terminator", f.terminator),
        ("start", f.start),
        ("end", f.end),
    ):
        if text is not None:
            out += _check_bytes((*fpath, key), text)
    try:
        text_encoding = getattr(codecs.lookup(f.encoding), "_is_text_encoding", True)
    except (LookupError, ValueError):  # ValueError: a NUL in the name
        out.append(
            (
                (*fpath, "encoding"),
                f"unknown encoding {short(f.encoding)} (e.g. utf-8, ascii, latin-1, gb18030)",
            )
        )
    else:
        if not text_encoding:
            out.append(
                (
                    (*fpath, "encoding"),
                    f"'{f.encoding}' is not a text encoding (e.g. utf-8, ascii, latin-1, gb18030)",
                )
            )
    ids = [e.id for e in points]
    if f.pattern is None:
        if len(points) > 1:
            out.append(
                (
                    (*fpath, "pattern"),
                    f"{len(points)} points need a pattern with a named group for each: (?P<{ids[0]}>…)",
                )
            )
    else:
        try:
            groups = set(re.compile(f.pattern).groupindex)
        except re.error as exc:
            where = f" at position {exc.pos}" if exc.pos is not None else ""
            out.append(((*fpath, "pattern"), f"not a valid regular expression: {exc.msg}{where}"))
        except (RecursionError, OverflowError, ValueError) as exc:
            out.append(((*fpath, "pattern"), f"not a usable regular expression: {exc}"))
        else:
            for e in points:
                if e.id not in groups:
                    out.append(((*fpath, "pattern"), f"no named group (?P<{e.id}>…) for point '{e.id}'"))
            for g in sorted(groups - set(ids)):
                hint = difflib.get_close_matches(g, ids, n=1)
                more = f"; did you mean '{hint[0]}'?" if hint else f" (points: {', '.join(ids)})"
                out.append(((*fpath, "pattern"), f"named group '{g}' is not a point of the device{more}"))
    if dev.mode == "poll" and dev.request is None:
        out.append(((*device_path, "request"), 'mode: poll needs a request to send (e.g. "SI\\r\\n")'))
    if dev.mode == "stream" and dev.request is not None:
        out.append(((*device_path, "request"), "a request is sent only in mode: poll"))
    if dev.request is not None:
        out += _check_bytes((*device_path, "request"), dev.request)
    if dev.mode == "poll" and dev.idle_timeout is not None:
        out.append(
            (
                (*device_path, "idle_timeout"),
                "idle_timeout is for mode: stream (a polled instrument has connection.timeout)",
            )
        )
    for e in points:
        if e.access != "ro":
            out.append((e.where("access"), "a line-protocol instrument is read-only: access must be ro"))
    return out


def _check_opcua(
    dev: OpcuaDevice, device_path: Path_, points: list[DictionaryEntry]
) -> list[tuple[Path_, str]]:
    out: list[tuple[Path_, str]] = []
    c = dev.connection
    where = (*device_path, "connection")
    if c.security is not None and (c.security.certificate is None) != (c.security.private_key is None):
        missing = "private_key" if c.security.private_key is None else "certificate"
        out.append(
            (
                (*where, "security", missing),
                "give certificate and private_key together (or neither: the gateway's own "
                "certificate in data_dir/pki is used, made when absent)",
            )
        )
    if (c.user_certificate is None) != (c.user_private_key is None):
        missing = "user_private_key" if c.user_private_key is None else "user_certificate"
        out.append(((*where, missing), "give user_certificate and user_private_key together"))
    if c.user_certificate is not None and c.username is not None:
        out.append(
            ((*where, "user_certificate"), "one user identity: a username or a user certificate, not both")
        )
    if c.user_certificate is not None and c.security is None:
        out.append(
            (
                (*where, "user_certificate"),
                "a certificate user identity needs a secured channel: add connection.security",
            )
        )
    if c.password is not None and c.username is None:
        out.append(((*where, "password"), "a password without a username"))
    if c.username is not None and c.password is None:
        out.append(((*where, "username"), "a username without a password"))
    for e in points:
        if e.opcua is None:
            out.append((e.path, f"point '{e.id}' has no opcua: {{node: …}}"))
            continue
        try:
            parse_node(e.opcua)
        except NodeSyntaxError as exc:
            out.append(((*e.where("opcua"), "node"), str(exc)))
    return out


def _check_bytes(path: Path_, text: str) -> list[tuple[Path_, str]]:
    try:
        data = unescape(text)
    except (UnicodeError, ValueError) as exc:
        return [(path, f"cannot be sent as bytes: {exc}")]
    return [] if data else [(path, "must not be empty")]


def _dedupe(problems: list[tuple[Path_, str]]) -> list[tuple[Path_, str]]:
    seen: set[tuple[Path_, str]] = set()
    out = []
    for p in problems:
        if p not in seen:
            seen.add(p)
            out.append(p)
    return out


def _a(noun: str) -> str:
    return ("an " if noun[0] in "aeiou" else "a ") + noun


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


def _check_modbus(
    dev: ModbusTcpDevice | ModbusRtuDevice,
    device_path: Path_,
    points: list[DictionaryEntry],
    problems: list[tuple[Path_, str]],
) -> dict[str, ModbusAddress]:
    addresses: dict[str, ModbusAddress] = {}
    for e in points:
        if e.modbus is None:
            problems.append((e.path, f"point '{e.id}' has no modbus address (modbus: {{address: hr:N}})"))
            continue
        where = (*e.where("modbus"), "address")
        try:
            addr = parse_address(e.modbus)
        except AddressError as exc:
            problems.append((where, str(exc)))
            continue
        if addr.area in BIT_AREAS and e.type != "bool":
            problems.append(
                (where, f"a {AREA_NAMES[addr.area]} holds one bit: the type must be bool, not {e.type}")
            )
            continue
        if addr.bit is not None and e.type != "bool":
            problems.append((where, f"a register bit is a bool, not {e.type}"))
            continue
        if e.type == "string" and e.length is None:
            problems.append((e.where("type"), "a string point needs length: (registers, 2 characters each)"))
            continue
        if e.access == "rw" and addr.area in READ_ONLY_AREAS:
            problems.append(
                (
                    e.where("access"),
                    f"point '{e.id}' is rw but {addr} is {_a(AREA_NAMES[addr.area])}, which is read-only",
                )
            )
        addresses[e.id] = addr
    _check_overlaps(points, addresses, problems)
    spans = [
        RegisterSpan(
            a.area, a.offset, 1 if (a.area in BIT_AREAS or a.bit is not None) else width_of(e.type, e.length)
        )
        for e in points
        if (a := addresses.get(e.id)) is not None
    ]
    try:
        plan_reads(spans, dev.planner.max_registers, dev.planner.max_bits, dev.planner.max_gap)
    except PlanError as exc:
        problems.append(((*device_path, "planner", "max_registers"), str(exc)))
    return addresses


def _check_overlaps(
    points: list[DictionaryEntry], addresses: dict[str, ModbusAddress], problems: list[tuple[Path_, str]]
) -> None:
    spans = []
    for e in points:
        a = addresses.get(e.id)
        if a is None:
            continue
        width = 1 if a.area in BIT_AREAS else width_of(e.type, e.length)
        spans.append((a.area, a.offset, a.offset + (1 if a.bit is not None else width), a, e))
    spans.sort(key=lambda s: (s[0], s[1], s[2]))
    active: list[tuple[str, int, int, ModbusAddress, DictionaryEntry]] = []
    for span in spans:
        area, start, end, a, e = span
        active = [s for s in active if s[0] == area and s[2] > start]
        for _, ostart, oend, oa, oe in active:
            if a.bit is not None and oa.bit is not None:
                if a.bit == oa.bit:
                    problems.append((_addr_path(e), f"'{e.id}' and '{oe.id}' are the same bit {a}"))
                continue
            # a register read whole and as bits is a common, legitimate pattern (status words)
            if (a.bit is not None or oa.bit is not None) and oend - ostart == 1 and end - start == 1:
                continue
            problems.append(
                (
                    _addr_path(e),
                    f"'{e.id}' at {a} ({e.type}, {end - start} register(s)) overlaps '{oe.id}' "
                    f"at {oa} ({oe.type}, {oend - ostart} register(s))",
                )
            )
        active.append(span)


def _addr_path(e: DictionaryEntry) -> Path_:
    return (*e.where("modbus"), "address")
