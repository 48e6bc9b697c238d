"""The device data dictionary: each device's effective points, model and overrides merged.

A device inherits every point of its model; an entry of the device's `points:` whose id is a
model point overrides only the fields it gives; any other entry adds a point.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from .config.source import Path_

if TYPE_CHECKING:
    from pydantic import BaseModel

    from .config.base import DeviceBase, Model, PointBase

DEFAULTS = {
    "scale": 1.0,
    "offset": 0.0,
    "access": "ro",
    "classification": "general",
}
CLASSIFICATION_RANK = {"general": 0, "important": 1, "core": 2}


@dataclass(slots=True)
class DictionaryEntry:
    """One point of one device, as the dictionary defines it after merging."""

    id: str
    type: str
    name: dict[str, str] = field(default_factory=dict)
    description: str | None = None
    unit: str | None = None
    range: tuple[float, float] | None = None
    scale: float = 1.0
    offset: float = 0.0
    access: str = "ro"
    deadband: float | None = None
    semantic_id: str | None = None
    classification: str = "general"
    length: int | None = None
    byte_order: str | None = None
    compute: str | None = None  # an expression: the point is computed, not read
    # the point's address for its device's protocol (the plugin's address model: `modbus:`,
    # `opcua:` …), None for protocols without one; where("address") is where it was written
    address: BaseModel | None = None
    # where each field was written, for errors that name FILE:LINE: key.path
    origin: dict[str, Path_] = field(default_factory=dict)
    path: Path_ = ()

    def where(self, name: str) -> Path_:
        return self.origin.get(name, self.path)

    def meta(self) -> dict[str, object]:
        out: dict[str, object] = {"type": self.type}
        if self.name:
            out["name"] = self.name
        for key in ("unit", "range", "access", "semantic_id", "classification"):
            value = getattr(self, key)
            if value is not None:
                out[key] = list(value) if key == "range" else value
        return out


def merge_points(
    device: DeviceBase,
    device_path: Path_,
    model: Model | None,
    model_id: str | None,
    address_key: str | None = None,
) -> tuple[list[DictionaryEntry | None], list[tuple[Path_, str]]]:
    """Merge a model's points with a device's entries. Returns entries (None where the type
    is missing) and problems as (path, message). `address_key` names the point field that
    holds the address for the device's protocol; the others are left out."""
    problems: list[tuple[Path_, str]] = []
    merged: dict[str, dict[str, tuple[object, Path_]]] = {}
    paths: dict[str, Path_] = {}
    if model is not None:
        seen: dict[str, int] = {}
        for i, p in enumerate(model.points):
            path: Path_ = ("models", model_id or "", "points", i)
            if p.id in seen:
                problems.append(((*path, "id"), f"duplicate point id '{p.id}' (also points[{seen[p.id]}])"))
                continue
            seen[p.id] = i
            merged[p.id] = _fields_of(p, path)
            paths[p.id] = path
    seen_dev: dict[str, int] = {}
    for j, p in enumerate(device.points):
        path = (*device_path, "points", j)
        if p.id in seen_dev:
            problems.append(((*path, "id"), f"duplicate point id '{p.id}' (also points[{seen_dev[p.id]}])"))
            continue
        seen_dev[p.id] = j
        base = merged.setdefault(p.id, {})
        base.update(_fields_of(p, path))
        paths[p.id] = path
    entries: list[DictionaryEntry | None] = []
    for pid, fields in merged.items():
        values = {k: v for k, (v, _) in fields.items()}
        if values.get("type") is None:
            problems.append((paths[pid], f"point '{pid}' has no type (bool, int16, …, float32, string)"))
            entries.append(None)
            continue
        name = values.pop("name", None)
        if isinstance(name, str):
            name = {"en": name}
        for k, default in DEFAULTS.items():
            if values.get(k) is None:
                values[k] = default
        address = values.get(address_key) if address_key is not None else None
        origin = {k: p for k, (_, p) in fields.items()}
        if address_key is not None and address_key in origin:
            origin["address"] = origin[address_key]
        entries.append(
            DictionaryEntry(
                id=pid,
                name=dict(cast(dict[str, str], name or {})),
                address=address,  # type: ignore[arg-type]
                origin=origin,
                path=paths[pid],
                **cast(dict[str, Any], {k: v for k, v in values.items() if k in _ENTRY_FIELDS}),
            )
        )
    return entries, problems


_ENTRY_FIELDS = set(DictionaryEntry.__dataclass_fields__) - {"name", "address", "origin", "path", "id"}


def _fields_of(p: PointBase, path: Path_) -> dict[str, tuple[object, Path_]]:
    out: dict[str, tuple[object, Path_]] = {}
    for name in p.model_fields_set:
        if name == "id":
            continue
        out[name] = (getattr(p, name), (*path, name))
    return out


def visible(entry: DictionaryEntry, max_classification: str) -> bool:
    return CLASSIFICATION_RANK[entry.classification] <= CLASSIFICATION_RANK[max_classification]
