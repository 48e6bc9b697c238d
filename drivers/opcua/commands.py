"""`edgegw certs create` and `edgegw browse`: the OPC UA side by hand."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import getpass
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

from edgegw.drivers.base import DeviceUnreachable
from edgegw.drivers.opcua.browse import Variable, walk
from edgegw.drivers.opcua.driver import MODES, POLICIES, OpcuaDriver, Security
from edgegw.drivers.opcua.nodes import NodeSyntaxError, parse_node
from edgegw.drivers.opcua.values import TYPE_OF_VARIANT
from edgegw.gateway.config.units import UNECE_REC20
from edgegw.gateway.opcua import pki


def _fail(msg: str, code: int) -> int:
    print(f"edgegw: {msg}", file=sys.stderr)
    return code


# ---- certs ----


def cmd_certs(args: argparse.Namespace, load: Any) -> int:
    if args.config:
        loaded = load(args.config)
        folder = Path(args.out) if args.out else loaded.data_dir / "pki"
        uri = args.uri or pki.application_uri(loaded.config.gateway.id)
    else:
        if not args.uri:
            return _fail("certs create needs -c FILE (its gateway id makes the application URI) or --uri", 2)
        folder, uri = Path(args.out or "pki"), args.uri
    if args.days < 1:
        return _fail("--days must be at least 1", 2)
    store = pki.Pki(folder)
    if (store.certificate.exists() or store.private_key.exists()) and not args.force:
        return _fail(
            f"{store.certificate} already exists; --force replaces it (every server that trusts "
            "the old certificate must then be given the new one)",
            1,
        )
    try:
        cert = pki.create_certificate(store.certificate, store.private_key, uri, days=args.days)
    except OSError as exc:
        return _fail(f"cannot write {exc.filename or folder}: {exc.strerror}", 1)
    der = store.certificate.read_bytes()
    print(f"certificate  {store.certificate}")
    print(f"private key  {store.private_key} (readable by its owner only)")
    print(f"application URI  {uri}")
    print(f"SHA-1 thumbprint {':'.join(pki.thumbprint(der)[i : i + 2] for i in range(0, 40, 2))}")
    print(f"valid until  {cert.not_valid_after_utc:%Y-%m-%d}")
    print(
        f"Give {store.certificate.name} to each OPC UA server's administrator to trust "
        "(the server's trusted-certificates folder or its certificate manager)."
    )
    return 0


# ---- browse ----


def cmd_browse(args: argparse.Namespace, load: Any) -> int:
    try:
        root = parse_node(args.root)
    except NodeSyntaxError as exc:
        return _fail(f"--root {args.root!r}: {exc}", 2)
    if root.node_id is None or root.namespace_uri is not None:
        return _fail("--root takes a node id (ns=…;s=… or i=…), not a browse path or nsu= form", 2)
    if not args.endpoint.startswith("opc.tcp://"):
        return _fail(f"{args.endpoint!r}: an OPC UA endpoint starts with opc.tcp://", 2)
    if args.depth < 1:
        return _fail("--depth must be at least 1", 2)
    security = None
    if args.security:
        policy, _, mode = args.security.partition(":")
        if policy not in POLICIES or mode not in MODES:
            return _fail(
                f"--security {args.security!r}: write POLICY:MODE with POLICY one of "
                f"{', '.join(POLICIES)} and MODE Sign or SignAndEncrypt",
                2,
            )
        loaded = load(args.config) if args.config else None
        folder = Path(args.pki) if args.pki else (loaded.data_dir / "pki" if loaded else Path("pki"))
        store = pki.Pki(folder)
        uri = pki.application_uri(loaded.config.gateway.id) if loaded else "urn:edgegw:browse"
        pinned = Path(args.server_certificate) if args.server_certificate else None
        security = Security(
            policy, mode, store.certificate, store.private_key, store, pinned, uri, create=True
        )
    password = None
    if args.username:
        password = os.environ.get("OPCUA_PASSWORD")
        if password is None:
            if not sys.stdin.isatty():
                return _fail("--username needs the password in $OPCUA_PASSWORD", 2)
            password = getpass.getpass(f"password for {args.username}: ")
    driver = OpcuaDriver(
        "browse",
        args.endpoint,
        [],
        timeout=args.timeout,
        username=args.username,
        password=password,
        security=security,
    )
    try:
        variables, root_name = asyncio.run(_browse(driver, root.node_id, args.depth))
    except DeviceUnreachable as exc:
        return _fail(str(exc), 1)
    except (OSError, TimeoutError) as exc:
        return _fail(f"{args.endpoint}: {exc or type(exc).__name__}", 1)
    model = (
        args.model
        or _slug(root_name if root_name not in ("Objects", "") else _host(args.endpoint), "-")
        or "opcua-device"
    )
    text = render(args, variables, model)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
        print(f"{args.output}: {sum(1 for v in variables if _type(v))} points", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


async def _browse(driver: OpcuaDriver, root: Any, depth: int) -> tuple[list[Variable], str]:
    await driver.connect()
    try:
        client = driver._client
        assert client is not None
        name = (await client.get_node(root).read_browse_name()).Name
        return await walk(client, root, depth), name
    finally:
        await driver.close()


def render(args: argparse.Namespace, variables: list[Variable], model: str) -> str:
    """A config that validates as is (with --username: once OPCUA_USER and OPCUA_PASSWORD are
    set): the model, and one device at the endpoint using it."""
    lines = [
        f"# Device model browsed from {args.endpoint} (root {args.root}, depth {args.depth})",
        f"# on {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC by `edgegw browse`.",
        "# Check it with `edgegw validate -c FILE`; to reuse the model, move `models:` into",
        "# configs/models/<name>.yaml and include it. Units come from EngineeringUnits, ranges",
        "# from EURange, access from AccessLevel; review names and drop points you do not need.",
    ]
    points: list[str] = []
    skipped: list[str] = []
    used: set[str] = set()
    for v in variables:
        type_ = _type(v)
        if type_ is None:
            skipped.append(f"{'/'.join(v.path)} ({v.type_name or 'unknown type'})")
            continue
        pid = _unique(_slug("_".join(v.path), "_") or "point", used)
        fields = [f"id: {pid}", f"name: {_q(v.display_name)}", f"type: {type_}"]
        unit = _unit(v)
        if unit:
            fields.append(f"unit: {unit}")
        if v.eu_range is not None and v.eu_range[0] <= v.eu_range[1] and type_ not in ("string", "bool"):
            fields.append(f"range: [{_num(v.eu_range[0])}, {_num(v.eu_range[1])}]")
        fields.append(f"access: {'rw' if v.writable else 'ro'}")
        fields.append(f"opcua: {{node: {_q(v.node_id.to_string())}}}")
        note = []
        if v.array:
            note.append("array: published as a JSON list")
        if v.eu_unit_id is not None and not unit:
            note.append(f"EngineeringUnits {v.eu_display or v.eu_unit_id!r} has no UNECE code edgegw knows")
        points.append("      - {" + ", ".join(fields) + "}" + (f"  # {'; '.join(note)}" if note else ""))
    lines.append(f"# {len(points)} variables as points" + (f"; {len(skipped)} skipped:" if skipped else "."))
    lines += [f"#   {s}" for s in skipped]
    lines += [
        "gateway: {id: edgegw}",
        "models:",
        f"  {model}:",
        f"    description: {_q('Browsed from ' + args.endpoint)}",
        "    points:" if points else "    points: []",
        *points,
        "devices:",
        f"  - id: {args.device}",
        f"    model: {model}",
        "    protocol: opcua",
        "    connection:",
        f"      endpoint: {_q(args.endpoint)}",
    ]
    if args.security:
        policy, _, mode = args.security.partition(":")
        sec = f"      security: {{policy: {policy}, mode: {mode}"
        if args.server_certificate:
            sec += f", server_certificate: {_q(str(Path(args.server_certificate).resolve()))}"
        lines.append(sec + "}")
    if args.username:
        # the server refuses anonymous sessions: the device needs the identity too, from the
        # gateway's environment (never the password itself in a file)
        lines += [
            f"      # browsed as {_q(args.username)}: set OPCUA_USER and OPCUA_PASSWORD for the gateway",
            "      username: ${OPCUA_USER}",
            "      password: ${OPCUA_PASSWORD}",
        ]
    lines += [
        "    mode: subscribe          # or poll",
        "    poll: {interval: 1s}     # the publishing interval in subscribe mode",
        "",
    ]
    return "\n".join(lines)


def _type(v: Variable) -> str | None:
    return TYPE_OF_VARIANT.get(v.builtin) if v.builtin is not None else None


def _unit(v: Variable) -> str | None:
    """The UNECE code of an EngineeringUnits UnitId (OPC 10000-8 5.6.3: the code's characters
    as bytes of the integer), when edgegw knows that code."""
    if v.eu_unit_id is None or v.eu_unit_id <= 0:
        return None
    raw = v.eu_unit_id.to_bytes(4, "big").lstrip(b"\0")
    try:
        code = raw.decode("ascii")
    except UnicodeDecodeError:
        return None
    return code if code in UNECE_REC20 else None


def _slug(text: str, sep: str) -> str:
    s = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", text)
    s = re.sub(r"[^a-z0-9]+", "_", s.lower()).strip("_")
    return s.replace("_", sep)


def _unique(pid: str, used: set[str]) -> str:
    out, n = pid, 2
    while out in used:
        out, n = f"{pid}_{n}", n + 1
    used.add(out)
    return out


def _host(endpoint: str) -> str:
    return endpoint.removeprefix("opc.tcp://").split("/")[0].replace(":", "-") or "opcua-device"


def _q(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)  # a JSON string is a YAML double-quoted scalar


def _num(x: float) -> str:
    return str(int(x)) if x == int(x) else repr(x)
