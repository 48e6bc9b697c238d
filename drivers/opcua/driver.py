"""OPC UA driver on asyncua: batched Read in poll mode, monitored items in subscribe mode.

Connecting resolves every point's node once (ids with `nsu=` through the server's namespace
array, browse paths through TranslateBrowsePathsToNodeIds-like walks of the address space);
a node that cannot be resolved marks only its point bad (BadNodeIdUnknown), never the device.
asyncua's watchdog reads the server state every second (session keep-alive); a lost server
makes the device unreachable, and the runner reconnects with capped backoff, creating the
subscription again on a new session.

In subscribe mode each Publish response is one batch: every notification it carries becomes
one sample (points that did not change are left out), with each point's SourceTimestamp.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asyncua import Client, ua
from asyncua.common.subscription import DataChangeEvent
from asyncua.crypto import security_policies
from edgegw.gateway.opcua import pki

from ..base import (
    ABSENT,
    DeviceUnreachable,
    DriverBase,
    LatencyHistogram,
    PointError,
    WriteFailed,
    WriteTimeout,
)
from .nodes import NodeRef, parse_node
from .values import source_ms, status_name, to_point, variant

for noisy in ("asyncua", "asyncua.client", "asyncua.common"):
    logging.getLogger(noisy).setLevel(logging.CRITICAL)


@dataclass(slots=True)
class OpcuaPoint:
    id: str
    node: str
    type: str


@dataclass(slots=True)
class SubscriptionSettings:
    publishing_interval: float  # seconds
    sampling_interval: float | None
    queue_size: int = 1
    deadband: float | None = None
    deadband_type: str = "absolute"


POLICIES = {
    "Basic256Sha256": security_policies.SecurityPolicyBasic256Sha256,
    "Aes128_Sha256_RsaOaep": security_policies.SecurityPolicyAes128Sha256RsaOaep,
    "Aes256_Sha256_RsaPss": security_policies.SecurityPolicyAes256Sha256RsaPss,
}
MODES = {"Sign": ua.MessageSecurityMode.Sign, "SignAndEncrypt": ua.MessageSecurityMode.SignAndEncrypt}


@dataclass(slots=True)
class Security:
    """A secured channel: policy and mode, the gateway's certificate and key, and how the
    server's certificate is trusted (pinned file, else pki/trusted/)."""

    policy: str
    mode: str
    certificate: Path
    private_key: Path
    pki: pki.Pki
    server_certificate: Path | None = None
    application_uri: str = "urn:edgegw"
    create: bool = False  # the default certificate in data_dir/pki: made when absent


@dataclass(slots=True)
class UserCertificate:
    certificate: Path
    private_key: Path


# nodes per Read request: well under the MaxNodesPerRead servers commonly set (1000 or more),
# and small enough that a poll's requests pipeline (see read())
_READ_BATCH = 250


class OpcuaDriver(DriverBase):
    def __init__(
        self,
        device: str,
        endpoint: str,
        points: list[OpcuaPoint],
        *,
        timeout: float = 4.0,
        subscribe: SubscriptionSettings | None = None,
        username: str | None = None,
        password: str | None = None,
        security: Security | None = None,
        user_certificate: UserCertificate | None = None,
    ):
        self.device = device
        self.endpoint = endpoint
        self.points = points
        self.refs: list[NodeRef] = [parse_node(p.node) for p in points]
        self.timeout = timeout
        self.subscription = subscribe
        self.stream = subscribe is not None
        self.idle_timeout: float | None = None
        self.username, self.password = username, password
        self.security = security
        self.user_certificate = user_certificate
        self.request_count = 0
        self.error_count = 0
        self.latency = LatencyHistogram()
        self.source_ts: list[int | None] = [None] * len(points)
        self._by_id = {p.id: i for i, p in enumerate(points)}
        self._client: Client | None = None
        self._nodes: list[ua.NodeId | None] = []
        self._unresolved: dict[int, str] = {}
        self._sub: Any = None
        self._handles: dict[Any, int] = {}
        self._lost: str | None = None
        self._wake = asyncio.Event()

    @property
    def connected(self) -> bool:
        return self._client is not None and self._lost is None

    async def connect(self) -> None:
        await self.close()
        client = Client(self.endpoint, timeout=self.timeout, watchdog_intervall=1.0)
        client.application_uri = "urn:edgegw"
        client.name = client.description = "edgegw"
        if self.username:
            client.set_user(self.username)
            client.set_password(self.password or "")
        client.connection_lost_callback = self._on_lost
        try:
            if self.security is not None:
                await asyncio.wait_for(self._secure(client, self.security), self.timeout + 1)
            if self.user_certificate is not None:
                await self._user_identity(client, self.user_certificate)
            await asyncio.wait_for(client.connect(), self.timeout + 1)
        except DeviceUnreachable:
            await _quietly(client.disconnect())
            raise
        except (OSError, TimeoutError) as exc:
            await _quietly(client.disconnect())
            raise DeviceUnreachable(f"cannot connect to {self.endpoint}: {_why(exc)}") from None
        except ua.UaStatusCodeError as exc:
            await _quietly(client.disconnect())
            raise DeviceUnreachable(self._refused(ua.StatusCode(exc.code))) from None
        except Exception as exc:  # asyncua raises assorted errors for refused handshakes
            await _quietly(client.disconnect())
            raise DeviceUnreachable(f"cannot connect to {self.endpoint}: {_why(exc)}") from None
        self._client = client
        self._lost = None
        self._wake = asyncio.Event()
        try:
            await self._resolve()
            if self.subscription is not None:
                await self._subscribe()
        except (OSError, TimeoutError, ua.UaError) as exc:
            await self.close()
            raise DeviceUnreachable(f"{self.endpoint}: {_why(exc)}") from None

    async def _secure(self, client: Client, sec: Security) -> None:
        """Pick the server's endpoint for exactly this policy and mode, check its certificate
        against the trust list, and secure the channel; any mismatch is an error, never a
        fallback to a weaker endpoint."""
        if sec.create and not sec.certificate.exists():
            await asyncio.to_thread(
                pki.create_certificate, sec.certificate, sec.private_key, sec.application_uri
            )
        for f, what in ((sec.certificate, "certificate"), (sec.private_key, "private key")):
            if not f.is_file():
                raise DeviceUnreachable(
                    f"the gateway's OPC UA {what} {f} does not exist (make one with `edgegw certs create`)"
                )
        try:
            problem = pki.expiry_problem(sec.certificate)
            client.application_uri = pki.uri_of(sec.certificate) or sec.application_uri
        except ValueError as exc:
            raise DeviceUnreachable(f"{sec.certificate} is not a certificate: {exc}") from None
        if problem:
            raise DeviceUnreachable(f"{problem} (make a new one with `edgegw certs create --force`)")
        policy = POLICIES[sec.policy]
        endpoints = await client.connect_and_get_server_endpoints()
        match = [
            ep
            for ep in endpoints
            if ep.SecurityPolicyUri == policy.URI and ep.SecurityMode == MODES[sec.mode]
        ]
        if not match:
            offered = sorted(
                {
                    f"{ep.SecurityPolicyUri.rpartition('#')[2]}/{ep.SecurityMode.name.rstrip('_')}"
                    for ep in endpoints
                }
            )
            raise DeviceUnreachable(
                f"{self.endpoint} has no {sec.policy}/{sec.mode} endpoint (it offers {', '.join(offered)})"
            )
        der = pki.first_certificate(match[0].ServerCertificate or b"")
        try:
            pki.check_server(der, sec.pki, sec.server_certificate, self.device, self.endpoint)
        except pki.Untrusted as exc:
            raise DeviceUnreachable(str(exc)) from None
        try:
            await client.set_security(
                policy,
                str(sec.certificate),
                str(sec.private_key),
                server_certificate=der,
                mode=MODES[sec.mode],
            )
        except ValueError as exc:
            raise DeviceUnreachable(f"cannot load {sec.certificate} / {sec.private_key}: {exc}") from None

    async def _user_identity(self, client: Client, user: UserCertificate) -> None:
        try:
            await client.load_client_certificate(str(user.certificate))
            await client.load_private_key(user.private_key)
        except FileNotFoundError as exc:
            raise DeviceUnreachable(f"user certificate file {exc.filename} does not exist") from None
        except ValueError as exc:
            raise DeviceUnreachable(f"cannot load the user certificate: {exc}") from None

    def _refused(self, code: ua.StatusCode) -> str:
        name = status_name(code)
        text = f"{self.endpoint} refused the session: {name}"
        if self.security is not None and name in (
            "BadSecurityChecksFailed",
            "BadCertificateUntrusted",
            "BadCertificateInvalid",
        ):
            text += (
                f" (the server must trust the gateway's certificate {self.security.certificate}: "
                "add it to the server's trusted certificates)"
            )
        elif name in ("BadUserAccessDenied", "BadIdentityTokenRejected", "BadIdentityTokenInvalid"):
            text += " (check the username and password or the user certificate)"
        return text

    async def _on_lost(self, exc: Exception) -> None:
        self._lost = f"connection to {self.endpoint} lost: {_why(exc)}"
        self._wake.set()

    async def close(self) -> None:
        client, self._client = self._client, None
        self._sub = None
        if client is not None:
            await _quietly(asyncio.wait_for(client.disconnect(), 2.0))

    async def _resolve(self) -> None:
        assert self._client is not None
        client = self._client
        nodes: list[ua.NodeId | None] = []
        self._unresolved = {}
        uris: list[str] | None = None
        for i, ref in enumerate(self.refs):
            if ref.node_id is not None and ref.namespace_uri is None:
                nodes.append(ref.node_id)
                continue
            if ref.namespace_uri is not None:
                if uris is None:
                    uris = await client.get_namespace_array()
                if ref.namespace_uri not in uris:
                    nodes.append(None)
                    self._unresolved[i] = (
                        f"BadNodeIdUnknown (namespace {ref.namespace_uri} not on the server)"
                    )
                    continue
                assert ref.node_id is not None
                nodes.append(
                    ua.NodeId(ref.node_id.Identifier, uris.index(ref.namespace_uri), ref.node_id.NodeIdType)
                )
                continue
            found = await self._walk(ref)
            nodes.append(found)
            if found is None:
                self._unresolved[i] = f"BadNoMatch (browse path {ref.text})"
        self._nodes = nodes

    async def _walk(self, ref: NodeRef) -> ua.NodeId | None:
        assert self._client is not None
        node = self._client.nodes.root
        for el in ref.path:
            children = await node.get_children()
            names = await asyncio.gather(*(c.read_browse_name() for c in children))
            match = next(
                (
                    c
                    for c, n in zip(children, names, strict=True)
                    if n.Name == el.name and el.ns in (None, n.NamespaceIndex)
                ),
                None,
            )
            if match is None:
                return None
            node = match
        return node.nodeid

    # ---- poll ----

    async def read(self) -> list[object]:
        if not self.connected:
            await self.connect()
        assert self._client is not None
        out: list[object] = [None] * len(self.points)
        for i, reason in self._unresolved.items():
            out[i] = PointError(reason)
        ids = [(i, n) for i, n in enumerate(self._nodes) if n is not None]
        chunks = [ids[k : k + _READ_BATCH] for k in range(0, len(ids), _READ_BATCH)]
        # the Read requests of one poll are pipelined: the server answers one while the next
        # is on its way and the previous answer is being converted here
        results = await asyncio.gather(*(self._read_chunk(c, out) for c in chunks), return_exceptions=True)
        failed = next((r for r in results if isinstance(r, BaseException)), None)
        if failed is not None and not isinstance(
            failed, OSError | TimeoutError | ua.UaError | ConnectionError
        ):
            raise failed  # a defect, not an unreachable server: the runner's guard reports it
        if failed is not None:
            self.error_count += 1
            reason = self._lost or f"read from {self.endpoint} failed: {_why(failed)}"
            await self.close()
            raise DeviceUnreachable(reason) from None
        return out

    async def _read_chunk(self, chunk: list[tuple[int, ua.NodeId]], out: list[object]) -> None:
        assert self._client is not None
        sent = time.monotonic()
        self.request_count += 1
        dvs = await self._client.uaclient.read_attributes([n for _, n in chunk], ua.AttributeIds.Value)
        self.latency.observe(time.monotonic() - sent)
        points = self.points
        for (i, _), dv in zip(chunk, dvs, strict=True):
            out[i] = to_point(dv, points[i].type)
            self.source_ts[i] = source_ms(dv)

    # ---- subscribe ----

    async def _subscribe(self) -> None:
        assert self._client is not None and self.subscription is not None
        s = self.subscription
        sub = await self._client.create_subscription(
            s.publishing_interval * 1000, None, queue_maxsize=100_000
        )
        await sub.__aenter__()
        self._sub = sub
        self._handles = {}
        sampling = (s.sampling_interval if s.sampling_interval is not None else s.publishing_interval) * 1000
        requests = []
        order = []
        for i, n in enumerate(self._nodes):
            if n is None:
                continue
            mfilter = None
            if s.deadband is not None and self.points[i].type not in ("string", "bool"):
                mfilter = ua.DataChangeFilter()
                mfilter.Trigger = ua.DataChangeTrigger.StatusValue
                mfilter.DeadbandType = 1 if s.deadband_type == "absolute" else 2
                mfilter.DeadbandValue = s.deadband
            node = self._client.get_node(n)
            requests.append(
                sub._make_monitored_item_request(
                    node, ua.AttributeIds.Value, mfilter, s.queue_size, ua.MonitoringMode.Reporting, sampling
                )
            )
            order.append((i, node))
        results = await sub.create_monitored_items(requests)
        for (i, node), res in zip(order, results, strict=True):
            if isinstance(res, ua.StatusCode):
                self._unresolved[i] = status_name(res)
            else:
                self._handles[node.nodeid] = i

    async def next_sample(self, timeout: float | None) -> tuple[list[object], int] | None:
        """The next Publish batch as values in point order (ABSENT for points not in it)."""
        if self._sub is None or self._client is None:
            raise DeviceUnreachable(self._lost or f"not connected to {self.endpoint}")
        if self._unresolved:  # report unresolvable nodes once, in the first sample
            first: list[object] = [ABSENT] * len(self.points)
            for i, reason in self._unresolved.items():
                first[i] = PointError(reason)
            self._unresolved = {}
            return first, time.time_ns() // 1_000_000
        if self._lost is not None:
            await self.close()
            raise DeviceUnreachable(self._lost)
        getter = asyncio.ensure_future(self._sub.next_event())
        lost = asyncio.ensure_future(self._wake.wait())
        try:
            done, _ = await asyncio.wait({getter, lost}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            lost.cancel()
        if getter not in done:
            getter.cancel()
            if self._lost is not None:
                await self.close()
                raise DeviceUnreachable(self._lost)
            return None
        events = [getter.result()]
        queue = self._sub._event_queue
        while queue is not None and not queue.empty():  # the rest of the same Publish response
            events.append(queue.get_nowait())
        values: list[object] = [ABSENT] * len(self.points)
        for ev in events:
            if not isinstance(ev, DataChangeEvent):
                continue
            at = self._handles.get(ev.node.nodeid)
            if at is None:
                continue
            dv = ev.data.monitored_item.Value
            values[at] = to_point(dv, self.points[at].type)
            self.source_ts[at] = source_ms(dv)
        self.request_count += 1
        return values, time.time_ns() // 1_000_000

    # ---- write-back ----

    async def write(self, point_id: str, raw_value: object) -> None:
        i = self._by_id[point_id]
        if not self.connected:
            try:
                await self.connect()
            except DeviceUnreachable as exc:
                raise WriteFailed(str(exc)) from None
        assert self._client is not None
        node = self._nodes[i]
        if node is None:
            raise WriteFailed(self._unresolved.get(i, "BadNodeIdUnknown"))
        try:
            dv = ua.DataValue(variant(self.points[i].type, raw_value))
        except ValueError as exc:
            raise WriteFailed(str(exc)) from None
        try:
            results = await self._client.uaclient.write_attributes([node], [dv], ua.AttributeIds.Value)
        except TimeoutError:
            raise WriteTimeout(f"no answer from {self.endpoint} within {self.timeout:g}s") from None
        except (OSError, ua.UaError, ConnectionError) as exc:
            await self.close()
            raise WriteFailed(f"write to {self.endpoint} failed: {_why(exc)}") from None
        if not results[0].is_good():
            raise WriteFailed(status_name(results[0]))


def _why(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return "timeout"
    text = str(exc) or type(exc).__name__
    return text if len(text) < 200 else text[:199] + "…"


async def _quietly(aw: Any) -> None:
    with contextlib.suppress(Exception):  # closing a connection that is already gone
        await aw
