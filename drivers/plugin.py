"""The contract between the gateway and a protocol plugin (`drivers/<name>/plugin.py`).

The core (config schema, `validate`, the runtime, `doctor`, `simulate`, the CLI) knows protocols
only through this interface and `drivers/registry.py`. A plugin module is imported to build the
config schema, so it imports only pydantic models and pure helpers at module level; its
protocol library (pymodbus, asyncua, …) is imported inside `build_driver` and `simulators`, when
a configured device needs it. `docs/adding-a-protocol.md` walks through a whole plugin.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from edgegw.gateway.config.source import Path_

if TYPE_CHECKING:
    from edgegw.gateway.config.base import DeviceBase
    from edgegw.gateway.dictionary import DictionaryEntry
    from pydantic import BaseModel

    from .base import Driver

Problem = tuple[Path_, str]  # a config key's path and what is wrong with it


class Context(Protocol):
    """What a plugin may know of the loaded config besides its device (a LoadedConfig)."""

    @property
    def data_dir(self) -> Path: ...

    @property
    def gateway_id(self) -> str: ...

    def relative(self, name: str) -> Path:
        """A file named in the config, relative to the config file's folder."""
        ...

    def port_path(self, name: str) -> str:
        """A serial port as the config names it, relative to the config's folder."""
        ...


@dataclass(slots=True)
class Checked:
    """A device's points after its plugin checked them: `problems` for `validate`, `plan` for
    the plugin's own later use (parsed addresses, a read plan), kept in the ResolvedDevice."""

    problems: list[Problem] = field(default_factory=list)
    plan: object = None


@dataclass(frozen=True, slots=True)
class BusClaim:
    """A device's claim on a serial port. Devices whose claims are `shared` share one bus (one
    line setting, distinct `unit`s, one request at a time) when they speak the same `bus` protocol;
    any other claim needs the port to itself. The core checks the claims of all plugins together."""

    port: str
    line: tuple[object, ...]  # baudrate, bytesize, parity, stopbits: equal on one bus
    shared: bool
    unit: object = None  # the device's address on a shared bus
    unit_key: str = "unit_id"  # the connection key that holds it, for error paths
    # the protocol spoken on a shared bus: claims of different kinds cannot share a port, since
    # each plugin opens the port itself (a Modbus RTU client would read a meter's replies)
    bus: str = ""


@dataclass(frozen=True, slots=True)
class TcpTarget:
    """What `doctor` connects to, to see whether a device is reachable."""

    host: str
    port: int


@dataclass(frozen=True, slots=True)
class PortTarget:
    """A serial port `doctor` checks for presence and permissions."""

    path: str


Target = TcpTarget | PortTarget


@dataclass(frozen=True, slots=True)
class Probe:
    """One finding of a plugin's own `doctor` probe: state ok | warn | FAIL, what was found,
    and for anything not ok the fix."""

    state: str
    found: str
    fix: str | None = None


class Simulator(Protocol):
    """A running simulator: one server, bus or instrument, serving one or more devices.
    `devices` holds objects with an `id`, a `fault` and the `faults` they take (the control API
    sets them)."""

    @property
    def devices(self) -> Mapping[Any, Any]: ...

    def describe(self) -> list[str]:
        """One line per device for `edgegw simulate`'s output: what it is and where it answers."""
        ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class ProtocolPlugin(Protocol):
    """One protocol family. Every member is required; `commands` may do nothing."""

    name: str  # the folder name, e.g. "modbus"
    protocols: tuple[str, ...]  # the `protocol:` values it serves, e.g. ("modbus-tcp", "modbus-rtu")
    address_key: str | None  # the point key holding its address (`modbus:`), None if points have none
    summary_unit: str  # what `requests_per_poll` counts, for `validate`'s summary ("read requests")

    def device_models(self) -> Sequence[type[DeviceBase]]:
        """The pydantic models of its devices, one per protocol, each with `protocol: Literal[…]`."""
        ...

    def address_model(self) -> type[BaseModel] | None:
        """The model of a point's address under `address_key`."""
        ...

    def check_device(self, dev: DeviceBase, path: Path_, points: list[DictionaryEntry]) -> Checked:
        """Every problem of one device's connection and points; `plan` for later use."""
        ...

    def shared_key(self, dev: DeviceBase) -> tuple[object, ...] | None:
        """For a device that uses its model unchanged: what its checked points depend on
        besides the model (devices with equal keys share one check and one plan). None when
        the checks also look at the device's own settings."""
        ...

    def bus_claim(self, ctx: Context | None, dev: DeviceBase) -> BusClaim | None:
        """The serial port the device uses, if any (ctx None: the port as written)."""
        ...

    def requests_per_poll(self, dev: DeviceBase, points: list[DictionaryEntry], plan: object) -> int | None:
        """How many requests one poll of the device makes, for `validate` (None: not counted)."""
        ...

    def build_driver(
        self, ctx: Context, dev: DeviceBase, points: list[DictionaryEntry], plan: object
    ) -> Driver:
        """The driver of one device (imports the protocol library)."""
        ...

    def simulators(
        self,
        ctx: Context,
        devices: list[tuple[DeviceBase, list[DictionaryEntry], object]],
        bind: str,
        period: float,
    ) -> list[Simulator]:
        """Simulators serving the given enabled devices of this plugin (values follow the
        dictionary and change over `period` seconds). Raises ValueError for a device it cannot
        simulate."""
        ...

    def doctor_target(self, ctx: Context, dev: DeviceBase) -> Target | None:
        """What `doctor` should check to see whether the device is reachable."""
        ...

    async def doctor_probe(
        self, ctx: Context, dev: DeviceBase, plan: object, timeout: float
    ) -> list[Probe] | None:
        """A protocol-level check of a reachable device for `doctor` (log in, read the
        identity, try one planned read), touching nothing; None: the reachability check of
        `doctor_target` is all there is."""
        ...

    def add_commands(self, sub: argparse._SubParsersAction[Any], load: Callable[[str], Any]) -> None:
        """Add protocol-specific subcommands to the `edgegw` CLI (`browse` for OPC UA)."""
        ...


class PluginBase:
    """The defaults of the members a protocol may not need (no addresses, no serial port, no
    request count, no commands): a plugin extends it and writes only what its protocol has."""

    address_key: str | None = None
    summary_unit = ""

    def address_model(self) -> type[BaseModel] | None:
        return None

    def shared_key(self, dev: DeviceBase) -> tuple[object, ...] | None:
        return None

    def bus_claim(self, ctx: Context | None, dev: DeviceBase) -> BusClaim | None:
        return None

    def requests_per_poll(self, dev: DeviceBase, points: list[DictionaryEntry], plan: object) -> int | None:
        return None

    def doctor_target(self, ctx: Context, dev: DeviceBase) -> Target | None:
        return None

    async def doctor_probe(
        self, ctx: Context, dev: DeviceBase, plan: object, timeout: float
    ) -> list[Probe] | None:
        return None

    def add_commands(self, sub: argparse._SubParsersAction[Any], load: Callable[[str], Any]) -> None:
        return None
