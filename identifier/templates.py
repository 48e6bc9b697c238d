"""Identifier templates and the values registered under them (DESIGN.md section 6).

A node accepts a registration only if every value's `index`/`type` pair is an item of the
template named by `templateVersion`, every required item is present, each value's length is
within the item's `minLength..maxLength`, no index is in the reserved range 1000-1999, and the
format is `string`. The same rules run here, so a mismatch is a clear error at config or
registration time rather than a node rejection discovered later.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

RESERVED = range(1000, 2000)


@dataclass(frozen=True, slots=True)
class Value:
    index: int
    type: str
    value: str

    def to_api(self) -> dict[str, Any]:
        return {"index": self.index, "type": self.type, "data": {"format": "string", "value": self.value}}

    @classmethod
    def from_api(cls, v: dict[str, Any]) -> Value:
        data = v.get("data") or {}
        return cls(int(v["index"]), str(v["type"]), str(data.get("value", "")))


@dataclass(frozen=True, slots=True)
class TemplateItem:
    name: str
    id_type: str
    id_index: int
    required: bool = False
    min_length: int = 0
    max_length: int | None = None

    def to_api(self) -> dict[str, Any]:
        meta: dict[str, Any] = {"type": "string", "minLength": self.min_length}
        if self.max_length is not None:
            meta["maxLength"] = self.max_length
        return {
            "name": self.name,
            "idType": self.id_type,
            "idIndex": self.id_index,
            "required": self.required,
            "metadata": meta,
        }

    @classmethod
    def from_api(cls, d: dict[str, Any]) -> TemplateItem:
        meta = d.get("metadata") or {}
        return cls(
            name=str(d.get("name", d["idType"])),
            id_type=str(d["idType"]),
            id_index=int(d["idIndex"]),
            required=bool(d.get("required", False)),
            min_length=int(meta.get("minLength") or 0),
            max_length=int(meta["maxLength"]) if meta.get("maxLength") is not None else None,
        )


@dataclass(frozen=True, slots=True)
class Template:
    prefix: str
    version: str
    description: str = ""
    items: tuple[TemplateItem, ...] = field(default_factory=tuple)

    def to_api(self) -> dict[str, Any]:
        return {
            "prefix": self.prefix,
            "version": self.version,
            "description": self.description,
            "items": [i.to_api() for i in self.items],
        }

    @classmethod
    def from_api(cls, d: dict[str, Any]) -> Template:
        return cls(
            prefix=str(d["prefix"]),
            version=str(d["version"]),
            description=str(d.get("description") or ""),
            items=tuple(TemplateItem.from_api(i) for i in d.get("items") or []),
        )

    def item(self, index: int, type_: str) -> TemplateItem | None:
        for i in self.items:
            if i.id_index == index and i.id_type == type_:
                return i
        return None

    def shape_problems(self, pairs: list[tuple[int, str]]) -> list[str]:
        """Problems knowable before any value exists: unknown index/type pairs, missing required items."""
        problems = [
            f"value index {idx} type {t!r} is not an item of template {self.version} "
            f"(items: {', '.join(f'{i.id_index}:{i.id_type}' for i in self.items)})"
            for idx, t in pairs
            if self.item(idx, t) is None
        ]
        present = set(pairs)
        problems += [
            f"template {self.version} requires item {i.id_index}:{i.id_type} ({i.name})"
            for i in self.items
            if i.required and (i.id_index, i.id_type) not in present
        ]
        return problems

    def problems(self, values: list[Value]) -> list[str]:
        """Every reason a node would reject these values under this template."""
        out = value_problems(values)
        out += self.shape_problems([(v.index, v.type) for v in values])
        for v in values:
            item = self.item(v.index, v.type)
            if item is None:
                continue
            n = len(v.value)
            if n < item.min_length or (item.max_length is not None and n > item.max_length):
                hi = item.max_length if item.max_length is not None else "∞"
                out.append(
                    f"{v.type} value {v.value!r} has {n} characters; template {self.version} allows {item.min_length}..{hi}"
                )
        return out


def value_problems(values: list[Value]) -> list[str]:
    """Rules that hold under any template: reserved indexes, duplicate indexes."""
    out = [
        f"index {v.index} is reserved (1000-1999); use 2000 and above" for v in values if v.index in RESERVED
    ]
    seen: set[int] = set()
    for v in values:
        if v.index in seen:
            out.append(f"index {v.index} is used twice")
        seen.add(v.index)
    return out
