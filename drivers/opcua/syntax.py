"""Node-id syntax checked without the OPC UA stack, so that `validate` of a config never loads
asyncua: it accepts exactly what `asyncua.ua.NodeId.from_string` accepts (a property test
holds the two together), and browse paths."""

from __future__ import annotations

import binascii
import uuid
from base64 import b64decode

FORMS = "ns=2;s=…, ns=2;i=…, nsu=<uri>;s=…, g=<guid>, b=<base64>"


def node_problem(text: str) -> str | None:
    """Why `text` is neither a node id nor a browse path, or None when it is one."""
    t = text.strip()
    if not t:
        return "empty node id"
    if t.startswith("/"):
        if any(not part for part in t.strip("/").split("/")):
            return f"empty element in browse path '{t}'"
        return None
    why = _id_problem(t)
    if why is None:
        return None
    return f"'{t}' is not a node id ({FORMS}) nor a browse path (/Objects/2:Folder/2:Variable): {why}"


def _id_problem(string: str) -> str | None:
    elements = string.split(";")
    identified = False
    while elements:
        el = elements.pop(0)
        if not el:
            continue
        if "=" not in el:
            return f"'{el}' is not key=value"
        k, v = el.split("=", 1)
        k = k.strip()
        if k in ("ns", "srv", "i"):
            if not _is_int(v):
                return f"{k}={v}: {k}= takes a whole number"
            identified = identified or k == "i"
        elif k == "s":
            identified = True
            elements = []  # a string identifier takes the rest, semicolons and all
        elif k == "g":
            try:
                uuid.UUID(f"urn:uuid:{v}")
            except ValueError:
                return f"g={v}: not a GUID (8-4-4-4-12 hexadecimal digits)"
            identified = True
        elif k == "b":
            if v[0:2] == "0x":
                try:
                    bytes.fromhex(v[2:])
                except ValueError:
                    return f"b={v}: not hexadecimal bytes after 0x"
            else:
                try:
                    b64decode(v.encode("ascii"))
                except (binascii.Error, ValueError):
                    if not v.isascii():  # anything else ASCII is kept as the bytes themselves
                        return f"b={v}: neither base64 nor ASCII"
            identified = True
    return None if identified else "no identifier (i=, s=, g= or b=)"


def _is_int(text: str) -> bool:
    try:
        int(text.strip())
    except ValueError:
        return False
    return True
