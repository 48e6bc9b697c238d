"""The one schema of edgegw's config file (DESIGN.md section 4).

It validates, it documents (`edgegw schema` prints its JSON Schema) and it is what the
README's config reference is checked against. Checks that span several keys (duplicate ids,
overlapping addresses, unknown models, units) live in `gateway.config.checks`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, FiniteFloat, SecretStr, field_validator, model_validator

from .types import BufferSize, Duration, DurationOrZero, KeepAlive

PointType = Literal[
    "bool", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64", "string"
]
ByteOrder = Literal["ABCD", "DCBA", "BADC", "CDAB"]
Classification = Literal["general", "important", "core"]
Access = Literal["ro", "rw"]

POINT_ID = r"^[a-z0-9_]+$"
DEVICE_ID = r"^[a-z0-9_-]+$"
MODEL_ID = r"^[A-Za-z0-9_.-]+$"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class ModbusAddress(Strict):
    address: str | int = Field(
        description="hr:N, ir:N, co:N, di:N (0-based), hr:N.B for bit B, or Modicon 4xxxx/3xxxx/1xxxx/0xxxx"
    )

    @field_validator("address", mode="before")
    @classmethod
    def _no_float(cls, v: object) -> object:
        if isinstance(v, float):
            # YAML reads 40021.10 as 40021.1: bit 10 would silently become bit 1
            raise ValueError(f"write a register bit as a quoted string ('{v}' or 'hr:N.B'), not a number")
        return v


class OpcuaAddress(Strict):
    node: str = Field(description="ns=2;s=…, ns=2;i=…, nsu=<uri>;s=…, g=/b= forms, or a browse path")


class PointFields(Strict):
    """A point of the data dictionary. In a device's `points:` list, an entry whose id is a
    model point overrides only the fields it gives."""

    id: str = Field(pattern=POINT_ID, description="unique in its model/device")
    name: str | dict[str, str] | None = Field(None, description="{en: …, zh: …}")
    description: str | None = None
    type: PointType | None = Field(None, description="required unless inherited from the model")
    unit: str | None = Field(None, description="UNECE Rec 20 common code, e.g. CEL, BAR, KWT")
    range: tuple[FiniteFloat, FiniteFloat] | None = Field(
        None, description="engineering range; outside it the quality becomes 'uncertain'"
    )
    scale: FiniteFloat | None = Field(None, description="engineering = raw * scale + offset (default 1)")
    offset: FiniteFloat | None = Field(None, description="default 0")
    access: Access | None = Field(None, description="ro (default) | rw")
    deadband: FiniteFloat | None = Field(None, ge=0, description="with publish: on_change")
    semantic_id: str | None = None
    classification: Classification | None = Field(None, description="default general")
    length: int | None = Field(None, ge=1, le=123, description="string length in registers")
    byte_order: ByteOrder | None = Field(None, description="overrides the device's byte_order")
    modbus: ModbusAddress | None = None
    opcua: OpcuaAddress | None = None

    @field_validator("scale")
    @classmethod
    def _scale_not_zero(cls, v: float | None) -> float | None:
        if v == 0:
            raise ValueError(
                "must not be 0: every value would read as the offset, and a write would divide by 0"
            )
        return v

    @field_validator("range")
    @classmethod
    def _range_ordered(cls, v: tuple[float, float] | None) -> tuple[float, float] | None:
        if v is not None and v[0] > v[1]:
            raise ValueError(f"the minimum {v[0]:g} is above the maximum {v[1]:g}")
        return v


class Model(Strict):
    description: str | None = None
    manufacturer: str | None = None
    points: list[PointFields] = Field(default_factory=list)


class PollSettings(Strict):
    interval: Duration = Field(1.0, description="poll period, on monotonic deadlines")
    backoff_max: Duration = Field(30.0, description="cap of the retry back-off while offline")
    offline_after: int = Field(
        1, ge=1, le=100, description="consecutive failed polls before the device is offline"
    )


class DeviceBase(Strict):
    id: str = Field(pattern=DEVICE_ID)
    model: str | None = Field(None, description="a key of models:")
    description: str | None = None
    enabled: bool = True
    poll: PollSettings = Field(default_factory=PollSettings)
    publish: Literal["always", "on_change"] = "always"
    heartbeat: Duration = Field(60.0, description="with on_change: full snapshot this often")
    location: dict[str, str] | None = Field(None, description="overrides gateway.location keys")
    points: list[PointFields] = Field(default_factory=list)


class ReadPlannerSettings(Strict):
    max_registers: int = Field(125, ge=1, le=125, description="registers per read request")
    max_bits: int = Field(2000, ge=1, le=2000, description="coils/inputs per read request")
    max_gap: int = Field(16, ge=0, le=124, description="unused registers a request may read through")


class ModbusTcpConnection(Strict):
    host: str
    port: int = Field(502, ge=1, le=65535)
    unit_id: int = Field(1, ge=0, le=255)
    timeout: Duration = 1.0


class ModbusTcpDevice(DeviceBase):
    protocol: Literal["modbus-tcp"]
    connection: ModbusTcpConnection
    byte_order: ByteOrder = "ABCD"
    planner: ReadPlannerSettings = Field(default_factory=ReadPlannerSettings)


class SerialLine(Strict):
    port: str = Field(description="e.g. /dev/ttyUSB0 or /dev/serial/by-id/…")
    baudrate: int = Field(9600, ge=50, le=4_000_000)
    bytesize: Literal[5, 6, 7, 8] = 8
    parity: Literal["N", "E", "O", "M", "S"] = "N"
    stopbits: Literal[1, 1.5, 2] = 1


class ModbusRtuConnection(SerialLine):
    unit_id: int = Field(1, ge=1, le=247)
    timeout: Duration = 1.0
    inter_frame: DurationOrZero | None = Field(None, description="pause between frames on the bus")


class ModbusRtuDevice(DeviceBase):
    protocol: Literal["modbus-rtu"]
    connection: ModbusRtuConnection
    byte_order: ByteOrder = "ABCD"
    planner: ReadPlannerSettings = Field(default_factory=ReadPlannerSettings)


class OpcuaSecurity(Strict):
    policy: Literal["Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss"]
    mode: Literal["Sign", "SignAndEncrypt"]
    certificate: str | None = None
    private_key: str | None = None
    server_certificate: str | None = None


class OpcuaConnection(Strict):
    endpoint: str = Field(pattern=r"^opc\.tcp://")
    security: OpcuaSecurity | None = None
    username: str | None = None
    password: SecretStr | None = None
    user_certificate: str | None = None
    user_private_key: str | None = None
    timeout: Duration = 4.0


class OpcuaSubscription(Strict):
    sampling_interval: DurationOrZero | None = Field(None, description="0: as fast as the server can")
    queue_size: int = Field(1, ge=1, le=4_294_967_295)
    deadband: FiniteFloat | None = Field(None, ge=0)
    deadband_type: Literal["absolute", "percent"] = "absolute"


class OpcuaDevice(DeviceBase):
    protocol: Literal["opcua"]
    connection: OpcuaConnection
    mode: Literal["subscribe", "poll"] = "subscribe"
    subscription: OpcuaSubscription = Field(default_factory=OpcuaSubscription)


class SerialFraming(Strict):
    """How the byte stream is cut into frames: at a terminator, at a fixed length, or from a
    start byte to an end byte. Escapes such as \\r, \\n and \\x02 work in any YAML quoting."""

    terminator: str | None = Field(None, description='e.g. "\\r\\n"; a frame ends here')
    length: int | None = Field(None, ge=1, le=65536, description="fixed frame length in bytes")
    start: str | None = Field(None, description='e.g. "\\x02" (STX); bytes before it are noise')
    end: str | None = Field(None, description='e.g. "\\x03" (ETX); with start')
    pattern: str | None = Field(
        None,
        description="regex with one named group per point id; without it, one point takes the whole frame",
    )
    max_line: int = Field(4096, ge=16, le=1_048_576, description="longest frame; longer ones are dropped")
    encoding: str = Field("utf-8", description="frames that do not decode are dropped and counted")
    partial_timeout: Duration = Field(
        1.0,
        description="an unfinished frame followed by this much silence is dropped (never joined to later bytes)",
    )


class SerialConnection(SerialLine):
    timeout: Duration = Field(1.0, description="mode: poll: how long to wait for a valid answer")


class SerialDevice(DeviceBase):
    protocol: Literal["serial"]
    connection: SerialConnection
    framing: SerialFraming
    mode: Literal["stream", "poll"] = Field(
        "stream", description="stream: the instrument sends on its own; poll: `request` every poll interval"
    )
    request: str | None = Field(None, description='sent every poll interval in mode: poll, e.g. "SI\\r\\n"')
    idle_timeout: Duration | None = Field(
        None,
        description="mode: stream: offline after this long without a valid frame "
        "(leave unset for readers that send only when something is scanned)",
    )


Device = Annotated[
    ModbusTcpDevice | ModbusRtuDevice | OpcuaDevice | SerialDevice,
    Field(discriminator="protocol"),
]


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


class BufferSettings(Strict):
    max_bytes: BufferSize = Field(512 * 1024**2, description="store-and-forward size on disk (at least 1MiB)")
    fsync: Literal["off", "normal", "full"] = Field(
        "normal", description="normal survives a process kill; full also survives power loss"
    )
    commit_interval: Duration = Field(0.02, description="batch window of queue commits")
    inflight: int = Field(256, ge=1, le=65535, description="unacknowledged messages at once")
    replay: Literal["interleaved", "ordered"] = Field(
        "interleaved",
        description="after an outage: interleaved sends live data at once and the backlog beside it; "
        "ordered sends the backlog first, so each device's seq arrives strictly increasing",
    )
    replay_rate: FiniteFloat = Field(
        2000.0, ge=0, description="backlog messages per second after an outage; 0 = as fast as acknowledged"
    )


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
    buffer: BufferSettings = Field(default_factory=BufferSettings)

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


class Northbound(Strict):
    mqtt: MqttSettings | None = None
    influxdb: InfluxSettings | None = None


class IdentifierNode(Strict):
    kind: Literal["snms", "handle"] = "snms"
    url: str
    username: str | None = None
    password: SecretStr | None = None
    prefix: str = Field(pattern=r"^\d+(\.\d+)*$")
    ca: str | None = None
    timeout: Duration = 10.0


class PointRef(Strict):
    device: str
    point: str


class RuleValue(Strict):
    index: int = Field(ge=1)
    type: str
    value: str


class IdentifierRule(Strict):
    name: str
    trigger: PointRef | None = None
    resolve: PointRef | None = None
    handle: str = "{prefix}/{value}"
    template: str | None = None
    on_exists: Literal["update", "keep", "fail"] = "update"
    values: list[RuleValue] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_kind(self) -> IdentifierRule:
        if (self.trigger is None) == (self.resolve is None):
            raise ValueError("a rule has exactly one of 'trigger:' or 'resolve:'")
        return self


class IdentifierSettings(Strict):
    node: IdentifierNode
    rules: list[IdentifierRule] = Field(default_factory=list)
    batch_size: int = Field(
        500, ge=1, le=2000, description="identifiers per batchCreate when there is a backlog"
    )
    max_queued: int = Field(
        100_000,
        ge=1,
        description="registrations waiting for the node at most; beyond, new firings are refused "
        "(logged, counted, published as refused), never queued ones dropped",
    )


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
    northbound: Northbound = Field(default_factory=Northbound, description="mqtt:, influxdb:")
    identifier: IdentifierSettings | None = Field(None, description="secondary-node registration")
    api: ApiSettings | None = Field(None, description="local HTTP API")
