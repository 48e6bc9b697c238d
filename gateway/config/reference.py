"""The config reference in Markdown, generated from the schema (docs/config-reference.md).

A test regenerates it and compares, so the document can never drift from the schema.
"""

from __future__ import annotations

import types
import typing
from typing import Any, Literal

from edgegw.drivers.registry import plugins
from edgegw.identifier.settings import IdentifierNode
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from .schema import (
    ApiSettings,
    GatewayConfig,
    GatewaySettings,
    IdentifierSettings,
    Model,
    Northbound,
    PointFields,
    QueueSettings,
)

SECTIONS: list[tuple[str, type[BaseModel]]] = [
    ("top level", GatewayConfig),
    ("gateway", GatewaySettings),
    ("models.<id>", Model),
    ("points[] (in a model or a device)", PointFields),
    *(
        (f"devices[] with protocol: {proto}", model)
        for plugin in plugins()
        for proto, model in zip(plugin.protocols, plugin.device_models(), strict=True)
    ),
    ("northbound", Northbound),
    ("queue", QueueSettings),
    ("identifier", IdentifierSettings),
    ("identifier.node", IdentifierNode),
    ("api", ApiSettings),
]


def _type_name(t: Any) -> str:
    origin = typing.get_origin(t)
    args = typing.get_args(t)
    if origin is typing.Annotated:
        base = args[0]
        if base is float and any("Duration" in repr(a) or "parse_duration" in repr(a) for a in args[1:]):
            return "duration"
        if base is int and any("parse_size" in repr(a) for a in args[1:]):
            return "size"
        return _type_name(base)
    if origin is Literal:
        return " \\| ".join(str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        names = [_type_name(a) for a in args if a is not type(None)]
        return " or ".join(dict.fromkeys(names))
    if origin is list:
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin is dict:
        return f"mapping of {_type_name(args[1])}" if len(args) == 2 else "mapping"
    if origin is tuple:
        return "[min, max]"
    if isinstance(t, type) and issubclass(t, BaseModel):
        return "mapping"
    return getattr(t, "__name__", str(t)).replace("SecretStr", "secret string")


def _default(field: Any) -> str:
    if field.is_required():
        return "**required**"
    if field.default_factory is not None:
        return ""
    value = field.default
    if value is None or value is PydanticUndefined:
        return ""
    if isinstance(value, float) and field.metadata and "duration" in _type_name(field.annotation):
        return f"`{value:g}s`"
    return f"`{value}`"


def render() -> str:
    out = [
        "# Config reference",
        "",
        "Generated from the schema by `python -m edgegw.gateway.config.reference`; `edgegw schema` prints",
        "the same schema as JSON Schema for editors. Durations are strings such as `500ms`, `1s`,",
        "`5m`; sizes such as `512MiB`. `${NAME}` is replaced by the environment variable NAME.",
        "",
    ]
    for title, model in SECTIONS:
        out += [f"## {title}", "", "| key | type | default | description |", "|---|---|---|---|"]
        for name, field in model.model_fields.items():
            desc = (field.description or "").replace("|", "\\|")
            out.append(f"| `{name}` | {_type_name(field.annotation)} | {_default(field)} | {desc} |")
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    print(render(), end="")
