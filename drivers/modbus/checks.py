"""Config checks of Modbus devices: addresses parsed, types fit their area, no overlaps, and
a read plan that fits the planner's limits."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from edgegw.drivers.plugin import Path_, Problem

from .address import AREA_NAMES, BIT_AREAS, READ_ONLY_AREAS, AddressError, ModbusAddress, parse_address
from .codec import BlockDecoder, RegisterPoint
from .planner import PlanError, ReadRequest, RegisterSpan, plan_reads

if TYPE_CHECKING:
    from edgegw.gateway.dictionary import DictionaryEntry

    from .config import ModbusRtuDevice, ModbusTcpDevice


@dataclass(slots=True)
class ModbusPlan:
    """A device's points as registers (in the dictionary's order) and the requests that read
    them: planned once, at check time, and used by validate, the driver and the simulator."""

    registers: list[RegisterPoint]
    requests: list[ReadRequest]
    # made for the first driver, shared by the rest; not part of what the plan is (a reload
    # compares plans to see which devices changed)
    decoders: list[BlockDecoder] | None = field(default=None, compare=False)


def check_modbus(
    dev: ModbusTcpDevice | ModbusRtuDevice, device_path: Path_, points: list[DictionaryEntry]
) -> tuple[list[Problem], ModbusPlan]:
    problems: list[Problem] = []
    addresses: dict[str, ModbusAddress] = {}
    for e in points:
        if e.address is None:
            problems.append((e.path, f"point '{e.id}' has no modbus address (modbus: {{address: hr:N}})"))
            continue
        where = (*e.where("address"), "address")
        try:
            addr = parse_address(e.address.address)  # type: ignore[attr-defined]
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
        if e.type in ("int8", "uint8"):
            problems.append(
                (
                    e.where("type"),
                    f"a Modbus register holds 16 bits: use {e.type[:-1]}16 (or a register bit), not {e.type}",
                )
            )
            continue
        if e.type == "string" and e.length is not None and e.length > 123:
            problems.append(
                (e.where("length"), "a Modbus string is at most 123 registers (one read request)")
            )
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
    registers = [
        RegisterPoint(
            id=e.id,
            area=a.area,
            offset=a.offset,
            type=e.type,
            bit=a.bit,
            length=e.length,
            byte_order=e.byte_order or dev.byte_order,
        )
        for e in points
        if (a := addresses.get(e.id)) is not None
    ]
    by_id = {e.id: e for e in points}
    problems += _overlaps([(r, by_id[r.id]) for r in registers])
    requests: list[ReadRequest] = []
    p = dev.planner
    try:
        requests = plan_reads(
            [RegisterSpan(r.area, r.offset, r.width) for r in registers],
            p.max_registers,
            p.max_bits,
            p.max_gap,
        )
    except PlanError as exc:
        problems.append(((*device_path, "planner", "max_registers"), str(exc)))
    return problems, ModbusPlan(registers, requests)


def _overlaps(points: list[tuple[RegisterPoint, DictionaryEntry]]) -> list[Problem]:
    problems: list[Problem] = []
    spans = sorted(
        ((r.area, r.offset, r.offset + r.width, r, e) for r, e in points), key=lambda s: (s[0], s[1], s[2])
    )
    active: list[tuple[str, int, int, RegisterPoint, DictionaryEntry]] = []
    for span in spans:
        area, start, end, a, e = span
        active = [s for s in active if s[0] == area and s[2] > start]
        for _, ostart, oend, oa, oe in active:
            if a.bit is not None and oa.bit is not None:
                if a.bit == oa.bit:
                    problems.append((_addr_path(e), f"'{e.id}' and '{oe.id}' are the same bit {_name(a)}"))
                continue
            # a register read whole and as bits is a common, legitimate pattern (status words)
            if (a.bit is not None or oa.bit is not None) and oend - ostart == 1 and end - start == 1:
                continue
            problems.append(
                (
                    _addr_path(e),
                    f"'{e.id}' at {_name(a)} ({e.type}, {end - start} register(s)) overlaps '{oe.id}' "
                    f"at {_name(oa)} ({oe.type}, {oend - ostart} register(s))",
                )
            )
        active.append(span)
    return problems


def _name(r: RegisterPoint) -> str:
    return str(ModbusAddress(r.area, r.offset, r.bit))


def _addr_path(e: DictionaryEntry) -> Path_:
    return (*e.where("address"), "address")


def _a(noun: str) -> str:
    return ("an " if noun[0] in "aeiou" else "a ") + noun
