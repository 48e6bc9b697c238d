"""The parts of the config schema that every protocol plugin builds on.

A plugin's config module (`drivers/<name>/config.py`) subclasses `DeviceBase` for its devices
and gives a point-address model; `gateway.config.schema` joins them into the one schema. This
module imports nothing of the gateway but the value types, so plugins can depend on it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, FiniteFloat, field_validator

from .types import Duration

PointType = Literal[
    "bool",
    "int8",
    "uint8",
    "int16",
    "uint16",
    "int32",
    "uint32",
    "int64",
    "uint64",
    "float32",
    "float64",
    "string",
]
ByteOrder = Literal["ABCD", "DCBA", "BADC", "CDAB"]
Classification = Literal["general", "important", "core"]
Access = Literal["ro", "rw"]

POINT_ID = r"^[a-z0-9_]+$"
DEVICE_ID = r"^[a-z0-9_-]+$"
MODEL_ID = r"^[A-Za-z0-9_.-]+$"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class PointBase(Strict):
    """A point of the data dictionary. In a device's `points:` list, an entry whose id is a
    model point overrides only the fields it gives. The schema adds one address field per
    protocol plugin (`modbus:`, `opcua:` …): the full model is `PointFields`."""

    id: str = Field(pattern=POINT_ID, description="unique in its model/device")
    name: str | dict[str, str] | None = Field(None, description="{en: …, zh: …}")
    description: str | None = None
    type: PointType | None = Field(None, description="required unless inherited from the model")
    unit: str | None = Field(None, description="UNECE Rec 20 common code, e.g. CEL, BAR, KWT")
    range: tuple[FiniteFloat, FiniteFloat] | None = Field(
        None, description="engineering range; outside it the quality becomes 'uncertain'"
    )
    scale: FiniteFloat | None = Field(None, description="engineering = raw * scale + offset (default 1)")
    offset: FiniteFloat | None = Field(None, description="default 0")
    access: Access | None = Field(None, description="ro (default) | rw")
    deadband: FiniteFloat | None = Field(None, ge=0, description="with publish: on_change")
    semantic_id: str | None = None
    classification: Classification | None = Field(None, description="default general")
    length: int | None = Field(
        None,
        ge=1,
        le=16382,
        description="string length: registers for Modbus (2 characters each), the n of STRING[n] for S7",
    )
    byte_order: ByteOrder | None = Field(None, description="overrides the device's byte_order")
    compute: str | None = Field(
        None,
        description="an expression over points (`other_device.point` for another device's): the "
        "point is computed from them, not read (DESIGN §4b)",
    )

    @field_validator("scale")
    @classmethod
    def _scale_not_zero(cls, v: float | None) -> float | None:
        if v == 0:
            raise ValueError(
                "must not be 0: every value would read as the offset, and a write would divide by 0"
            )
        return v

    @field_validator("range")
    @classmethod
    def _range_ordered(cls, v: tuple[float, float] | None) -> tuple[float, float] | None:
        if v is not None and v[0] > v[1]:
            raise ValueError(f"the minimum {v[0]:g} is above the maximum {v[1]:g}")
        return v


if TYPE_CHECKING:
    # at run time, the schema module makes PointFields (PointBase plus one address field per
    # plugin) and rebuilds the models below with it
    PointFields = PointBase


Severity = Literal["low", "medium", "high", "critical"]


class Alarm(Strict):
    """An alarm over a device's points: active once `when` has held for `for`, cleared when
    `clear` holds (default: once `when` no longer holds)."""

    id: str = Field(pattern=POINT_ID, description="unique in its model/device")
    when: str = Field(description="an expression that is true while the condition holds")
    for_: Duration = Field(0.0, alias="for", description="how long `when` must hold before it raises")
    clear: str | None = Field(None, description="hysteresis: clears when this holds (default: not `when`)")
    severity: Severity = "medium"
    message: str | dict[str, str] | None = Field(None, description="{en: …, zh: …}")


class Model(Strict):
    description: str | None = None
    manufacturer: str | None = None
    points: list[PointFields] = Field(default_factory=list)
    alarms: list[Alarm] = Field(default_factory=list)


class PollSettings(Strict):
    interval: Duration = Field(1.0, description="poll period, on monotonic deadlines")
    backoff_max: Duration = Field(30.0, description="cap of the retry back-off while offline")
    offline_after: int = Field(
        1, ge=1, le=100, description="consecutive failed polls before the device is offline"
    )


class DeviceBase(Strict):
    protocol: str  # each plugin's device model narrows it to its Literal, the schema's discriminator
    id: str = Field(pattern=DEVICE_ID)
    model: str | None = Field(None, description="a key of models:")
    description: str | None = None
    enabled: bool = True
    poll: PollSettings = Field(default_factory=PollSettings)
    publish: Literal["always", "on_change"] = "always"
    heartbeat: Duration = Field(60.0, description="with on_change: full snapshot this often")
    location: dict[str, str] | None = Field(None, description="overrides gateway.location keys")
    points: list[PointFields] = Field(default_factory=list)
    alarms: list[Alarm] = Field(
        default_factory=list, description="added to the model's (same id: replaces it)"
    )


class SerialLine(Strict):
    port: str = Field(description="e.g. /dev/ttyUSB0 or /dev/serial/by-id/…")
    baudrate: int = Field(9600, ge=50, le=4_000_000)
    bytesize: Literal[5, 6, 7, 8] = 8
    parity: Literal["N", "E", "O", "M", "S"] = "N"
    stopbits: Literal[1, 1.5, 2] = 1  # type: ignore[valid-type]  # a float Literal: pydantic takes it, PEP 586 not
