"""The MELSEC plugin: `mc` devices (Q, L, iQ-R, iQ-F CPUs and their Ethernet modules) over the
MC protocol's 3E frame on TCP, binary or ASCII, with a codec of its own."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from edgegw.drivers.plugin import Checked, Context, Path_, PluginBase, Probe, Simulator, Target, TcpTarget

from .checks import McPlan, check_mc
from .config import McAddress, McDevice

if TYPE_CHECKING:
    from edgegw.drivers.base import Driver
    from edgegw.gateway.config.base import DeviceBase
    from edgegw.gateway.dictionary import DictionaryEntry
    from pydantic import BaseModel


class McPlugin(PluginBase):
    name = "mc"
    protocols = ("mc",)
    address_key = "mc"
    summary_unit = "read requests"

    def device_models(self) -> Sequence[type[DeviceBase]]:
        return (McDevice,)

    def address_model(self) -> type[BaseModel]:
        return McAddress

    def check_device(self, dev: DeviceBase, path: Path_, points: list[DictionaryEntry]) -> Checked:
        assert isinstance(dev, McDevice)
        problems, plan = check_mc(dev, path, points)
        return Checked(problems, plan)

    def shared_key(self, dev: DeviceBase) -> tuple[object, ...] | None:
        assert isinstance(dev, McDevice)
        c = dev.connection
        return (c.plc, c.iqr(), dev.byte_order, dev.planner.max_gap, dev.planner.random_reads)

    def requests_per_poll(self, dev: DeviceBase, points: list[DictionaryEntry], plan: object) -> int | None:
        assert isinstance(plan, McPlan)
        return len(plan.requests)

    def build_driver(
        self, ctx: Context, dev: DeviceBase, points: list[DictionaryEntry], plan: object
    ) -> Driver:
        assert isinstance(dev, McDevice) and isinstance(plan, McPlan)
        from .codec import codec_for
        from .driver import McDriver, decoders_for

        c = dev.connection
        return McDriver(c.host, c.port, codec_for(c), c.timeout, plan, decoders_for(plan), c.describe())

    def simulators(
        self,
        ctx: Context,
        devices: list[tuple[DeviceBase, list[DictionaryEntry], object]],
        bind: str,
        period: float,
    ) -> list[Simulator]:
        from edgegw.simulators.values import ValueGenerator

        from .simulator import McSimulator, SimulatedPlc, SimulatedPoint

        sims: list[Simulator] = []
        ports: dict[int, str] = {}
        for dev, points, plan in devices:
            assert isinstance(dev, McDevice) and isinstance(plan, McPlan)
            port = dev.connection.port
            if port in ports:
                raise ValueError(
                    f"mc devices '{ports[port]}' and '{dev.id}' are both on port {port}: the simulator "
                    "serves one PLC per port (give each a port of its own)"
                )
            ports[port] = dev.id
            sim_points = [
                SimulatedPoint(p, e, ValueGenerator(dev.id, e, period))
                for p, e in zip(plan.points, points, strict=True)
            ]
            c = dev.connection
            sims.append(McSimulator(bind, port, SimulatedPlc(dev.id, c.plc, c.code, c.iqr(), sim_points)))
        return sims

    def doctor_target(self, ctx: Context, dev: DeviceBase) -> Target | None:
        assert isinstance(dev, McDevice)
        return TcpTarget(dev.connection.host, dev.connection.port)

    async def doctor_probe(
        self, ctx: Context, dev: DeviceBase, plan: object, timeout: float
    ) -> list[Probe] | None:
        assert isinstance(dev, McDevice)
        from .probe import probe

        return await probe(dev, plan if isinstance(plan, McPlan) else None, timeout)


PLUGIN = McPlugin()
