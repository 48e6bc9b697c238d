"""Mitsubishi MELSEC (MC protocol) device and point-address models (no I/O imported here)."""

from __future__ import annotations

from typing import Literal

from edgegw.gateway.config.base import ByteOrder, DeviceBase, Strict
from edgegw.gateway.config.types import Duration
from pydantic import Field, field_validator


class McAddress(Strict):
    address: str | int = Field(
        description="device and number as GX Works shows them: D100, W1A, R20, ZR1000, SD200, TN5, CN3 "
        "(words); X1F, Y20, M10, L5, F3, B1A, SM400 (bits); D300.3 is bit 3 of D300. X/Y are "
        "hexadecimal on Q/L/iQ-R and octal on iQ-F; B and W hexadecimal"
    )

    @field_validator("address", mode="before")
    @classmethod
    def _text(cls, v: object) -> object:
        if isinstance(v, bool) or not isinstance(v, str | int | float):
            raise ValueError("an MC address is text such as D100 or M10")
        if isinstance(v, float):
            raise ValueError(f"an MC address is text such as D{v:g}, not a number")
        return v  # a whole number is reported with the point's other checks


class McConnection(Strict):
    host: str
    port: int = Field(
        ge=1,
        le=65535,
        description="the port of the MC protocol (SLMP) connection set in the CPU's or Ethernet module's "
        "open settings; MELSEC has no fixed MC port, so it is required",
    )
    plc: Literal["Q", "L", "iQ-R", "iQ-F"] = Field(
        "Q", description="CPU family: sets X/Y numbering (octal on iQ-F) and the iQ-R device layout"
    )
    code: Literal["binary", "ascii"] = Field(
        "binary", description="communication data code, as set for the connection in GX Works"
    )
    timeout: Duration = 1.0
    iqr_subcommands: bool | None = Field(
        None,
        description="use the iQ-R subcommands (0002/0003: 4-byte device numbers, 96 random points); "
        "default: only for plc iQ-R",
    )

    def iqr(self) -> bool:
        return self.iqr_subcommands if self.iqr_subcommands is not None else self.plc == "iQ-R"

    def describe(self) -> str:
        return f"{self.host}:{self.port} ({self.plc}, {self.code})"


class McPlannerSettings(Strict):
    max_gap: int = Field(
        16, ge=0, le=256, description="unused words a batch read may go through to join two ranges"
    )
    random_reads: bool = Field(True, description="gather scattered 1-2 word points into random reads (0403)")


class McDevice(DeviceBase):
    protocol: Literal["mc"]
    connection: McConnection
    byte_order: ByteOrder = Field(
        "CDAB",
        description="of 32/64-bit values: CDAB = low word first (MELSEC's order), ABCD = high word first",
    )
    planner: McPlannerSettings = Field(default_factory=McPlannerSettings)
