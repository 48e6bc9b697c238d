"""The OPC UA client plugin: `opcua` devices (asyncua, imported when used), and the `browse`
and `certs` commands."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from edgegw.drivers.plugin import (
    Checked,
    Context,
    Path_,
    PluginBase,
    Problem,
    Simulator,
    Target,
    TcpTarget,
)

from .config import OpcuaAddress, OpcuaDevice, OpcuaSecurity
from .syntax import node_problem

if TYPE_CHECKING:
    from edgegw.drivers.base import Driver
    from edgegw.gateway.config.base import DeviceBase
    from edgegw.gateway.dictionary import DictionaryEntry
    from pydantic import BaseModel

    from .driver import Security
    from .simulator import ServerSecurity


CERT_DAYS = 5 * 365 + 1  # a new application certificate's validity: five years


class OpcuaPlugin(PluginBase):
    name = "opcua"
    protocols = ("opcua",)
    address_key = "opcua"

    def device_models(self) -> Sequence[type[DeviceBase]]:
        return (OpcuaDevice,)

    def address_model(self) -> type[BaseModel]:
        return OpcuaAddress

    def check_device(self, dev: DeviceBase, path: Path_, points: list[DictionaryEntry]) -> Checked:
        assert isinstance(dev, OpcuaDevice)
        return Checked(_check_opcua(dev, path, points), [node_of(e) for e in points])

    def shared_key(self, dev: DeviceBase) -> tuple[object, ...] | None:
        return ()  # the checks look at the points and their nodes only

    def build_driver(
        self, ctx: Context, dev: DeviceBase, points: list[DictionaryEntry], plan: object
    ) -> Driver:
        from .driver import OpcuaDriver, OpcuaPoint, SubscriptionSettings, UserCertificate

        assert isinstance(dev, OpcuaDevice)
        c = dev.connection
        s = dev.subscription
        return OpcuaDriver(
            dev.id,
            c.endpoint,
            [OpcuaPoint(e.id, node_of(e), e.type) for e in points],
            timeout=c.timeout,
            subscribe=(
                SubscriptionSettings(
                    dev.poll.interval, s.sampling_interval, s.queue_size, s.deadband, s.deadband_type
                )
                if dev.mode == "subscribe"
                else None
            ),
            username=c.username,
            password=c.password.get_secret_value() if c.password else None,
            security=client_security(ctx, c.security),
            user_certificate=(
                UserCertificate(ctx.relative(c.user_certificate), ctx.relative(c.user_private_key))
                if c.user_certificate and c.user_private_key
                else None
            ),
        )

    def simulators(
        self,
        ctx: Context,
        devices: list[tuple[DeviceBase, list[DictionaryEntry], object]],
        bind: str,
        period: float,
    ) -> list[Simulator]:
        from edgegw.simulators.values import ValueGenerator

        from .simulator import OpcuaSimDevice, OpcuaSimulator, ServerSecurity

        by_endpoint: dict[int, list[OpcuaSimDevice]] = {}
        security: dict[int, ServerSecurity] = {}
        for dev, points, _ in devices:
            assert isinstance(dev, OpcuaDevice)
            port = urlsplit(dev.connection.endpoint).port or 4840
            gens = [ValueGenerator(dev.id, e, period) for e in points]
            by_endpoint.setdefault(port, []).append(OpcuaSimDevice(dev.id, points, gens))
            _offer(security.setdefault(port, ServerSecurity()), ctx, dev, port)
        return [
            OpcuaSimulator(bind, port, devs, step=min(0.5, period / 100), security=security[port])
            for port, devs in sorted(by_endpoint.items())
        ]

    def doctor_target(self, ctx: Context, dev: DeviceBase) -> Target | None:
        assert isinstance(dev, OpcuaDevice)
        rest = dev.connection.endpoint.split("://", 1)[-1].split("/", 1)[0]
        host, _, port = rest.rpartition(":")
        return TcpTarget(host.strip("[]"), int(port)) if port.isdigit() else TcpTarget(rest, 4840)

    def add_commands(self, sub: argparse._SubParsersAction[Any], load: Callable[[str], Any]) -> None:
        add_parsers(sub, load)


def add_parsers(sub: argparse._SubParsersAction[Any], load: Callable[[str], Any]) -> None:
    """`edgegw certs create` and `edgegw browse`; their code (asyncua, cryptography) loads when run."""

    def cmd_certs(a: argparse.Namespace, load: Callable[[str], Any]) -> int:
        from .commands import cmd_certs

        return cmd_certs(a, load)

    def cmd_browse(a: argparse.Namespace, load: Callable[[str], Any]) -> int:
        from .commands import cmd_browse

        return cmd_browse(a, load)

    c = sub.add_parser("certs", help="the gateway's OPC UA application certificate")
    csub = c.add_subparsers(dest="certs_command", required=True)
    cc = csub.add_parser("create", help="make a self-signed application instance certificate and key")
    cc.add_argument("-c", "--config", help="the gateway's config: data_dir/pki and its application URI")
    cc.add_argument("--out", help="folder for edgegw.der and edgegw.pem (default data_dir/pki, or ./pki)")
    cc.add_argument("--uri", help="application URI (default urn:edgegw:<gateway id>)")
    cc.add_argument("--days", type=int, default=CERT_DAYS, help="validity (default 5 years)")
    cc.add_argument("--force", action="store_true", help="replace an existing certificate and key")
    cc.set_defaults(func=lambda a: cmd_certs(a, load))

    b = sub.add_parser("browse", help="walk an OPC UA server and print a device model config for it")
    b.add_argument("endpoint", help="opc.tcp://host:port")
    b.add_argument("--root", default="i=85", help="node to start from (default the Objects folder, i=85)")
    b.add_argument("--depth", type=int, default=6, help="levels below the root (default 6)")
    b.add_argument("--model", help="model id to write (default from the root's or endpoint's name)")
    b.add_argument("--device", default="opcua-1", help="device id of the example device")
    b.add_argument("--security", metavar="POLICY:MODE", help="e.g. Basic256Sha256:SignAndEncrypt")
    b.add_argument(
        "-c", "--config", help="a gateway config whose data_dir/pki (certificate, trust list) to use"
    )
    b.add_argument("--pki", help="pki folder (default data_dir/pki with -c, else ./pki)")
    b.add_argument("--server-certificate", help="trust exactly this server certificate (pinned)")
    b.add_argument("--username", help="user name; the password is read from $OPCUA_PASSWORD or asked")
    b.add_argument("--timeout", type=float, default=10.0)
    b.add_argument("-o", "--output", help="write the YAML here instead of standard output")
    b.set_defaults(func=lambda a: cmd_browse(a, load))


def node_of(e: DictionaryEntry) -> str:
    """The node a point reads: its `opcua: {node: …}` (checked to be there by `validate`)."""
    return e.address.node if isinstance(e.address, OpcuaAddress) else ""


def client_security(ctx: Context, sec: OpcuaSecurity | None) -> Security | None:
    if sec is None:
        return None
    from edgegw.gateway.opcua.pki import Pki, application_uri

    from .driver import Security

    store = Pki(ctx.data_dir / "pki")
    own = sec.certificate is None
    return Security(
        sec.policy,
        sec.mode,
        store.certificate if own else ctx.relative(sec.certificate or ""),
        store.private_key if own else ctx.relative(sec.private_key or ""),
        store,
        ctx.relative(sec.server_certificate) if sec.server_certificate else None,
        application_uri(ctx.gateway_id),
        create=own,
    )


def _offer(sec: ServerSecurity, ctx: Context, dev: OpcuaDevice, port: int) -> None:
    """Add what `dev` connects with to what its simulated endpoint offers and accepts."""
    c = dev.connection
    if c.security is None:
        sec.none = True
    else:
        sec.policies.add((c.security.policy, c.security.mode))
        store = ctx.data_dir / "simulator-pki"
        sec.certificate, sec.private_key = store / f"opcua-{port}.der", store / f"opcua-{port}.pem"
        if c.security.server_certificate:
            sec.publish_to.append(ctx.relative(c.security.server_certificate))
    if c.username is not None:
        sec.passwords[c.username] = c.password.get_secret_value() if c.password else ""
    if c.user_certificate is not None:
        sec.user_certificates.append(ctx.relative(c.user_certificate))


def _check_opcua(dev: OpcuaDevice, device_path: Path_, points: list[DictionaryEntry]) -> list[Problem]:
    out: list[Problem] = []
    c = dev.connection
    where = (*device_path, "connection")
    if c.security is not None and (c.security.certificate is None) != (c.security.private_key is None):
        missing = "private_key" if c.security.private_key is None else "certificate"
        out.append(
            (
                (*where, "security", missing),
                "give certificate and private_key together (or neither: the gateway's own "
                "certificate in data_dir/pki is used, made when absent)",
            )
        )
    if (c.user_certificate is None) != (c.user_private_key is None):
        missing = "user_private_key" if c.user_private_key is None else "user_certificate"
        out.append(((*where, missing), "give user_certificate and user_private_key together"))
    if c.user_certificate is not None and c.username is not None:
        out.append(
            ((*where, "user_certificate"), "one user identity: a username or a user certificate, not both")
        )
    if c.user_certificate is not None and c.security is None:
        out.append(
            (
                (*where, "user_certificate"),
                "a certificate user identity needs a secured channel: add connection.security",
            )
        )
    if c.password is not None and c.username is None:
        out.append(((*where, "password"), "a password without a username"))
    if c.username is not None and c.password is None:
        out.append(((*where, "username"), "a username without a password"))
    for e in points:
        if not isinstance(e.address, OpcuaAddress):
            out.append((e.path, f"point '{e.id}' has no opcua: {{node: …}}"))
            continue
        problem = node_problem(e.address.node)
        if problem is not None:
            out.append(((*e.where("address"), "node"), problem))
    return out


PLUGIN = OpcuaPlugin()
