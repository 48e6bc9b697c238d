"""Node ids as integrators write them: every standard string form, or a browse path.

ns=2;s=Spindle.Speed   ns=2;i=1001   i=2258   nsu=urn:acme:cnc;s=Spindle.Speed
ns=2;g=09087e75-8e5e-499b-954f-f2a9603db28a   ns=2;b=M/RbKBsRVkePCePcx24oRA==
/Objects/2:CNC/2:Spindle/2:Speed   (a browse path from the root; "2:" may be left out)
"""

from __future__ import annotations

from dataclasses import dataclass

from asyncua import ua


class NodeSyntaxError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class PathElement:
    name: str
    ns: int | None  # None: any namespace


@dataclass(frozen=True, slots=True)
class NodeRef:
    text: str
    node_id: ua.NodeId | None = None  # an id (nsu= ids have their namespace index resolved later)
    namespace_uri: str | None = None
    path: tuple[PathElement, ...] = ()


def parse_node(text: str) -> NodeRef:
    t = text.strip()
    if not t:
        raise NodeSyntaxError("empty node id")
    if t.startswith("/"):
        elements = []
        for part in t.strip("/").split("/"):
            if not part:
                raise NodeSyntaxError(f"empty element in browse path '{t}'")
            ns, sep, name = part.partition(":")
            if sep and ns.isdigit():
                elements.append(PathElement(name, int(ns)))
            else:
                elements.append(PathElement(part, None))
        return NodeRef(t, path=tuple(elements))
    try:
        nid = ua.NodeId.from_string(t)
    except Exception as exc:  # asyncua raises UaStringParsingError, ValueError, binascii.Error …
        raise NodeSyntaxError(
            f"'{t}' is not a node id (ns=2;s=…, ns=2;i=…, nsu=<uri>;s=…, g=<guid>, b=<base64>) "
            f"nor a browse path (/Objects/2:Folder/2:Variable): {exc}"
        ) from None
    if isinstance(nid, ua.ExpandedNodeId) and nid.NamespaceUri:
        return NodeRef(t, ua.NodeId(nid.Identifier, 0, nid.NodeIdType), namespace_uri=nid.NamespaceUri)
    return NodeRef(t, ua.NodeId(nid.Identifier, nid.NamespaceIndex, nid.NodeIdType))
