"""Config checks of DL/T 645 devices: the meter address, each point's data identifier and
format, the type the format gives, and read-only access. The plan is one read per point."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from edgegw.drivers.plugin import Path_, Problem

from .codec import Format, address_problem, di_problem, known, parse_format

if TYPE_CHECKING:
    from edgegw.gateway.dictionary import DictionaryEntry

    from .config import Dlt645Device

NUMBER_TYPES = ("float64", "float32")
INT_TYPES = ("int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64")


@dataclass(frozen=True, slots=True)
class MeterPoint:
    id: str
    di: int
    format: Format
    type: str

    @property
    def di_text(self) -> str:
        return f"{self.di:08X}"


@dataclass(slots=True)
class Dlt645Plan:
    """The device's points as reads, in the dictionary's order (one request each)."""

    points: list[MeterPoint]


def check_dlt645(
    dev: Dlt645Device, device_path: Path_, points: list[DictionaryEntry]
) -> tuple[list[Problem], Dlt645Plan]:
    problems: list[Problem] = []
    why = address_problem(dev.connection.address)
    if why is not None:
        problems.append(((*device_path, "connection", "address"), why))
    planned: list[MeterPoint] = []
    for e in points:
        if e.address is None:
            problems.append((e.path, f"point '{e.id}' has no data identifier (dlt645: {{di: \"02010100\"}})"))
            continue
        where = e.where("address")
        di_text: str = e.address.di  # type: ignore[attr-defined]
        fmt_text: str | None = e.address.format  # type: ignore[attr-defined]
        signed: bool | None = e.address.signed  # type: ignore[attr-defined]
        if e.access == "rw":
            problems.append(
                (
                    e.where("access"),
                    f"DL/T 645 points are read-only (the driver sends reads only): make '{e.id}' ro",
                )
            )
        why = di_problem(di_text)
        if why is not None:
            problems.append(((*where, "di"), why))
            continue
        di = int(di_text, 16)
        std = known(di)
        if fmt_text is None:
            if std is None:
                problems.append(
                    (
                        (*where, "di"),
                        f"DI {di:08X} is not one the driver knows: give its format from the meter's manual "
                        f'(dlt645: {{di: "{di:08X}", format: "XXXXXX.XX"}})',
                    )
                )
                continue
            fmt_text = std.format
        if signed is None:
            signed = std.signed if std is not None and std.format == fmt_text else False
        try:
            fmt = parse_format(fmt_text, signed)
        except ValueError as exc:
            problems.append(((*where, "format" if e.address.format else "signed"), str(exc)))  # type: ignore[attr-defined]
            continue
        want = _type_problem(fmt, e.type, di)
        if want is not None:
            problems.append((e.where("type"), want))
            continue
        planned.append(MeterPoint(e.id, di, fmt, e.type))
    return problems, Dlt645Plan(planned)


def _type_problem(fmt: Format, type_: str, di: int) -> str | None:
    what = f"DI {di:08X} ({fmt.text})"
    if not fmt.numeric:
        return None if type_ == "string" else f"{what} is text: make the point type string"
    if type_ in NUMBER_TYPES:
        return None
    if type_ in INT_TYPES:
        if fmt.decimals:
            return f"{what} has decimals: make the point float64"
        if type_.startswith("u") and fmt.signed:
            return f"{what} is signed: make the point a signed type or float64"
        return None
    return f"{what} is a number: make the point float64"
