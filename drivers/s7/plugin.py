"""The Siemens S7 plugin: `s7` devices (S7-300/400/1200/1500, S7-200 SMART, LOGO!) over
ISO-on-TCP with python-snap7, imported when used."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from edgegw.drivers.plugin import Checked, Context, Path_, PluginBase, Probe, Simulator, Target, TcpTarget

from .checks import S7Plan, check_s7
from .config import S7Address, S7Device

if TYPE_CHECKING:
    from edgegw.drivers.base import Driver
    from edgegw.gateway.config.base import DeviceBase
    from edgegw.gateway.dictionary import DictionaryEntry
    from pydantic import BaseModel


class S7Plugin(PluginBase):
    name = "s7"
    protocols = ("s7",)
    address_key = "s7"
    summary_unit = "read requests"

    def device_models(self) -> Sequence[type[DeviceBase]]:
        return (S7Device,)

    def address_model(self) -> type[BaseModel]:
        return S7Address

    def check_device(self, dev: DeviceBase, path: Path_, points: list[DictionaryEntry]) -> Checked:
        assert isinstance(dev, S7Device)
        problems, plan = check_s7(dev, path, points)
        return Checked(problems, plan)

    def shared_key(self, dev: DeviceBase) -> tuple[object, ...] | None:
        assert isinstance(dev, S7Device)
        return (dev.connection.pdu_size, dev.planner.max_gap, dev.planner.max_items)

    def requests_per_poll(self, dev: DeviceBase, points: list[DictionaryEntry], plan: object) -> int | None:
        assert isinstance(plan, S7Plan)
        return len(plan.requests)

    def build_driver(
        self, ctx: Context, dev: DeviceBase, points: list[DictionaryEntry], plan: object
    ) -> Driver:
        assert isinstance(dev, S7Device) and isinstance(plan, S7Plan)
        from .driver import S7Driver, decoders_for

        if plan.decoders is None:  # stateless: the devices sharing this plan share them
            plan.decoders = decoders_for(plan.points, plan.ranges)
        c = dev.connection
        return S7Driver(c.host, c.port, c.tsaps(), c.timeout, plan, plan.decoders, c.describe())

    def simulators(
        self,
        ctx: Context,
        devices: list[tuple[DeviceBase, list[DictionaryEntry], object]],
        bind: str,
        period: float,
    ) -> list[Simulator]:
        from edgegw.simulators.values import ValueGenerator

        from .simulator import S7Simulator, SimulatedPlc, SimulatedPoint

        sims: list[Simulator] = []
        ports: dict[int, str] = {}
        for dev, points, plan in devices:
            assert isinstance(dev, S7Device) and isinstance(plan, S7Plan)
            port = dev.connection.port
            if port in ports:
                raise ValueError(
                    f"s7 devices '{ports[port]}' and '{dev.id}' are both on port {port}: the simulator "
                    "serves one CPU per port (give each a port of its own)"
                )
            ports[port] = dev.id
            sim_points = [
                SimulatedPoint(p, e, ValueGenerator(dev.id, e, period))
                for p, e in zip(plan.points, points, strict=True)
            ]
            sims.append(S7Simulator(bind, port, SimulatedPlc(dev.id, sim_points)))
        return sims

    def doctor_target(self, ctx: Context, dev: DeviceBase) -> Target | None:
        assert isinstance(dev, S7Device)
        return TcpTarget(dev.connection.host, dev.connection.port)

    async def doctor_probe(
        self, ctx: Context, dev: DeviceBase, plan: object, timeout: float
    ) -> list[Probe] | None:
        assert isinstance(dev, S7Device)
        from .probe import probe

        return await probe(dev, plan if isinstance(plan, S7Plan) else None, timeout)


PLUGIN = S7Plugin()
