"""edgegw as an OPC UA server (`northbound.opcua_server`, DESIGN §5b), on asyncua's server.

The server runs in its own thread with its own event loop, so a client that browses 10,000
nodes, or one that reads slowly, never holds up polling. The gateway's side only appends to a
list under a lock (samples, device status, devices added and removed, in order) and wakes the
server's loop once per batch; the server's loop takes the whole list, skips every sample that a
later full sample of the same device supersedes (an OPC UA server serves current values), and
writes the values straight into the address space, notifying the subscriptions. Writes from
clients go the other way: the session hands them to the gateway's loop (the HTTP API's write
path) and answers with the device's result (session.py).

Security: the configured policies only, with the gateway's application certificate
(data_dir/pki/edgegw.der, made when missing); a client's certificate must be in
data_dir/pki/trusted/ (untrusted ones are saved in rejected/, never trusted on first use).
If the endpoint cannot be opened (the port is taken), /readyz says so and the server retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import threading
import time
from typing import Any

from asyncua import Server, ua
from asyncua.common.utils import ServiceError
from cryptography.hazmat.primitives.serialization import Encoding

from ...config.schema import OpcuaServerSettings
from ...dictionary import visible
from ...logs import RateLimited, event
from ...normalise import Sample
from ...opcua import pki
from ...opcua.types import SECURITY_POLICIES
from .. import DeviceInfo, SinkContext
from .notify import notify
from .session import Served, Users, session_class
from .space import (
    NULL,
    ServedDevice,
    SharedDataValue,
    device_items,
    folder_item,
    from_ms,
    share_attributes,
    to_variant,
)
from .status import status_code

log = logging.getLogger("edgegw.opcua_server")
for _noisy in ("asyncua", "asyncua.server", "asyncua.common", "asyncua.uaprotocol"):
    logging.getLogger(_noisy).setLevel(logging.CRITICAL)

BATCH_WINDOW = 0.02  # s: samples arriving together are applied together
MAX_PENDING = 200_000  # ops waiting for the server's thread; beyond it older samples are dropped
_YIELD_EVERY = 2000  # values applied between yields to the server's clients
_STOP = ("stop",)


class OpcuaServerSink:
    name = "opcua_server"

    def __init__(self, settings: OpcuaServerSettings, ctx: SinkContext):
        self.s = settings
        self.ctx = ctx
        self.pki = pki.Pki(ctx.data_dir / "pki")
        self.uri = f"urn:edgegw:{ctx.gateway_id}"
        self._lock = threading.Lock()
        self._ops: list[Any] = []
        self._signalled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._problem: str | None = "OPC UA server not started"
        self._known: dict[str, list[Any]] = {}  # device -> its served entries (to rebuild after a restart)
        self._states: dict[str, str] = {}  # device -> its last status, for a device's nodes made again
        self._devices: dict[str, ServedDevice] = {}
        self._served: Served | None = None
        self._pool: dict[tuple[object, ...], Any] = {}  # attribute values the nodes share
        self._ns = 0
        self._root = ua.NodeId(1, 0)
        self.dropped = 0
        self._limited = RateLimited(log, 60.0)

    # ---- the gateway's side (its event loop) ----

    def _post(self, op: Any) -> None:
        with self._lock:
            if len(self._ops) >= MAX_PENDING:
                kept = [o for o in self._ops if not isinstance(o, Sample)]
                self.dropped += len(self._ops) - len(kept)
                self._ops = kept
            self._ops.append(op)
            if self._signalled:
                return
            self._signalled = True
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            with contextlib.suppress(RuntimeError):  # the server's loop has ended
                loop.call_soon_threadsafe(wake.set)

    def add_device(self, device: DeviceInfo) -> None:
        entries = [e for e in device.points if visible(e, self.s.max_classification)]
        self._post(("add", device.id, entries))

    def remove_device(self, device: str, reason: str) -> None:
        self._post(("remove", device))

    def submit(self, sample: Sample) -> None:
        self._post(sample)

    def device_status(self, device: str, state: str, reason: str | None) -> None:
        self._post(("status", device, state))

    def device_alarms(self, device: str, active: list[dict[str, Any]]) -> None:
        return None  # alarms are MQTT events (P/G/D/alarm, retained P/G/D/alarms)

    def publish_event(self, suffix: str, body: dict[str, Any]) -> None:
        return None

    def problem(self) -> str | None:
        return self._problem

    async def start(self) -> None:
        """The server starts on its thread; it listens once the address space is built (until
        then /readyz says it is starting)."""
        self._problem = "OPC UA server starting"
        self._thread = threading.Thread(
            target=self._main, args=(asyncio.get_running_loop(),), name="edgegw-opcua-server", daemon=True
        )
        self._thread.start()

    async def stop(self, devices: list[str]) -> None:
        self._post(_STOP)
        thread = self._thread
        if thread is not None:
            await asyncio.to_thread(thread.join, 10.0)

    async def replace(self, settings: OpcuaServerSettings, ctx: SinkContext) -> OpcuaServerSink:
        await self.stop([])  # the endpoint is released for the successor
        return OpcuaServerSink(settings, ctx)

    async def _write(self, device: str, point: str, value: object, who: str) -> object:
        return await self.ctx.write(device, point, value, who, "opcua")

    # ---- the server's thread ----

    def _main(self, gateway_loop: asyncio.AbstractEventLoop) -> None:
        try:
            asyncio.run(self._serve(gateway_loop))
        except Exception as exc:  # never silently: /readyz and the log say the server is gone
            self._problem = f"OPC UA server stopped: {type(exc).__name__}: {exc}"[:300]
            event(log, logging.ERROR, "OPC UA server stopped", error=self._problem)

    async def _serve(self, gateway_loop: asyncio.AbstractEventLoop) -> None:
        self._wake = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._wake.set()  # whatever was posted before the loop existed
        delay = 1.0
        while True:
            server: Server | None = None
            try:
                server = await self._open(gateway_loop)
                # the address space is complete before the endpoint opens: a client that
                # connects at once finds every node
                started = time.monotonic()
                for device, entries in list(self._known.items()):
                    await self._apply(server, [("add", device, entries)])
                if await self._apply(server, self._take()):
                    return
                await server.start()
            except Exception as exc:
                self._problem = f"OPC UA server cannot open {self.s.endpoint}: {_short(exc)}"
                self._limited.log(
                    "open", logging.ERROR, "OPC UA server cannot open its endpoint", error=self._problem
                )
                self._devices.clear()
                if server is not None:
                    with contextlib.suppress(Exception):
                        await server.stop()
                if await self._idle(delay):
                    return
                delay = min(delay * 2, 30.0)
                continue
            delay = 1.0
            try:
                self._problem = None
                event(
                    log,
                    logging.INFO,
                    "OPC UA server listening",
                    endpoint=self.s.endpoint,
                    security=",".join(f"{p.policy}/{p.mode}" for p in self.s.security),
                    users=len(self.s.users),
                    anonymous=self.s.anonymous,
                    devices=len(self._devices),
                    variables=sum(len(d.points) for d in self._devices.values()),
                    build_s=round(time.monotonic() - started, 2),
                )
                if await self._pump(server):
                    return
            except Exception as exc:  # the server is made again; the devices are kept in _known
                self._problem = f"OPC UA server failed: {type(exc).__name__}: {_short(exc)}"
                event(log, logging.ERROR, "OPC UA server failed; starting it again", error=self._problem)
            finally:
                self._devices.clear()
                with contextlib.suppress(Exception):
                    await server.stop()
            if await self._idle(delay):
                return

    async def _idle(self, seconds: float) -> bool:
        """While the endpoint cannot be opened: keep track of devices, drop samples. True: stop."""
        assert self._wake is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)
        self._wake.clear()
        for op in self._take():
            if op is _STOP:
                return True
            if isinstance(op, tuple) and op[0] == "add":
                self._known[op[1]] = op[2]
            elif isinstance(op, tuple) and op[0] == "status":
                self._states[op[1]] = op[2]
            elif isinstance(op, tuple) and op[0] == "remove":
                self._known.pop(op[1], None)
                self._states.pop(op[1], None)
        return False

    def _take(self) -> list[Any]:
        with self._lock:
            ops, self._ops = self._ops, []
            self._signalled = False
        return ops

    async def _open(self, gateway_loop: asyncio.AbstractEventLoop) -> Server:
        """The server with its security, users and namespace, not yet listening."""
        s = self.s
        passwords: dict[str, tuple[str, str]] = {
            u.username: (u.password.get_secret_value(), str(u.access)) for u in s.users
        }
        users = Users(passwords, s.anonymous == "read")
        self._served = Served({}, {}, users, self._write, gateway_loop)
        self._pool = {}
        server = Server(user_manager=users)
        edge_session = session_class(self._served)
        iserver = server.iserver

        def create_session(name: str, user: Any = None, external: bool = False) -> Any:
            kwargs = {"user": user} if user is not None else {}
            return edge_session(
                iserver, iserver.aspace, iserver.subscription_service, name, external=external, **kwargs
            )

        iserver.create_session = create_session
        await server.init()
        server.set_endpoint(s.endpoint)
        server.set_server_name(s.server_name or f"edgegw {self.ctx.gateway_id}")
        secured = [p for p in s.security if p.policy != "None"]
        app_uri = self.uri
        if secured:
            if not self.pki.certificate.exists() or not self.pki.private_key.exists():
                pki.create_certificate(self.pki.certificate, self.pki.private_key, self.uri)
                event(
                    log,
                    logging.INFO,
                    "OPC UA application certificate created",
                    file=str(self.pki.certificate),
                )
            app_uri = pki.uri_of(self.pki.certificate) or self.uri
        await server.set_application_uri(app_uri)
        server.set_security_policy([SECURITY_POLICIES[(p.policy, p.mode or "None")] for p in s.security])
        if secured:
            await server.load_certificate(str(self.pki.certificate))
            await server.load_private_key(str(self.pki.private_key))
            server.set_certificate_validator(self._check_client)
        tokens: list[type] = [ua.UserNameIdentityToken] if s.users else []
        if s.anonymous == "read":
            tokens.append(ua.AnonymousIdentityToken)
        server.set_identity_tokens(tokens)
        self._ns = await server.register_namespace(self.uri)
        self._root = ua.NodeId(1, self._ns)
        folder = folder_item(self._root, self.ctx.gateway_id, self._ns, ua.NodeId(ua.ObjectIds.ObjectsFolder))
        _check_added(await iserver.isession.add_nodes([folder]))
        return server

    async def _check_client(self, cert: Any, app: ua.ApplicationDescription) -> None:
        der = cert.public_bytes(Encoding.DER)
        if pki.is_trusted(der, self.pki):
            return
        saved = pki.keep_rejected(der, self.pki, "client")
        self._limited.log(
            f"client {pki.thumbprint(der)}",
            logging.WARNING,
            "OPC UA client refused: its certificate is not trusted",
            client=str(app.ApplicationUri)[:200],
            certificate=pki.describe(der),
            saved=str(saved),
            trust=f"check the thumbprint on the client, then move the file into {self.pki.trusted}/",
        )
        raise ServiceError(ua.StatusCodes.BadCertificateUntrusted)

    async def _pump(self, server: Server) -> bool:
        """Apply what the gateway posts until it says stop (True)."""
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            ops = self._take()
            if await self._apply(server, ops):
                return True
            await asyncio.sleep(BATCH_WINDOW)

    async def _apply(self, server: Server, ops: list[Any]) -> bool:
        # a sample is skipped when a later full sample of its device is in the same batch
        last_full: dict[str, int] = {}
        for i, op in enumerate(ops):
            if isinstance(op, Sample) and op.full:
                last_full[op.device] = i
        now = dt.datetime.now(dt.UTC)
        applied = 0
        for i, op in enumerate(ops):
            if isinstance(op, Sample):
                if last_full.get(op.device, -1) > i:
                    continue
                applied += await self._values(op, now)
                if applied >= _YIELD_EVERY:
                    applied = 0
                    await asyncio.sleep(0)
            elif op is _STOP:
                return True
            elif op[0] == "status":
                self._states[op[1]] = op[2]
                await self._status(op[1], op[2], now)
            elif op[0] == "add":
                self._known[op[1]] = op[2]
                try:
                    await self._add(server, op[1], op[2])
                except Exception as exc:  # the device is not served; the others are
                    event(
                        log,
                        logging.ERROR,
                        "OPC UA server: cannot add the device's nodes",
                        device=op[1],
                        error=_short(exc),
                    )
            elif op[0] == "remove":
                self._known.pop(op[1], None)
                self._states.pop(op[1], None)
                await self._remove(server, op[1])
        return False

    async def _values(self, sample: Sample, now: dt.datetime) -> int:
        dev = self._devices.get(sample.device)
        if dev is None:
            return 0
        points = dev.points
        stamp = from_ms(sample.ts)
        n = 0
        for r in sample.readings:
            sp = points.get(r.id)
            if sp is None or sp.value is None:
                continue  # above max_classification
            code = status_code(r.q, r.reason)
            when = stamp if r.ts is None else from_ms(r.ts)
            try:
                variant = NULL if r.v is None else to_variant(r.v, sp.vtype, sp.is_int)
            except (TypeError, ValueError, OverflowError):
                variant, code = NULL, ua.StatusCode(ua.StatusCodes.BadTypeMismatch)
            dv = SharedDataValue(variant, code, when, now)
            attr = sp.value
            attr.value = dv
            if attr.datachange_callbacks:
                await notify(attr.datachange_callbacks, dv)
            n += 1
        return n

    async def _status(self, device: str, state: str, now: dt.datetime) -> None:
        dev = self._devices.get(device)
        if dev is None or dev.status_value is None:
            return
        dv = SharedDataValue(ua.Variant(state, ua.VariantType.String), ua.StatusCode(), now, now)
        dev.status_value.value = dv
        await notify(dev.status_value.datachange_callbacks, dv)

    async def _add(self, server: Server, device: str, entries: list[Any]) -> None:
        if device in self._devices:
            await self._remove(server, device)
        served, items, texts = device_items(device, entries, self._ns, self._root)
        _check_added(await server.iserver.isession.add_nodes(items))
        aspace = server.iserver.aspace
        share_attributes(aspace, served.nodes, self._pool)
        assert self._served is not None
        for sp in served.points.values():
            node = aspace.get(sp.node)
            sp.value = node.attributes[ua.AttributeIds.Value] if node is not None else None
            self._served.points[sp.node] = (device, sp)
        if served.status is not None:
            node = aspace.get(served.status)
            served.status_value = node.attributes[ua.AttributeIds.Value] if node is not None else None
        self._served.texts.update(texts)
        self._devices[device] = served
        if device in self._states:
            now = dt.datetime.now(dt.UTC)
            await self._status(device, self._states[device], now)

    async def _remove(self, server: Server, device: str) -> None:
        served = self._devices.pop(device, None)
        if served is None or self._served is None:
            return
        for sp in served.points.values():
            self._served.points.pop(sp.node, None)
            self._served.texts.pop(sp.node, None)
        items = [ua.DeleteNodesItem(NodeId=n, DeleteTargetReferences=True) for n in reversed(served.nodes)]
        await server.iserver.isession.delete_nodes(ua.DeleteNodesParameters(NodesToDelete=items))


def _check_added(results: list[ua.AddNodesResult]) -> None:
    for r in results:
        if not r.StatusCode.is_good():
            raise RuntimeError(f"adding a node failed: {r.StatusCode.name}")


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def create(settings: OpcuaServerSettings, ctx: SinkContext) -> OpcuaServerSink:
    return OpcuaServerSink(settings, ctx)
