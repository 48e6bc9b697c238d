"""The `identifier:` section of the config: the node, the rules, the registration queue."""

from __future__ import annotations

from typing import Literal

from edgegw.gateway.config.base import Strict
from edgegw.gateway.config.types import Duration
from pydantic import Field, SecretStr, model_validator


class IdentifierNode(Strict):
    kind: Literal["snms", "handle", "idhub"] = Field(
        "snms",
        description="snms: a secondary node's API; handle: the Handle.Net REST API; idhub: an "
        "enterprise node's OpenAPI (challenge-response login, DOIP calls)",
    )
    url: str = Field(description="the node's business API, e.g. http://node.example:3000")
    username: str | None = Field(None, description="snms and handle: the account (snms: the app identity)")
    password: SecretStr | None = Field(
        None, description="snms and handle: its password (may be written as ${NAME}, from the environment)"
    )
    login: Literal["plain", "cipher"] = Field(
        "plain",
        description="snms only: plain sends the password (POST /identity/token); cipher sends "
        "sha256hex(sha256hex(password) + yyyy-MM-dd in Beijing time) (POST /identity/token/v1)",
    )
    app_handle: str | None = Field(
        None, description="idhub only: the application's identity handle, e.g. 88.118.8/App_edgegw"
    )
    private_key: str | None = Field(
        None,
        description="idhub only: the application's PKCS#8 PEM private key file (relative to the "
        "config's folder); it signs the node's challenge and is never logged",
    )
    prefix: str = Field(pattern=r"^\d+(\.\d+)*$", description="the enterprise prefix, e.g. 88.118.8")
    ca: str | None = Field(None, description="CA certificate file to trust for an https url")
    timeout: Duration = Field(10.0, description="per request")

    @model_validator(mode="after")
    def _kind_keys(self) -> IdentifierNode:
        if self.kind == "idhub":
            missing = [k for k in ("app_handle", "private_key") if getattr(self, k) is None]
            if missing:
                raise ValueError(f"an idhub node needs {' and '.join(missing)}")
        else:
            given = [k for k in ("app_handle", "private_key") if getattr(self, k) is not None]
            if given:
                raise ValueError(f"{' and '.join(given)}: only for kind idhub")
        if self.login == "cipher" and self.kind != "snms":
            raise ValueError("login: cipher is the snms login; idhub logs in by challenge-response")
        return self


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
    node: IdentifierNode = Field(description="the resolution node registered with (see identifier.node)")
    rules: list[IdentifierRule] = Field(default_factory=list)
    batch_size: int = Field(
        500,
        ge=1,
        le=2000,
        description="identifiers per batchCreate when there is a backlog (the node takes at most 2000; "
        "its guide recommends 100-1500 per batch)",
    )
    max_queued: int = Field(
        100_000,
        ge=1,
        description="registrations waiting for the node at most; beyond, new firings are refused "
        "(logged, counted, published as refused), never queued ones dropped",
    )
