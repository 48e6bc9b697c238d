"""Siemens S7 device and point-address models (no protocol library imported here)."""

from __future__ import annotations

import re
from typing import Literal

from edgegw.gateway.config.base import DeviceBase, Strict
from edgegw.gateway.config.types import Duration
from pydantic import Field, field_validator, model_validator

# CPU families and the connection each needs (rack/slot, or TSAPs where the CPU wants those).
# Rack/slot: the CPU's position in its rack as TIA Portal / STEP 7 show it; the remote TSAP is
# then 0x0100 | rack << 5 | slot (a PG connection). S7-200 SMART and LOGO! take fixed TSAPs.
PLC_FAMILIES = ("s7-300", "s7-400", "s7-1200", "s7-1500", "s7-200smart", "logo")
String = Literal["STRING", "WSTRING", "CHAR", "DTL", "DATE_AND_TIME"]

_TSAP = re.compile(r"^\s*([0-9A-Fa-f]{1,2})\.([0-9A-Fa-f]{1,2})\s*$|^\s*(?:0x)?([0-9A-Fa-f]{4})\s*$")


def parse_tsap(text: str) -> int:
    """A TSAP as STEP 7 and the CPU's documentation write it: "02.01" or "0201" (hex)."""
    m = _TSAP.match(text)
    if m is None:
        raise ValueError(f"'{text}' is not a TSAP: write two hex bytes as \"02.01\" (or 0x0201)")
    if m.group(3) is not None:
        return int(m.group(3), 16)
    return int(m.group(1), 16) << 8 | int(m.group(2), 16)


class S7Address(Strict):
    address: str | int = Field(
        description="absolute address as TIA Portal shows it: DB10.DBX0.0, DB10.DBW2, DB10.DBD4, "
        "DB10.DBB12 (the type sets the width), I0.3, QB1, MW20, MD24 (E/A accepted for I/Q)"
    )
    format: String | None = Field(
        None,
        description="for a string point: STRING (default; length = the n of STRING[n]), WSTRING, "
        "CHAR (length characters, no header), DTL or DATE_AND_TIME (read as ISO 8601 text)",
    )

    @field_validator("address", mode="before")
    @classmethod
    def _text(cls, v: object) -> object:
        if isinstance(v, bool) or not isinstance(v, str | int | float):
            raise ValueError("an S7 address is text such as DB10.DBW2 or MW20")
        if isinstance(v, float):
            raise ValueError(f"an S7 address is text such as DB10.DBW{v:g} or MW{v:g}, not a number")
        return v  # a whole number is reported with the point's other checks


class S7Connection(Strict):
    host: str
    port: int = Field(102, ge=1, le=65535)
    plc: Literal["s7-300", "s7-400", "s7-1200", "s7-1500", "s7-200smart", "logo"] | None = Field(
        None, description="sets rack/slot or the TSAPs the family needs"
    )
    rack: int | None = Field(None, ge=0, le=7)
    slot: int | None = Field(None, ge=0, le=31)
    local_tsap: str | None = Field(None, description='hex, e.g. "01.00" (with remote_tsap)')
    remote_tsap: str | None = Field(None, description='hex, e.g. "03.01" (S7-200 SMART)')
    timeout: Duration = 1.0
    pdu_size: int = Field(
        480, ge=240, le=960, description="PDU size asked for; the CPU may grant less (S7-300: 240)"
    )

    @field_validator("local_tsap", "remote_tsap")
    @classmethod
    def _tsap(cls, v: str | None) -> str | None:
        if v is not None:
            parse_tsap(v)
        return v

    @model_validator(mode="after")
    def _one_form(self) -> S7Connection:
        tsaps = (self.local_tsap is not None, self.remote_tsap is not None)
        if any(tsaps) and not all(tsaps):
            raise ValueError("local_tsap and remote_tsap go together: give both")
        if all(tsaps) and (self.rack is not None or self.slot is not None):
            raise ValueError("give rack/slot or local_tsap/remote_tsap, not both")
        return self

    def tsaps(self) -> tuple[int, int]:
        """(local, remote) TSAP of the connection this config describes."""
        if self.local_tsap is not None and self.remote_tsap is not None:
            return parse_tsap(self.local_tsap), parse_tsap(self.remote_tsap)
        if self.rack is None and self.slot is None and self.plc == "s7-200smart":
            # S7-200 SMART answers an S7-300-style request with TSAP 03.00 (rack 0 slot 0,
            # S7 basic connection), as S7NetPlus found (S7NetPlus/s7netplus#395, #396)
            return 0x0100, 0x0300
        if self.rack is None and self.slot is None and self.plc == "logo":
            # LOGO! 0BA7/0BA8/8.x: the TSAPs of the server connection set in LOGO!Soft Comfort,
            # usually 20.00 on the LOGO! and 10.00 for the client (python-snap7's snap7/logo.py)
            return 0x1000, 0x2000
        rack, slot = self.rack_slot()
        return 0x0100, 0x0100 | rack << 5 | slot

    def rack_slot(self) -> tuple[int, int]:
        rack = self.rack if self.rack is not None else 0
        if self.slot is not None:
            return rack, self.slot
        # S7-300 CPUs sit in slot 2 (slot 1 is the power supply); S7-400 in slot 3 after a
        # wide power supply, the usual layout; S7-1200/1500 report rack 0 slot 1 (slot 0 for
        # S7-1500 works too, through its CP)
        return rack, {"s7-300": 2, "s7-400": 3}.get(self.plc or "", 1)

    def describe(self) -> str:
        local, remote = self.tsaps()
        if self.local_tsap is not None or (self.plc in ("s7-200smart", "logo") and self.rack is None):
            how = f"TSAP {local >> 8:02X}.{local & 0xFF:02X}/{remote >> 8:02X}.{remote & 0xFF:02X}"
        else:
            rack, slot = self.rack_slot()
            how = f"rack {rack} slot {slot}"
        return f"{self.host}:{self.port} {how}"


class S7PlannerSettings(Strict):
    max_gap: int = Field(
        16, ge=0, le=256, description="unused bytes a read may go through to join two ranges"
    )
    max_items: int = Field(20, ge=1, le=20, description="variables per read request (S7: at most 20)")


class S7Device(DeviceBase):
    protocol: Literal["s7"]
    connection: S7Connection
    planner: S7PlannerSettings = Field(default_factory=S7PlannerSettings)
