"""The `identifier:` section of the config: the node, the rules, the registration queue."""

from __future__ import annotations

from typing import Literal

from edgegw.gateway.config.base import Strict
from edgegw.gateway.config.types import Duration
from pydantic import Field, SecretStr, model_validator


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
