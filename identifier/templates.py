"""Identifier templates and the values registered under them (the README's "Identifiers").

A node accepts a registration only if every value's `index`/`type` pair is an item of the
template named by `templateVersion`, every required item is present, each value's length is
within the item's `minLength..maxLength`, no index is in the reserved range 1000-1999, and the
format is `string`. The same rules run here, so a mismatch is a clear error at config or
registration time rather than a node rejection discovered later.

What a node sends is read strictly: a template, item or value of the wrong shape (a missing
field, a list where an object belongs, a number that is not one) raises `Malformed`, never
KeyError/TypeError. Integers written as strings ("2000") are accepted, as some nodes send them.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

RESERVED = range(1000, 2000)


class Malformed(ValueError):
    """Data from a node (or a file) that does not have the expected shape; the message says where."""


def read_obj(d: Any, what: str) -> dict[str, Any]:
    if not isinstance(d, dict):
        raise Malformed(f"{what} is {kind_of(d)}, not an object")
    return d


def read_list(d: Any, what: str) -> list[Any]:
    """A JSON list; null or absent counts as empty."""
    if d is None:
        return []
    if not isinstance(d, list):
        raise Malformed(f"{what} is {kind_of(d)}, not a list")
    return d


def read_int(d: Any, what: str) -> int:
    """An integer: a JSON integer, an integral number (2000.0) or a decimal string ("2000")."""
    if isinstance(d, bool):
        raise Malformed(f"{what} is a boolean, not a number")
    if isinstance(d, int):
        return d
    if isinstance(d, float) and math.isfinite(d) and d.is_integer():
        return int(d)
    if isinstance(d, str) and len(d) <= 20:
        try:
            return int(d)
        except ValueError:
            pass
    raise Malformed(f"{what} is {kind_of(d)}, not an integer")


def read_str(d: Any, what: str) -> str:
    if not isinstance(d, str):
        raise Malformed(f"{what} is {kind_of(d)}, not a string")
    return d


def kind_of(d: Any) -> str:
    if d is None:
        return "null"
    if isinstance(d, bool):
        return "a boolean"
    if isinstance(d, int | float):
        return f"the number {d!r}"[:40]
    if isinstance(d, str):
        return f"the string {d[:20]!r}"
    if isinstance(d, list):
        return "a list"
    if isinstance(d, dict):
        return "an object"
    return type(d).__name__


def text_of(v: Any) -> str:
    """A value's data as text: strings as they are, other JSON (an HS_ADMIN object, a number) as
    compact JSON."""
    if isinstance(v, str):
        return v
    if v is None:
        return ""
    try:
        return json.dumps(v, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError):
        return str(v)


@dataclass(frozen=True, slots=True)
class Value:
    index: int
    type: str
    value: str

    def to_api(self) -> dict[str, Any]:
        return {"index": self.index, "type": self.type, "data": {"format": "string", "value": self.value}}

    @classmethod
    def from_api(cls, v: Any) -> Value:
        """A value as a node sends it; `Malformed` if it has not that shape."""
        v = read_obj(v, "a value")
        if "index" not in v or "type" not in v:
            raise Malformed("a value has no index or no type")
        data = v.get("data")
        if data is not None and not isinstance(data, dict):
            raise Malformed(f"the data of value {v.get('index')!r} is {kind_of(data)}, not an object")
        return cls(
            read_int(v["index"], "a value's index"),
            read_str(v["type"], "a value's type"),
            text_of((data or {}).get("value")),
        )


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
    def from_api(cls, d: Any) -> TemplateItem:
        """A template item as a node sends it; `Malformed` if it has not that shape."""
        d = read_obj(d, "a template item")
        if "idType" not in d or "idIndex" not in d:
            raise Malformed("a template item has no idType or no idIndex")
        id_type = read_str(d["idType"], "a template item's idType")
        meta = d.get("metadata")
        meta = {} if meta is None else read_obj(meta, f"the metadata of item {id_type!r}")
        name = d.get("name")
        required = d.get("required")
        if required is not None and not isinstance(required, bool):
            raise Malformed(f"item {id_type!r}: required is {kind_of(required)}, not true or false")
        low, high = meta.get("minLength"), meta.get("maxLength")
        return cls(
            name=id_type if name is None else read_str(name, f"the name of item {id_type!r}"),
            id_type=id_type,
            id_index=read_int(d["idIndex"], f"item {id_type!r}: idIndex"),
            required=bool(required),
            min_length=0 if low is None else read_int(low, f"item {id_type!r}: minLength"),
            max_length=None if high is None else read_int(high, f"item {id_type!r}: maxLength"),
        )


@dataclass(frozen=True, slots=True)
class Template:
    prefix: str
    version: str
    description: str = ""
    items: tuple[TemplateItem, ...] = field(default_factory=tuple)
    # the items by (index, type), made once: every registration asks for each of its values
    _by_key: dict[tuple[int, str], TemplateItem] = field(
        init=False, repr=False, compare=False, hash=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        for i in self.items:
            self._by_key.setdefault((i.id_index, i.id_type), i)

    def to_api(self) -> dict[str, Any]:
        return {
            "prefix": self.prefix,
            "version": self.version,
            "description": self.description,
            "items": [i.to_api() for i in self.items],
        }

    @classmethod
    def from_api(cls, d: Any) -> Template:
        """A template as a node sends it; `Malformed` if it has not that shape."""
        d = read_obj(d, "the template")
        if "prefix" not in d or "version" not in d:
            raise Malformed("the template has no prefix or no version")
        return cls(
            prefix=read_str(d["prefix"], "the template's prefix"),
            version=read_str(d["version"], "the template's version"),
            description=text_of(d.get("description")),
            items=tuple(TemplateItem.from_api(i) for i in read_list(d.get("items"), "the template's items")),
        )

    def item(self, index: int, type_: str) -> TemplateItem | None:
        return self._by_key.get((index, type_))

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
