"""DL/T 645-2007 device and point-address models (no serial library imported here)."""

from __future__ import annotations

from typing import Literal

from edgegw.gateway.config.base import DeviceBase, SerialLine, Strict
from edgegw.gateway.config.types import Duration
from pydantic import Field, field_validator


class Dlt645Connection(SerialLine):
    baudrate: int = Field(2400, ge=50, le=4_000_000, description="2400 is the meters' usual default")
    parity: Literal["N", "E", "O", "M", "S"] = Field("E", description="the standard's line is 8E1")
    address: str = Field(
        description='the 12 digits printed on the meter\'s nameplate, in quotes: "000000001234"'
    )
    timeout: Duration = Field(1.0, description="how long to wait for a meter's answer to one request")

    @field_validator("address", mode="before")
    @classmethod
    def _text(cls, v: object) -> object:
        if isinstance(v, int) and not isinstance(v, bool):
            raise ValueError(
                f'write the address in quotes with all 12 digits ("{v:012d}"): as a number its leading '
                "zeros are lost"
            )
        return v


class Dlt645Address(Strict):
    di: str = Field(description='data identifier, 8 hex digits DI3 DI2 DI1 DI0, e.g. "02010100" (voltage A)')
    format: str | None = Field(
        None,
        description="data format when the DI is not one the driver knows: XXXXXX.XX (BCD digits, "
        "decimals after the point), NNNNNNNNNNNN (digits as text), YYMMDDWW, hhmmss, YYMMDDhhmm, "
        "YYMMDDhhmmss, MMDDhhmm",
    )
    signed: bool | None = Field(
        None,
        description="the highest bit of the most significant byte is the sign (default: as the "
        "standard says for a known DI, else unsigned)",
    )

    @field_validator("di", mode="before")
    @classmethod
    def _di_text(cls, v: object) -> object:
        if isinstance(v, int) and not isinstance(v, bool):
            raise ValueError(f'write the data identifier in quotes with its 8 hex digits ("{v:08d}")')
        return v


class Dlt645Device(DeviceBase):
    protocol: Literal["dlt645"]
    connection: Dlt645Connection
