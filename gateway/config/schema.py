"""The one schema of edgegw's config file (the README's "Config file" and docs/config-reference.md).

It validates, it documents (`edgegw schema` prints its JSON Schema) and it is what
docs/config-reference.md is generated from. The device union and the point-address fields come
from the protocol plugins of `drivers/registry.py`. Checks that span several keys (duplicate
ids, overlapping addresses, unknown models, units) live in `gateway.config.checks`.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from edgegw.drivers import registry
from edgegw.identifier.settings import IdentifierSettings
from pydantic import ConfigDict, Field, FiniteFloat, SecretStr, create_model, field_validator, model_validator

from . import base
from .base import MODEL_ID, Classification, DeviceBase, Model, PointBase, Strict
from .types import BufferSize, Duration, KeepAlive


def _point_fields() -> type[PointBase]:
    fields: dict[str, Any] = {}
    for plugin in registry.plugins():
        model = plugin.address_model()
        if plugin.address_key is not None and model is not None:
            fields[plugin.address_key] = (
                model | None,
                Field(None, description=f"the point's address on {', '.join(plugin.protocols)} devices"),
            )
    made: type[PointBase] = create_model("PointFields", __base__=PointBase, **fields)
    made.__doc__ = PointBase.__doc__
    return made


def _device_models() -> tuple[type[DeviceBase], ...]:
    return tuple(m for plugin in registry.plugins() for m in plugin.device_models())


if TYPE_CHECKING:
    PointFields = PointBase
    Device = DeviceBase
else:
    PointFields = _point_fields()
    _ns = {"PointFields": PointFields}
    for _m in (Model, DeviceBase, *_device_models()):
        _m.model_rebuild(force=True, _types_namespace=_ns)
    base.PointFields = PointFields
    Device = Annotated[Union[_device_models()], Field(discriminator="protocol")]  # noqa: UP007


class Location(Strict):
    model_config = ConfigDict(extra="allow")
    enterprise: str | None = None
    site: str | None = None
    area: str | None = None
    line: str | None = None


class GatewaySettings(Strict):
    id: str = Field(pattern=r"^[a-z0-9_-]+$", max_length=64, description="used in MQTT topics and client ids")
    data_dir: str = Field("./var", description="durable queues, sequence numbers, certificates")
    location: Location = Field(default_factory=Location, description="enterprise, site, area, line, …")
    log_level: Literal["debug", "info", "warning", "error"] = "info"


class TlsFiles(Strict):
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    insecure: bool = Field(False, description="skip server host name check (test benches only)")


class QueueSettings(Strict):
    """The durable queue under data_dir: what MQTT, InfluxDB and identifier registrations wait
    in while their peer is away."""

    max_bytes: BufferSize = Field(512 * 1024**2, description="store-and-forward size on disk (at least 1MiB)")
    fsync: Literal["off", "normal", "full"] = Field(
        "normal", description="normal survives a process kill; full also survives power loss"
    )
    commit_interval: Duration = Field(0.02, description="batch window of queue commits")


Replay = Literal["interleaved", "ordered"]
INFLIGHT_DESCRIPTION = "unacknowledged messages at once"
REPLAY_DESCRIPTION = (
    "after an outage: interleaved sends live data at once and the backlog beside it; "
    "ordered sends the backlog first, so each device's seq arrives strictly increasing"
)
REPLAY_RATE_DESCRIPTION = "backlog messages per second after an outage; 0 = as fast as acknowledged"


class BufferSettings(QueueSettings):
    """The old place of the queue's settings (before `queue:`), still accepted."""

    inflight: int = Field(256, ge=1, le=65535, description=INFLIGHT_DESCRIPTION)
    replay: Replay = Field("interleaved", description=REPLAY_DESCRIPTION)
    replay_rate: FiniteFloat = Field(2000.0, ge=0, description=REPLAY_RATE_DESCRIPTION)


class MqttSettings(Strict):
    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    client_id: str | None = Field(None, description="default edgegw-<gateway id>")
    tls: TlsFiles | None = None
    username: str | None = None
    password: SecretStr | None = None
    qos: Literal[0, 1, 2] = 1
    keepalive: KeepAlive = Field(30.0, description="1s to 65535s (whole seconds)")
    reconnect_min: Duration = Field(
        1.0, description="first reconnect delay; doubles per failure, with jitter"
    )
    reconnect_max: Duration = Field(30.0, description="cap of the reconnect delay")
    flush_timeout: Duration = Field(5.0, description="on stop, time allowed to send what is queued")
    topic_prefix: str = Field("edgegw", pattern=r"^[^#+]+$")
    max_classification: Classification = "important"
    commands: bool = False
    inflight: int = Field(256, ge=1, le=65535, description=INFLIGHT_DESCRIPTION)
    replay: Replay = Field("interleaved", description=REPLAY_DESCRIPTION)
    replay_rate: FiniteFloat = Field(2000.0, ge=0, description=REPLAY_RATE_DESCRIPTION)
    buffer: BufferSettings | None = Field(
        None,
        description="deprecated: max_bytes, fsync and commit_interval are now in queue:, inflight, "
        "replay and replay_rate in northbound.mqtt",
    )

    @model_validator(mode="after")
    def _reconnect_ordered(self) -> MqttSettings:
        if self.reconnect_min > self.reconnect_max:
            raise ValueError("reconnect_min is above reconnect_max")
        return self


class InfluxSettings(Strict):
    url: str = Field(pattern=r"^https?://", description="e.g. http://127.0.0.1:8086")
    org: str
    bucket: str
    token: SecretStr | None = None
    max_classification: Classification = "important"
    batch_size: int = Field(5000, ge=1, le=100000, description="lines per write")
    flush_interval: Duration = Field(1.0, description="a partial batch is written after this long")
    timeout: Duration = Field(10.0, description="per write request")
    retry_max: Duration = Field(60.0, description="cap of the retry delay while InfluxDB fails")
    ca: str | None = Field(None, description="CA file for an https url")
    verify_tls: bool = True


class SparkplugSettings(Strict):
    """A Sparkplug B 3.0 edge node: spBv1.0 topics, protobuf payloads, births and deaths, and
    the durable queue's history sent as historical after the births."""

    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    client_id: str | None = Field(None, description="default edgegw-<gateway id>-spb")
    tls: TlsFiles | None = None
    username: str | None = None
    password: SecretStr | None = None
    keepalive: KeepAlive = Field(30.0, description="1s to 65535s (whole seconds)")
    reconnect_min: Duration = Field(
        1.0, description="first reconnect delay; doubles per failure, with jitter"
    )
    reconnect_max: Duration = Field(30.0, description="cap of the reconnect delay")
    flush_timeout: Duration = Field(5.0, description="on stop, time allowed to send what is queued")
    group_id: str = Field(pattern=r"^[^/#+]+$", description="the Sparkplug group of this edge node")
    edge_node_id: str | None = Field(None, pattern=r"^[^/#+]+$", description="default: gateway.id")
    primary_host_id: str | None = Field(
        None, pattern=r"^[^/#+]+$", description="publish only while this host's STATE is online"
    )
    max_classification: Classification = "important"
    commands: bool = Field(False, description="true: DCMD writes rw points (the HTTP API's checks and log)")
    inflight: int = Field(256, ge=1, le=65535, description=INFLIGHT_DESCRIPTION)

    @model_validator(mode="after")
    def _reconnect_ordered(self) -> SparkplugSettings:
        if self.reconnect_min > self.reconnect_max:
            raise ValueError("reconnect_min is above reconnect_max")
        return self


class UaSecurity(Strict):
    """One security policy and mode the OPC UA server offers."""

    policy: Literal["None", "Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss"]
    mode: Literal["None", "Sign", "SignAndEncrypt"] | None = Field(
        None, description="Sign or SignAndEncrypt; with policy None, None (or left out)"
    )

    @model_validator(mode="after")
    def _mode_fits(self) -> UaSecurity:
        if self.policy == "None":
            if self.mode not in (None, "None"):
                raise ValueError(f"policy None has no mode {self.mode}: give mode None or leave it out")
            self.mode = "None"
        elif self.mode in (None, "None"):
            raise ValueError(f"policy {self.policy} needs mode Sign or SignAndEncrypt")
        return self


class UaUser(Strict):
    username: str = Field(min_length=1, max_length=256)
    password: SecretStr = Field(description="from the environment only: `${NAME}`")
    access: Literal["read", "write"] = Field("read", description="write: may write `rw` points")


class OpcuaServerSettings(Strict):
    """edgegw as an OPC UA server: every collected point under Objects/<gateway>/<device>."""

    endpoint: str = Field(
        "opc.tcp://127.0.0.1:4840/edgegw",
        description="opc.tcp://host:port/path; loopback by default, 0.0.0.0 for every interface",
    )
    security: list[UaSecurity] = Field(
        default_factory=lambda: [UaSecurity(policy="Basic256Sha256", mode="SignAndEncrypt")],
        min_length=1,
        description="the policies offered; None only when listed",
    )
    users: list[UaUser] = Field(default_factory=list, description="user name/password identities")
    anonymous: Literal["none", "read"] = Field("none", description="read: sessions without a user may read")
    max_classification: Classification = "important"
    server_name: str | None = Field(None, description="default: edgegw <gateway id>")

    @model_validator(mode="after")
    def _someone_may_connect(self) -> OpcuaServerSettings:
        if not self.users and self.anonymous == "none":
            raise ValueError("nobody can open a session: list users, or set anonymous: read")
        names = [u.username for u in self.users]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"user {dup[0]} is listed twice")
        pairs = [(s.policy, s.mode) for s in self.security]
        if len(set(pairs)) != len(pairs):
            raise ValueError("a security policy and mode is listed twice")
        return self

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, v: str) -> str:
        m = re.fullmatch(r"opc\.tcp://(\[[0-9A-Fa-f:.]+\]|[^:/\s\[\]]+):(\d{1,5})(/\S*)?", v)
        if m is None:
            raise ValueError(f"'{v[:80]}' is not an endpoint: write opc.tcp://host:port/path")
        if not 1 <= int(m.group(2)) <= 65535:
            raise ValueError(f"port {m.group(2)} is not in 1..65535")
        return v


class Northbound(Strict):
    mqtt: MqttSettings | None = None
    influxdb: InfluxSettings | None = None
    sparkplug: SparkplugSettings | None = None
    opcua_server: OpcuaServerSettings | None = None


class ApiTls(Strict):
    cert: str
    key: str


class ApiSettings(Strict):
    listen: str = Field(
        "127.0.0.1:8080", pattern=r"^[^:]+:\d+$|^\[.*\]:\d+$", description="host:port; loopback by default"
    )
    token: SecretStr | None = Field(
        None, description="Bearer token for writes (write-back is off without it), and for reads off loopback"
    )
    read_requires_token: bool = Field(False, description="also require the token for reads on loopback")
    tls: ApiTls | None = None
    trusted_hosts: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:*\[\]-]+$")]] = Field(
        default_factory=list,
        description="more names (Host header) the API answers to, besides the listen address, localhost, "
        "127.0.0.1 and ::1 (and, listening on all interfaces, any address and the machine's name); "
        "`*.example.com` takes subdomains. Others get 421: a web page cannot reach the API by "
        "re-pointing its own name at the gateway (DNS rebinding)",
    )
    max_streams: int = Field(
        8, ge=1, le=256, description="live feeds (open status pages) at once; more get 503"
    )

    @property
    def host(self) -> str:
        return self.listen.rsplit(":", 1)[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rsplit(":", 1)[1])

    @property
    def loopback(self) -> bool:
        import ipaddress

        if self.host.lower() == "localhost":
            return True
        try:
            ip = ipaddress.ip_address(self.host.split("%", 1)[0])
        except ValueError:
            return False  # a name other than localhost may resolve to anything
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return ip.is_loopback

    @model_validator(mode="after")
    def _token_off_loopback(self) -> ApiSettings:
        if not self.loopback and self.token is None:
            raise ValueError(
                f"listening on {self.host} (not loopback) needs api.token: "
                "without it anyone on the network could read the plant's data"
            )
        return self


class GatewayConfig(Strict):
    """The whole config file."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"$schema": "https://json-schema.org/draft/2020-12/schema"},
        title="edgegw config",
    )

    include: list[str] | str | None = Field(None, description="files (globs) whose models merge in")
    gateway: GatewaySettings
    models: dict[Annotated[str, Field(pattern=MODEL_ID)], Model] = Field(
        default_factory=dict, description="the device data dictionary: one entry per device type"
    )
    devices: list[Device] = Field(default_factory=list, description="discriminated by protocol:")
    northbound: Northbound = Field(default_factory=Northbound, description="mqtt:, influxdb:, sparkplug:")
    queue: QueueSettings = Field(
        default_factory=QueueSettings, description="the durable queue of MQTT, InfluxDB and identifiers"
    )
    identifier: IdentifierSettings | None = Field(None, description="secondary-node registration")
    api: ApiSettings | None = Field(None, description="local HTTP API")
