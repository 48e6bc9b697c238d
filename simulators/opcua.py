"""OPC UA devices on asyncua's server, with the address space built from the dictionary.

One server per endpoint port; each device is a folder under Objects, each point a variable at
the node id the config gives (namespaces registered as needed: `ns=N` ones as
urn:edgegw:simulator:nsN, `nsu=` ones under their own URI; browse paths become folders), with
EURange and EngineeringUnits properties where the dictionary has them. Values follow the
dictionary's generators and change every `step` seconds, with SourceTimestamp set.

Faults: `bad` (every variable of the device reports BadSensorFailure), `restart` (the server
stops and starts again after `delay` seconds, as a PLC rebooting).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any

from asyncua import Server, ua

from drivers.opcua.nodes import parse_node
from drivers.opcua.values import VARIANT_TYPES
from gateway.config.units import UNECE_REC20
from gateway.dictionary import DictionaryEntry
from gateway.writeback import raw_value

from .modbus_tcp import Fault
from .values import HeldValues

for noisy in ("asyncua", "asyncua.server", "asyncua.common"):
    logging.getLogger(noisy).setLevel(logging.CRITICAL)

OPCUA_FAULTS = ("none", "bad", "restart")


def eu_information(code: str) -> ua.EUInformation:
    """EngineeringUnits from a UNECE Rec 20 code (UnitId as OPC UA Part 8 derives it)."""
    unit_id = 0
    for ch in code.upper()[:3]:
        unit_id = (unit_id << 8) | ord(ch)
    symbol = UNECE_REC20.get(code, (code, code))
    info = ua.EUInformation()
    info.NamespaceUri = "http://www.opcfoundation.org/UA/units/un/cefact"
    info.UnitId = unit_id
    info.DisplayName = ua.LocalizedText(symbol[0])
    info.Description = ua.LocalizedText(symbol[1] if len(symbol) > 1 else symbol[0])
    return info


@dataclass
class OpcuaSimDevice(HeldValues):
    unit_id: int | None = None
    fault: Fault = field(default_factory=Fault)
    faults: tuple[str, ...] = OPCUA_FAULTS
    nodes: list[Any] = field(default_factory=list)
    sim: Any = None

    def set_fault(self, fault: Fault) -> None:
        self.fault = fault
        if fault.mode == "restart" and self.sim is not None and self.sim.loop is not None:
            # the control API calls this from a worker thread
            asyncio.run_coroutine_threadsafe(self.sim.restart(fault.delay), self.sim.loop)
            self.fault = Fault()


class OpcuaSimulator:
    def __init__(self, host: str, port: int, devices: list[OpcuaSimDevice], step: float = 0.5):
        self.host, self.port = host, port
        self.endpoint = f"opc.tcp://{host}:{port}"
        self.devices = {d.id: d for d in devices}
        for d in devices:
            d.sim = self
        self.step = step
        self.server: Server | None = None
        self._task: asyncio.Task[None] | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        server = Server()
        await server.init()
        server.set_endpoint(self.endpoint)
        server.set_server_name("edgegw simulator")
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        for d in self.devices.values():
            folder = await server.nodes.objects.add_folder(ua.NodeId(f"{d.id}", 1), ua.QualifiedName(d.id, 1))
            d.nodes = []
            for e in d.entries:
                d.nodes.append(await self._variable(server, folder, e))
        try:
            await server.start()
        except OSError as exc:
            raise OSError(f"cannot listen on {self.endpoint}: {exc}") from None
        self.server = server
        await self._write_values()
        self._task = asyncio.create_task(self._run())

    async def _ns(self, server: Server, index: int, uri: str | None = None) -> int:
        """The server's namespace `index` (registering placeholders up to it), or `uri`'s."""
        if uri is not None:
            return await server.register_namespace(uri)
        while len(await server.get_namespace_array()) <= index:
            n = len(await server.get_namespace_array())
            await server.register_namespace(f"urn:edgegw:simulator:ns{n}")
        return index

    async def _variable(self, server: Server, folder: Any, e: DictionaryEntry) -> Any:
        ref = parse_node(e.opcua or f"ns=1;s={e.id}")
        vtype = VARIANT_TYPES[e.type]
        initial = ua.Variant(_zero(e.type), vtype)
        if ref.path:
            parent = server.nodes.root
            *folders, leaf = ref.path
            for el in folders:
                found = None
                for child in await parent.get_children():
                    if (await child.read_browse_name()).Name == el.name:
                        found = child
                        break
                parent = found or await parent.add_folder(await self._ns(server, el.ns or 1), el.name)
            var = await parent.add_variable(await self._ns(server, leaf.ns or 1), leaf.name, initial)
        else:
            assert ref.node_id is not None
            ns = await self._ns(server, ref.node_id.NamespaceIndex, ref.namespace_uri)
            nid = ua.NodeId(ref.node_id.Identifier, ns, ref.node_id.NodeIdType)
            var = await folder.add_variable(nid, ua.QualifiedName(e.id, ns), initial)
        await var.write_attribute(
            ua.AttributeIds.DisplayName, ua.DataValue(ua.LocalizedText(e.name.get("en", e.id)))
        )
        if e.access == "rw":
            await var.set_writable()
        if e.range is not None:
            await var.add_property(
                0, "EURange", ua.Variant(ua.Range(e.range[0], e.range[1]), ua.VariantType.ExtensionObject)
            )
        if e.unit is not None:
            await var.add_property(
                0, "EngineeringUnits", ua.Variant(eu_information(e.unit), ua.VariantType.ExtensionObject)
            )
        return var

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.step)
            try:
                await self._write_values()
            except Exception:  # the server went away under us (restart in progress)
                await asyncio.sleep(self.step)

    async def _write_values(self) -> None:
        server = self.server
        if server is None:
            return
        now = dt.datetime.now(dt.UTC)
        for d in self.devices.values():
            bad = d.fault.mode == "bad"
            for e, node, value in zip(d.entries, d.nodes, d.values().values(), strict=True):
                if bad:
                    dv = ua.DataValue(
                        StatusCode=ua.StatusCode(ua.StatusCodes.BadSensorFailure), SourceTimestamp=now
                    )
                else:
                    raw = raw_value(e, value)
                    if e.type in ("float32", "float64"):
                        raw = float(raw)  # type: ignore[arg-type]
                    dv = ua.DataValue(
                        ua.Variant(raw, VARIANT_TYPES[e.type]), SourceTimestamp=now, ServerTimestamp=now
                    )
                await server.write_attribute_value(node.nodeid, dv)
            d.requests += 1

    async def restart(self, delay: float) -> None:
        """The server goes away (connections dropped) and comes back after `delay` seconds."""
        await self.stop()
        await asyncio.sleep(delay)
        await self.start()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        server, self.server = self.server, None
        if server is not None:
            await server.stop()

    def drop_connections(self) -> None:
        return None


def _zero(type_: str) -> object:
    if type_ == "bool":
        return False
    if type_ == "string":
        return ""
    if type_ in ("float32", "float64"):
        return 0.0
    return 0
