"""Modbus device and point-address models (TCP and RTU)."""

from __future__ import annotations

from typing import Literal

from edgegw.gateway.config.base import ByteOrder, DeviceBase, SerialLine, Strict
from edgegw.gateway.config.types import Duration, DurationOrZero
from pydantic import Field, field_validator


class ModbusAddress(Strict):
    address: str | int = Field(
        description="hr:N, ir:N, co:N, di:N (0-based), hr:N.B for bit B, or Modicon 4xxxx/3xxxx/1xxxx/0xxxx"
    )

    @field_validator("address", mode="before")
    @classmethod
    def _no_float(cls, v: object) -> object:
        if isinstance(v, float):
            # YAML reads 40021.10 as 40021.1: bit 10 would silently become bit 1
            raise ValueError(f"write a register bit as a quoted string ('{v}' or 'hr:N.B'), not a number")
        return v


class ReadPlannerSettings(Strict):
    max_registers: int = Field(125, ge=1, le=125, description="registers per read request")
    max_bits: int = Field(2000, ge=1, le=2000, description="coils/inputs per read request")
    max_gap: int = Field(16, ge=0, le=124, description="unused registers a request may read through")


class ModbusTcpConnection(Strict):
    host: str
    port: int = Field(502, ge=1, le=65535)
    unit_id: int = Field(1, ge=0, le=255)
    timeout: Duration = 1.0


class ModbusTcpDevice(DeviceBase):
    protocol: Literal["modbus-tcp"]
    connection: ModbusTcpConnection
    byte_order: ByteOrder = "ABCD"
    planner: ReadPlannerSettings = Field(default_factory=ReadPlannerSettings)


class ModbusRtuConnection(SerialLine):
    unit_id: int = Field(1, ge=1, le=247)
    timeout: Duration = 1.0
    inter_frame: DurationOrZero | None = Field(None, description="pause between frames on the bus")


class ModbusRtuDevice(DeviceBase):
    protocol: Literal["modbus-rtu"]
    connection: ModbusRtuConnection
    byte_order: ByteOrder = "ABCD"
    planner: ReadPlannerSettings = Field(default_factory=ReadPlannerSettings)
