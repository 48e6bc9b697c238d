"""OPC UA device and point-address models."""

from __future__ import annotations

from typing import Literal

from edgegw.gateway.config.base import DeviceBase, Strict
from edgegw.gateway.config.types import Duration, DurationOrZero
from pydantic import Field, FiniteFloat, SecretStr


class OpcuaAddress(Strict):
    node: str = Field(description="ns=2;s=…, ns=2;i=…, nsu=<uri>;s=…, g=/b= forms, or a browse path")


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
