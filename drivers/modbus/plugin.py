"""The Modbus plugin: `modbus-tcp` and `modbus-rtu` devices (pymodbus, imported when used)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, cast

from edgegw.drivers.plugin import BusClaim, Checked, Context, Path_, PluginBase, Simulator, Target, TcpTarget

from .checks import ModbusPlan, check_modbus
from .config import ModbusAddress, ModbusRtuDevice, ModbusTcpDevice

if TYPE_CHECKING:
    from edgegw.drivers.base import Driver
    from edgegw.gateway.config.base import DeviceBase
    from edgegw.gateway.dictionary import DictionaryEntry
    from pydantic import BaseModel


class ModbusPlugin(PluginBase):
    name = "modbus"
    protocols = ("modbus-tcp", "modbus-rtu")
    address_key = "modbus"
    summary_unit = "read requests"

    def device_models(self) -> Sequence[type[DeviceBase]]:
        return (ModbusTcpDevice, ModbusRtuDevice)

    def address_model(self) -> type[BaseModel]:
        return ModbusAddress

    def check_device(self, dev: DeviceBase, path: Path_, points: list[DictionaryEntry]) -> Checked:
        assert isinstance(dev, ModbusTcpDevice | ModbusRtuDevice)
        problems, plan = check_modbus(dev, path, points)
        return Checked(problems, plan)

    def shared_key(self, dev: DeviceBase) -> tuple[object, ...] | None:
        assert isinstance(dev, ModbusTcpDevice | ModbusRtuDevice)
        p = dev.planner
        return (dev.byte_order, p.max_registers, p.max_bits, p.max_gap)

    def bus_claim(self, ctx: Context | None, dev: DeviceBase) -> BusClaim | None:
        if not isinstance(dev, ModbusRtuDevice):
            return None
        c = dev.connection
        port = ctx.port_path(c.port) if ctx is not None else c.port
        return BusClaim(
            port, (c.baudrate, c.bytesize, c.parity, float(c.stopbits)), True, c.unit_id, bus="Modbus RTU"
        )

    def requests_per_poll(self, dev: DeviceBase, points: list[DictionaryEntry], plan: object) -> int | None:
        assert isinstance(plan, ModbusPlan)
        return len(plan.requests)

    def build_driver(
        self, ctx: Context, dev: DeviceBase, points: list[DictionaryEntry], plan: object
    ) -> Driver:
        assert isinstance(dev, ModbusTcpDevice | ModbusRtuDevice) and isinstance(plan, ModbusPlan)
        from .driver import decoders_for

        p = dev.planner
        limits = (p.max_registers, p.max_bits, p.max_gap)
        if plan.decoders is None:  # stateless: the devices sharing this plan share them
            plan.decoders = decoders_for(plan.registers, plan.requests)
        shared = (plan.requests, plan.decoders)
        if isinstance(dev, ModbusTcpDevice):
            from .tcp import ModbusTcpDriver

            c = dev.connection
            return ModbusTcpDriver(c.host, c.port, c.unit_id, c.timeout, plan.registers, *limits, *shared)
        from .rtu import ModbusRtuDriver, SerialBus

        line = dev.connection
        claim = self.bus_claim(ctx, dev)
        assert claim is not None
        bus = SerialBus.for_port(claim.port, line_settings(claim), line.inter_frame or 0.0)
        return ModbusRtuDriver(bus, line.unit_id, line.timeout, plan.registers, *limits, *shared)

    def simulators(
        self,
        ctx: Context,
        devices: list[tuple[DeviceBase, list[DictionaryEntry], object]],
        bind: str,
        period: float,
    ) -> list[Simulator]:
        from edgegw.simulators.values import ValueGenerator

        from .simulator import ModbusTcpSimulator, SimulatedDevice, SimulatedPoint
        from .simulator_rtu import ModbusRtuSimulator

        by_port: dict[int, list[SimulatedDevice]] = {}
        by_line: dict[str, tuple[tuple[int, int, str, float], list[SimulatedDevice]]] = {}
        for dev, points, plan in devices:
            assert isinstance(dev, ModbusTcpDevice | ModbusRtuDevice) and isinstance(plan, ModbusPlan)
            sim_points = [
                SimulatedPoint(r, e, ValueGenerator(dev.id, e, period))
                for r, e in zip(plan.registers, points, strict=True)
            ]
            device = SimulatedDevice(dev.id, dev.connection.unit_id, sim_points)
            if isinstance(dev, ModbusTcpDevice):
                by_port.setdefault(dev.connection.port, []).append(device)
            else:
                claim = self.bus_claim(ctx, dev)
                assert claim is not None
                by_line.setdefault(claim.port, (line_settings(claim), []))[1].append(device)
        sims: list[Simulator] = [ModbusTcpSimulator(bind, port, d) for port, d in sorted(by_port.items())]
        sims += [ModbusRtuSimulator(line, s, d) for line, (s, d) in sorted(by_line.items())]
        return sims

    def doctor_target(self, ctx: Context, dev: DeviceBase) -> Target | None:
        if isinstance(dev, ModbusTcpDevice):
            return TcpTarget(dev.connection.host, dev.connection.port)
        return None  # an RTU device's port is checked through its bus claim


def line_settings(claim: BusClaim) -> tuple[int, int, str, float]:
    baudrate, bytesize, parity, stopbits = cast(tuple[int, int, str, float], claim.line)
    return (int(baudrate), int(bytesize), str(parity), float(stopbits))


PLUGIN = ModbusPlugin()
