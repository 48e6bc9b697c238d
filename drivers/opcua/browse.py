"""Walk an OPC UA address space and describe its variables (what `edgegw browse` prints).

Level by level from a root node, along hierarchical references (Organizes, HasComponent, …),
with one Browse request per level and one Read per attribute set, so a machine with thousands
of variables is walked in a few round trips. For every variable: its node id, the path of
BrowseNames from the root, DisplayName, the built-in type its DataType derives from, array or
scalar, AccessLevel, and its EURange and EngineeringUnits properties when it has them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from asyncua import Client, ua

_HIERARCHICAL = ua.NodeId(ua.ObjectIds.HierarchicalReferences)
_HAS_PROPERTY = ua.NodeId(ua.ObjectIds.HasProperty)
_HAS_SUBTYPE = ua.NodeId(ua.ObjectIds.HasSubtype)
_SERVER = ua.NodeId(ua.ObjectIds.Server)
_CHUNK = 500  # nodes per Browse / Read request
_ENUMERATION, _STRUCTURE = 29, 22
# abstract Number, Integer, UInteger: the widest type of each
_ABSTRACT_NUMBERS = {26: ua.VariantType.Double, 27: ua.VariantType.Int64, 28: ua.VariantType.UInt64}


@dataclass
class Variable:
    node_id: ua.NodeId
    path: list[str]
    display_name: str
    data_type: ua.NodeId | None = None
    builtin: ua.VariantType | None = None  # None: a structure or a type edgegw cannot map
    type_name: str = ""
    array: bool = False
    writable: bool = False
    eu_range: tuple[float, float] | None = None
    eu_unit_id: int | None = None
    eu_display: str | None = None
    properties: dict[str, ua.NodeId] = field(default_factory=dict)


async def walk(client: Client, root: ua.NodeId, depth: int) -> list[Variable]:
    """Every variable under `root` down to `depth` levels, in browse order."""
    found: list[Variable] = []
    level: list[tuple[ua.NodeId, list[str]]] = [(root, [])]
    for _ in range(depth):
        if not level:
            break
        refs = await _browse(client, [n for n, _ in level])
        nxt: list[tuple[ua.NodeId, list[str]]] = []
        for (_, path), children in zip(level, refs, strict=True):
            for r in children:
                nid = r.NodeId.NodeId if hasattr(r.NodeId, "NodeId") else r.NodeId
                if nid == _SERVER:
                    continue  # the server's own diagnostics, not the machine
                if r.ReferenceTypeId == _HAS_PROPERTY:
                    continue  # properties describe their parent; collected below
                child_path = [*path, r.BrowseName.Name]
                if r.NodeClass == ua.NodeClass.Variable:
                    found.append(Variable(nid, child_path, r.DisplayName.Text or r.BrowseName.Name))
                nxt.append((nid, child_path))
        level = nxt
    if found:
        await _describe(client, found)
    return found


async def _browse(
    client: Client,
    nodes: list[ua.NodeId],
    reference: ua.NodeId = _HIERARCHICAL,
    classes: int = ua.NodeClass.Object | ua.NodeClass.Variable,
) -> list[list[Any]]:
    """The forward references of type `reference` (and subtypes) of each node, to nodes of
    `classes`, following continuation points."""
    out: list[list[Any]] = []
    for start in range(0, len(nodes), _CHUNK):
        descs = []
        for n in nodes[start : start + _CHUNK]:
            d = ua.BrowseDescription()
            d.NodeId = n
            d.BrowseDirection = ua.BrowseDirection.Forward
            d.ReferenceTypeId = reference
            d.IncludeSubtypes = True
            d.NodeClassMask = classes
            d.ResultMask = ua.BrowseResultMask.All
            descs.append(d)
        params = ua.BrowseParameters()
        params.NodesToBrowse = descs
        results = await client.uaclient.browse(params)
        for res in results:
            refs = list(res.References or [])
            cp = res.ContinuationPoint
            while cp:
                nxt = await client.uaclient.browse_next(_next_params(cp))
                refs += list(nxt[0].References or [])
                cp = nxt[0].ContinuationPoint
            out.append(refs)
    return out


def _next_params(cp: bytes) -> ua.BrowseNextParameters:
    p = ua.BrowseNextParameters()
    p.ReleaseContinuationPoints = False
    p.ContinuationPoints = [cp]
    return p


def _good(dv: ua.DataValue) -> Any:
    """A read attribute's value, or None when it is bad or the server left it out (both
    StatusCode and Value are optional in a DataValue)."""
    if dv.StatusCode is not None and not dv.StatusCode.is_good():
        return None
    return dv.Value.Value if dv.Value is not None else None


async def _describe(client: Client, variables: list[Variable]) -> None:
    ids = [v.node_id for v in variables]
    data_types = await _read(client, ids, ua.AttributeIds.DataType)
    ranks = await _read(client, ids, ua.AttributeIds.ValueRank)
    access = await _read(client, ids, ua.AttributeIds.AccessLevel)
    supertypes: dict[ua.NodeId, tuple[ua.VariantType | None, str]] = {}
    for v, dt_, rank, acc in zip(variables, data_types, ranks, access, strict=True):
        v.data_type = _good(dt_)
        # ValueRank 1+ (n dimensions) or 0 (one or more); -1 scalar, -2/-3 "any" read as scalar
        dims = _good(rank)
        v.array = isinstance(dims, int) and dims >= 0
        level = _good(acc)
        v.writable = bool((level or 0) & ua.AccessLevel.CurrentWrite.mask)
        if v.data_type is not None:
            if v.data_type not in supertypes:
                supertypes[v.data_type] = await _builtin(client, v.data_type)
            v.builtin, v.type_name = supertypes[v.data_type]
    props = await _browse(client, ids, _HAS_PROPERTY, ua.NodeClass.Variable)
    wanted: list[tuple[Variable, str, ua.NodeId]] = []
    for v, refs in zip(variables, props, strict=True):
        for r in refs:
            if r.BrowseName.Name in ("EURange", "EngineeringUnits"):
                wanted.append((v, r.BrowseName.Name, r.NodeId))
    values = await _read(client, [n for _, _, n in wanted], ua.AttributeIds.Value)
    for (v, name, _), dv in zip(wanted, values, strict=True):
        value = _good(dv)
        if name == "EURange" and isinstance(value, ua.Range):
            v.eu_range = (float(value.Low), float(value.High))
        elif name == "EngineeringUnits" and isinstance(value, ua.EUInformation):
            v.eu_unit_id = value.UnitId
            v.eu_display = value.DisplayName.Text if value.DisplayName else None


async def _read(client: Client, nodes: list[ua.NodeId], attr: ua.AttributeIds) -> list[ua.DataValue]:
    out: list[ua.DataValue] = []
    for start in range(0, len(nodes), _CHUNK):
        out += await client.uaclient.read_attributes(nodes[start : start + _CHUNK], attr)
    return out


async def _builtin(client: Client, data_type: ua.NodeId) -> tuple[ua.VariantType | None, str]:
    """The built-in type a DataType derives from (walking HasSubtype up), with its name;
    enumerations are Int32 on the wire; structures have no built-in type."""
    node = data_type
    name = ""
    for _ in range(16):
        if node.NamespaceIndex == 0 and isinstance(node.Identifier, int):
            i = node.Identifier
            if not name:
                name = _ns0_name(i)
            if i == _ENUMERATION:
                return ua.VariantType.Int32, name
            if 1 <= i <= 21:
                return ua.VariantType(i), name
            if i in _ABSTRACT_NUMBERS:
                return _ABSTRACT_NUMBERS[i], name
            if i in (_STRUCTURE, 24):  # Structure, BaseDataType: no single built-in type
                return None, name
        if not name:
            name = (await client.get_node(node).read_browse_name()).Name
        params = ua.BrowseParameters()
        d = ua.BrowseDescription()
        d.NodeId = node
        d.BrowseDirection = ua.BrowseDirection.Inverse
        d.ReferenceTypeId = _HAS_SUBTYPE
        d.IncludeSubtypes = False
        d.ResultMask = ua.BrowseResultMask.All
        params.NodesToBrowse = [d]
        res = await client.uaclient.browse(params)
        refs = res[0].References or []
        if not refs:
            return None, name
        node = refs[0].NodeId
    return None, name


def _ns0_name(i: int) -> str:
    for name, value in vars(ua.ObjectIds).items():
        if value == i and not name.startswith("_"):
            return name
    return f"i={i}"
