"""Config checks of S7 devices: addresses parsed, widths fit types, strings sized, no overlaps,
writes only where a client may write, and the read plan made for the PDU asked for."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from edgegw.drivers.plugin import Path_, Problem

from .address import AREA_NAMES, AddressError, S7Address, parse_address, type_problem
from .codec import READ_ONLY_FORMATS, RangeDecoder, S7Point
from .planner import PlanError, ReadRange, ReadRequest, Span, plan_reads

if TYPE_CHECKING:
    from edgegw.gateway.dictionary import DictionaryEntry

    from .config import S7Device

MAX_LENGTH = {"STRING": 254, "WSTRING": 16382, "CHAR": 65535}


@dataclass(slots=True)
class S7Plan:
    """A device's points as S7 memory (in the dictionary's order), the ranges that cover them
    and the requests that read those ranges at the PDU size asked for. The driver plans again
    when the CPU grants a smaller PDU."""

    points: list[S7Point]
    ranges: list[ReadRange]
    requests: list[ReadRequest]
    pdu: int
    max_gap: int
    max_items: int
    # made for the first driver, shared by the rest; not part of what the plan is
    decoders: list[RangeDecoder] | None = field(default=None, compare=False)


def check_s7(
    dev: S7Device, device_path: Path_, points: list[DictionaryEntry]
) -> tuple[list[Problem], S7Plan]:
    problems: list[Problem] = []
    parsed: dict[str, tuple[S7Address, str | None]] = {}
    for e in points:
        if e.address is None:
            problems.append((e.path, f"point '{e.id}' has no S7 address (s7: {{address: DB1.DBW0}})"))
            continue
        where = (*e.where("address"), "address")
        text = e.address.address  # type: ignore[attr-defined]
        fmt: str | None = e.address.format  # type: ignore[attr-defined]
        if isinstance(text, int):
            problems.append((where, f"an S7 address is text such as DB1.DBW{text} or MW{text}, not a number"))
            continue
        try:
            addr = parse_address(text)
        except AddressError as exc:
            problems.append((where, str(exc)))
            continue
        why = type_problem(addr, e.type, fmt)
        if why is not None:
            problems.append((where, why))
            continue
        if fmt is not None and e.type != "string":
            problems.append(
                ((*e.where("address"), "format"), f"format {fmt} is for string points, not {e.type}")
            )
            continue
        if e.type == "string":
            fmt = fmt or "STRING"
            if fmt in MAX_LENGTH:
                if e.length is None:
                    n = "STRING[n]: length is n" if fmt == "STRING" else f"{fmt}: length is its characters"
                    problems.append((e.where("type"), f"an S7 {fmt} point needs length: ({n})"))
                    continue
                if e.length > MAX_LENGTH[fmt]:
                    problems.append(
                        (e.where("length"), f"an S7 {fmt} holds at most {MAX_LENGTH[fmt]} characters")
                    )
                    continue
            if e.access == "rw" and fmt in READ_ONLY_FORMATS:
                problems.append((e.where("access"), f"{fmt} points are read-only here; make '{e.id}' ro"))
        if e.access == "rw" and addr.area == "I":
            problems.append(
                (
                    e.where("access"),
                    f"point '{e.id}' is rw but {addr} is an input: the CPU overwrites inputs from its I/O "
                    "every cycle (write a Q output, an M marker or a DB)",
                )
            )
        parsed[e.id] = (addr, fmt)
    s7points = [
        S7Point(e.id, a.region[0], a.db, a.byte, e.type, a.bit, f, e.length if e.type == "string" else None)
        for e in points
        if (pf := parsed.get(e.id)) is not None
        for a, f in [pf]
    ]
    by_id = {e.id: e for e in points}
    problems += _overlaps(s7points, by_id)
    c, p = dev.connection, dev.planner
    ranges: list[ReadRange] = []
    requests: list[ReadRequest] = []
    try:
        ranges, requests = plan_reads(
            [Span(q.area, q.db, q.byte, q.size) for q in s7points], c.pdu_size, p.max_gap, p.max_items
        )
    except PlanError as exc:
        problems.append(((*device_path, "connection", "pdu_size"), str(exc)))
    return problems, S7Plan(s7points, ranges, requests, c.pdu_size, p.max_gap, p.max_items)


def _overlaps(points: list[S7Point], by_id: dict[str, DictionaryEntry]) -> list[Problem]:
    problems: list[Problem] = []
    spans = sorted(points, key=lambda q: (q.area, q.db, q.byte, q.byte + q.size))
    active: list[S7Point] = []
    for q in spans:
        active = [o for o in active if o.area == q.area and o.db == q.db and o.byte + o.size > q.byte]
        for o in active:
            if q.bit is not None and o.bit is not None:
                if q.bit == o.bit:
                    problems.append(
                        (_where(by_id[q.id]), f"'{q.id}' and '{o.id}' are the same bit {_name(q)}")
                    )
                continue
            if q.bit is not None or o.bit is not None:
                continue  # a byte or word read whole and as bits: status words, legitimately
            problems.append(
                (
                    _where(by_id[q.id]),
                    f"'{q.id}' at {_name(q)} ({q.type}, {q.size} bytes) overlaps '{o.id}' at {_name(o)} "
                    f"({o.type}, {o.size} bytes)",
                )
            )
        active.append(q)
    return problems


def _name(q: S7Point) -> str:
    area = {0x81: "I", 0x82: "Q", 0x83: "M", 0x84: "DB"}[q.area]
    if q.bit is not None:
        return str(S7Address(area, q.db, q.byte, "X", q.bit))
    return str(S7Address(area, q.db, q.byte, "B"))


def _where(e: DictionaryEntry) -> Path_:
    return (*e.where("address"), "address")


__all__ = ["AREA_NAMES", "S7Plan", "check_s7"]
