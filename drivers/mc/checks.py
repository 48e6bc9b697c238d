"""Config checks of MC devices: addresses parsed for the PLC family, types fit devices, strings
sized, no overlaps, writes only where they are safe, and the read plan made."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from edgegw.drivers.plugin import Path_, Problem

from .address import AddressError, McAddress, parse_address, type_problem
from .codec import MAX_BATCH_WORDS, McPoint
from .planner import PlanError, ReadRange, ReadRequest, Span, plan_reads

if TYPE_CHECKING:
    from edgegw.gateway.dictionary import DictionaryEntry

    from .config import McDevice

MAX_STRING = 2 * MAX_BATCH_WORDS


@dataclass(slots=True)
class McPlan:
    """A device's points as MELSEC memory (in the dictionary's order), the ranges that cover
    them and the requests that read those ranges."""

    points: list[McPoint]
    ranges: list[ReadRange]
    requests: list[ReadRequest]
    iqr: bool


def span_of(p: McPoint) -> Span:
    if p.kind.bit:
        return Span(p.device, True, p.number, 1)
    return Span(p.device, False, p.number, p.words)


def check_mc(
    dev: McDevice, device_path: Path_, points: list[DictionaryEntry]
) -> tuple[list[Problem], McPlan]:
    problems: list[Problem] = []
    c = dev.connection
    iqr = c.iqr()
    parsed: dict[str, McAddress] = {}
    for e in points:
        if e.address is None:
            problems.append((e.path, f"point '{e.id}' has no MC address (mc: {{address: D100}})"))
            continue
        where = (*e.where("address"), "address")
        text = e.address.address  # type: ignore[attr-defined]
        if isinstance(text, int):
            problems.append((where, f"an MC address is text such as D{text} or M{text}, not a number"))
            continue
        try:
            addr = parse_address(text, c.plc, iqr)
        except AddressError as exc:
            problems.append((where, str(exc)))
            continue
        if addr.device == "ZR" and c.plc == "iQ-F":
            problems.append((where, f"'{text}': iQ-F CPUs have no ZR; their file registers are R"))
            continue
        why = type_problem(addr, e.type, e.access)
        if why is not None:
            problems.append((where, why))
            continue
        if e.type == "string":
            if e.length is None:
                problems.append(
                    (e.where("type"), "an MC string point needs length: (characters, 2 per word)")
                )
                continue
            if e.length > MAX_STRING:
                problems.append(
                    (
                        e.where("length"),
                        f"an MC string is read in one request: at most {MAX_STRING} characters",
                    )
                )
                continue
        if e.access == "rw" and addr.device in ("SM", "SD"):
            problems.append(
                (
                    e.where("access"),
                    f"point '{e.id}' is rw but {addr} is a special {'relay' if addr.device == 'SM' else 'register'}: the CPU owns it; make it ro",
                )
            )
        if e.access == "rw" and addr.device == "X":
            problems.append(
                (
                    e.where("access"),
                    f"point '{e.id}' is rw but {addr} is an input: the CPU refreshes inputs from its I/O (write Y, M, L, B or a register)",
                )
            )
        parsed[e.id] = addr
    mcpoints = [
        McPoint(
            e.id,
            a.device,
            a.number,
            e.type,
            a.bit,
            e.length if e.type == "string" else None,
            e.byte_order or dev.byte_order,
        )
        for e in points
        if (a := parsed.get(e.id)) is not None
    ]
    by_id = {e.id: e for e in points}
    problems += _overlaps(mcpoints, by_id, c.plc)
    ranges: list[ReadRange] = []
    requests: list[ReadRequest] = []
    try:
        ranges, requests = plan_reads(
            [span_of(p) for p in mcpoints], dev.planner.max_gap, iqr, random=dev.planner.random_reads
        )
    except PlanError as exc:
        problems.append(((*device_path, "points"), str(exc)))
    return problems, McPlan(mcpoints, ranges, requests, iqr)


def _overlaps(points: list[McPoint], by_id: dict[str, DictionaryEntry], plc: str) -> list[Problem]:
    problems: list[Problem] = []
    spans = sorted(points, key=lambda q: (q.device, q.number, q.number + q.words))
    active: list[McPoint] = []
    for q in spans:
        active = [o for o in active if o.device == q.device and o.number + o.words > q.number]
        for o in active:
            if q.kind.bit or (q.bit is not None and o.bit is not None):
                if q.bit == o.bit:
                    problems.append(
                        (
                            _where(by_id[q.id]),
                            f"'{q.id}' and '{o.id}' are the same {'bit' if q.bit is not None else 'device'} {_name(q, plc)}",
                        )
                    )
                continue
            if q.bit is not None or o.bit is not None:
                continue  # a word read whole and as bits: status words, legitimately
            problems.append(
                (
                    _where(by_id[q.id]),
                    f"'{q.id}' at {_name(q, plc)} ({q.type}, {_words(q.words)}) overlaps '{o.id}' at {_name(o, plc)} ({o.type}, {_words(o.words)})",
                )
            )
        active.append(q)
    return problems


def _name(q: McPoint, plc: str) -> str:
    return str(McAddress(q.device, q.number, q.bit, plc))


def _where(e: DictionaryEntry) -> Path_:
    return (*e.where("address"), "address")


def _words(n: int) -> str:
    return f"{n} word" if n == 1 else f"{n} words"
