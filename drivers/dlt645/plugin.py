"""The DL/T 645-2007 plugin: `dlt645` energy meters on RS-485, several per port, through
pyserial, imported when used."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from edgegw.drivers.plugin import BusClaim, Checked, Context, Path_, PluginBase, Probe, Simulator

from .checks import Dlt645Plan, check_dlt645
from .config import Dlt645Address, Dlt645Device

if TYPE_CHECKING:
    from edgegw.drivers.base import Driver
    from edgegw.gateway.config.base import DeviceBase
    from edgegw.gateway.dictionary import DictionaryEntry
    from pydantic import BaseModel


def _settings(dev: Dlt645Device) -> tuple[int, int, str, float]:
    c = dev.connection
    return (c.baudrate, c.bytesize, c.parity, float(c.stopbits))


class Dlt645Plugin(PluginBase):
    name = "dlt645"
    protocols = ("dlt645",)
    address_key = "dlt645"
    summary_unit = "read requests"

    def device_models(self) -> Sequence[type[DeviceBase]]:
        return (Dlt645Device,)

    def address_model(self) -> type[BaseModel]:
        return Dlt645Address

    def check_device(self, dev: DeviceBase, path: Path_, points: list[DictionaryEntry]) -> Checked:
        assert isinstance(dev, Dlt645Device)
        problems, plan = check_dlt645(dev, path, points)
        return Checked(problems, plan)

    def shared_key(self, dev: DeviceBase) -> tuple[object, ...] | None:
        return None  # the checks look at the device's own address

    def bus_claim(self, ctx: Context | None, dev: DeviceBase) -> BusClaim | None:
        assert isinstance(dev, Dlt645Device)
        c = dev.connection
        port = ctx.port_path(c.port) if ctx is not None else c.port
        return BusClaim(port, _settings(dev), shared=True, unit=c.address, unit_key="address", bus="dlt645")

    def requests_per_poll(self, dev: DeviceBase, points: list[DictionaryEntry], plan: object) -> int | None:
        assert isinstance(plan, Dlt645Plan)
        return len(plan.points)

    def build_driver(
        self, ctx: Context, dev: DeviceBase, points: list[DictionaryEntry], plan: object
    ) -> Driver:
        assert isinstance(dev, Dlt645Device) and isinstance(plan, Dlt645Plan)
        from .driver import Dlt645Driver, MeterBus

        c = dev.connection
        bus = MeterBus.for_port(ctx.port_path(c.port), _settings(dev))
        return Dlt645Driver(bus, c.address, c.timeout, plan.points)

    def simulators(
        self,
        ctx: Context,
        devices: list[tuple[DeviceBase, list[DictionaryEntry], object]],
        bind: str,
        period: float,
    ) -> list[Simulator]:
        from .simulator import MeterBusSimulator, SimulatedMeter

        by_port: dict[str, list[SimulatedMeter]] = {}
        settings: dict[str, tuple[int, int, str, float]] = {}
        for dev, points, plan in devices:
            assert isinstance(dev, Dlt645Device) and isinstance(plan, Dlt645Plan)
            port = ctx.port_path(dev.connection.port)
            settings.setdefault(port, _settings(dev))
            by_port.setdefault(port, []).append(SimulatedMeter.of(dev, points, plan, period))
        return [MeterBusSimulator(port, settings[port], meters) for port, meters in by_port.items()]

    async def doctor_probe(
        self, ctx: Context, dev: DeviceBase, plan: object, timeout: float
    ) -> list[Probe] | None:
        assert isinstance(dev, Dlt645Device)
        from .probe import probe

        return await probe(
            ctx.port_path(dev.connection.port), dev, plan if isinstance(plan, Dlt645Plan) else None, timeout
        )


PLUGIN = Dlt645Plugin()
