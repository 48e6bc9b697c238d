"""OPC UA devices on asyncua's server, with the address space built from the dictionary.

One server per endpoint port; each device is a folder under Objects, each point a variable at
the node id the config gives (namespaces registered as needed: `ns=N` ones as
urn:edgegw:simulator:nsN, `nsu=` ones under their own URI; browse paths become folders), with
EURange and EngineeringUnits properties where the dictionary has them. Values follow the
dictionary's generators and change every `step` seconds, with SourceTimestamp set.

Security: a device with `connection.security` makes its endpoint offer that policy and mode
(with no None endpoint unless another device on the port has no security), with a certificate
kept in data_dir/simulator-pki; it is copied to the device's `server_certificate` when that
file does not exist yet, so the gateway trusts the simulated machine as it would a pinned real
one. A device with a username/password or a user certificate makes the server refuse anonymous
sessions and accept exactly those identities. Client application certificates are accepted
(the simulator logs their thumbprint), as a server in its "accept all" setting does.

Faults: `bad` (every variable of the device reports BadSensorFailure), `restart` (the server
stops and starts again after `delay` seconds, as a PLC rebooting).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from asyncua import Server, ua
from asyncua.crypto import uacrypto
from asyncua.crypto.permission_rules import User, UserRole
from edgegw.drivers.opcua.nodes import parse_node
from edgegw.gateway.dictionary import DictionaryEntry
from edgegw.gateway.opcua import pki
from edgegw.gateway.opcua.types import SECURITY_POLICIES, VARIANT_TYPES, eu_information
from edgegw.gateway.writeback import raw_value
from edgegw.simulators.faults import Fault
from edgegw.simulators.values import HeldValues

for noisy in ("asyncua", "asyncua.server", "asyncua.common"):
    logging.getLogger(noisy).setLevel(logging.CRITICAL)

OPCUA_FAULTS = ("none", "bad", "restart")
log = logging.getLogger("edgegw.simulate")


@dataclass
class ServerSecurity:
    """What one simulated endpoint offers: security policies (None among them or not), its
    certificate, and the user identities it accepts (anonymous only when none is given)."""

    policies: set[tuple[str, str]] = field(default_factory=set)
    none: bool = False
    certificate: Path | None = None
    private_key: Path | None = None
    passwords: dict[str, str] = field(default_factory=dict)
    user_certificates: list[Path] = field(default_factory=list)
    publish_to: list[Path] = field(default_factory=list)  # devices' server_certificate files

    def ensure_certificate(self, uri: str) -> None:
        assert self.certificate is not None and self.private_key is not None
        if not self.certificate.exists() or not self.private_key.exists():
            pki.create_certificate(self.certificate, self.private_key, uri, common_name="edgegw simulator")
        der = pki.load_der(self.certificate)
        for target in self.publish_to:
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(der)
            elif pki.load_der(target) != der:
                log.warning(
                    "%s pins another certificate than this simulator's %s: the gateway will refuse it",
                    target,
                    self.certificate,
                )


class _Users:
    """asyncua user manager: exactly the configured identities, anonymous only without any."""

    def __init__(self, passwords: dict[str, str], certificates: list[bytes]):
        self.passwords = passwords
        self.certificates = certificates

    def get_user(
        self, iserver: Any, username: str | None = None, password: str | None = None, certificate: Any = None
    ) -> User | None:
        if username is not None:  # `certificate` is then the client's application certificate
            if isinstance(password, bytes):
                password = password.decode("utf-8", "replace")
            ok = username in self.passwords and self.passwords[username] == password
            return User(role=UserRole.User, name=username) if ok else None
        if certificate is not None:
            der = certificate if isinstance(certificate, bytes) else uacrypto.der_from_x509(certificate)
            if der in self.certificates:
                return User(role=UserRole.User, name="certificate")
        return User(role=UserRole.User) if not (self.passwords or self.certificates) else None


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
    def __init__(
        self,
        host: str,
        port: int,
        devices: list[OpcuaSimDevice],
        step: float = 0.5,
        security: ServerSecurity | None = None,
    ):
        self.host, self.port = host, port
        self.security = security
        self.endpoint = f"opc.tcp://{host}:{port}"
        self.devices = {d.id: d for d in devices}
        for d in devices:
            d.sim = self
        self.step = step
        self.server: Server | None = None
        self._task: asyncio.Task[None] | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    def describe(self) -> list[str]:
        return [f"{d.id}: opcua {self.endpoint}, {len(d.entries)} variables" for d in self.devices.values()]

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        sec = self.security or ServerSecurity(none=True)
        users = _Users(sec.passwords, [pki.load_der(p) for p in sec.user_certificates])
        server = Server(user_manager=users)
        await server.init()
        server.set_endpoint(self.endpoint)
        server.set_server_name("edgegw simulator")
        uri = f"urn:edgegw:simulator:{self.port}"
        await server.set_application_uri(uri)
        policies = [ua.SecurityPolicyType.NoSecurity] if sec.none else []
        policies += [SECURITY_POLICIES[p] for p in sorted(sec.policies)]
        server.set_security_policy(policies)
        if sec.policies:
            sec.ensure_certificate(uri)
            await server.load_certificate(str(sec.certificate))
            await server.load_private_key(str(sec.private_key))
            server.set_certificate_validator(self._client_certificate)
        tokens: list[type] = []
        if not (sec.passwords or sec.user_certificates):
            tokens.append(ua.AnonymousIdentityToken)
        if sec.passwords:
            tokens.append(ua.UserNameIdentityToken)
        if sec.user_certificates:
            tokens.append(ua.X509IdentityToken)
        server.set_identity_tokens(tokens)
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

    async def _client_certificate(self, cert: Any, app: ua.ApplicationDescription) -> None:
        der = uacrypto.der_from_x509(cert)
        log.info("%s: client %s presents %s", self.endpoint, app.ApplicationUri, pki.describe(der))

    async def _ns(self, server: Server, index: int, uri: str | None = None) -> int:
        """The server's namespace `index` (registering placeholders up to it), or `uri`'s."""
        if uri is not None:
            return await server.register_namespace(uri)
        while len(await server.get_namespace_array()) <= index:
            n = len(await server.get_namespace_array())
            await server.register_namespace(f"urn:edgegw:simulator:ns{n}")
        return index

    async def _variable(self, server: Server, folder: Any, e: DictionaryEntry) -> Any:
        ref = parse_node(getattr(e.address, "node", None) or f"ns=1;s={e.id}")
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
