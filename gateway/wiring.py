"""From a loaded config to driver objects: the one place that knows both sides."""

from __future__ import annotations

from drivers.base import Driver
from drivers.modbus.codec import RegisterPoint
from drivers.modbus.rtu import ModbusRtuDriver, SerialBus
from drivers.modbus.tcp import ModbusTcpDriver

from .config import LoadedConfig
from .config.checks import ResolvedDevice
from .config.schema import ModbusRtuDevice, ModbusTcpDevice


def register_points(dev: ModbusTcpDevice | ModbusRtuDevice, resolved: ResolvedDevice) -> list[RegisterPoint]:
    out = []
    for e in resolved.points:
        a = resolved.addresses[e.id]
        out.append(
            RegisterPoint(
                id=e.id,
                area=a.area,
                offset=a.offset,
                type=e.type,
                bit=a.bit,
                length=e.length,
                byte_order=e.byte_order or dev.byte_order,
            )
        )
    return out


def build_driver(loaded: LoadedConfig, resolved: ResolvedDevice) -> Driver:
    dev = loaded.config.devices[resolved.index]
    if isinstance(dev, ModbusTcpDevice | ModbusRtuDevice):
        c = dev.connection
        plan = (
            register_points(dev, resolved),
            dev.planner.max_registers,
            dev.planner.max_bits,
            dev.planner.max_gap,
        )
        if isinstance(dev, ModbusTcpDevice):
            return ModbusTcpDriver(dev.connection.host, dev.connection.port, c.unit_id, c.timeout, *plan)
        line = dev.connection
        bus = SerialBus.for_port(
            line.port,
            (line.baudrate, line.bytesize, line.parity, float(line.stopbits)),
            line.inter_frame or 0.0,
        )
        return ModbusRtuDriver(bus, c.unit_id, c.timeout, *plan)
    raise ValueError(f"no driver for protocol {dev.protocol}")
