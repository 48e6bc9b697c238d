"""`edgegw id register / resolve / status`: the identifier side by hand."""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import sys
from typing import Any

import httpx
from edgegw.identifier.client import NodeClient, NodeError, Registration, from_settings
from edgegw.identifier.registrar import COUNT, REWARD, year_now, yearly_counts
from edgegw.identifier.rules import STREAM
from edgegw.identifier.syntax import IdentifierError, parse
from edgegw.identifier.templates import Value


def _fail(msg: str, code: int) -> int:
    print(f"edgegw: {msg}", file=sys.stderr)
    return code


def _client(loaded: Any) -> NodeClient:
    """The node's client; OSError/ValueError/httpx.InvalidURL for settings that cannot be used."""
    return from_settings(loaded.config.identifier.node, loaded.relative)


_SETTINGS_ERRORS = (OSError, ValueError, httpx.InvalidURL)  # a missing CA file, a malformed url


def _values(specs: list[str]) -> list[Value]:
    out = []
    for spec in specs:
        index, colon, rest = spec.partition(":")
        type_, eq, value = rest.partition("=")
        if not colon or not eq or not index.isdigit() or not type_:
            raise ValueError(f"--value {spec!r}: write INDEX:TYPE=VALUE, e.g. 2000:serial_number=SN-1")
        out.append(Value(int(index), type_, value))
    return out


def cmd_id(args: argparse.Namespace, load: Any) -> int:
    if args.id_command in ("register", "resolve"):
        try:
            handle = str(parse(args.handle))
        except IdentifierError as exc:
            return _fail(f"{args.handle!r} is not an identifier: {exc}", 2)
    loaded = load(args.config)
    if loaded.config.identifier is None and args.id_command != "status":
        return _fail(f"{args.config} has no 'identifier:' section (node url, prefix, credentials)", 2)
    if args.id_command == "status":
        return _status(loaded)
    if args.id_command == "register":
        try:
            values = _values(args.value)
        except ValueError as exc:
            return _fail(str(exc), 2)
        return asyncio.run(_register(loaded, Registration(handle, args.template, tuple(values))))
    return asyncio.run(_resolve(loaded, handle, args.json))


async def _register(loaded: Any, reg: Registration) -> int:
    try:
        client = _client(loaded)
    except _SETTINGS_ERRORS as exc:
        return _fail(f"cannot use identifier.node: {exc}", 2)
    try:
        if client.kind in ("snms", "idhub") and reg.template is not None:
            problems = (await client.template(reg.template)).problems(list(reg.values))
            if problems:
                return _fail("; ".join(problems), 1)
        await client.register(reg)
    except NodeError as exc:
        return _fail(f"{reg.handle}: {exc.message}", 1)
    finally:
        await client.close()
    print(f"registered {reg.handle}")
    return 0


async def _resolve(loaded: Any, handle: str, as_json: bool) -> int:
    try:
        client = _client(loaded)
    except _SETTINGS_ERRORS as exc:
        return _fail(f"cannot use identifier.node: {exc}", 2)
    try:
        record = await client.resolve(handle)
    except NodeError as exc:
        return _fail(f"{handle}: {exc.message}", 1)
    finally:
        await client.close()
    if as_json:
        print(json.dumps(record.to_json(), ensure_ascii=False, indent=2))
        return 0
    print(f"{record.handle}  (template {record.template or '-'})")
    width = max((len(v.type) for v in record.values), default=4)
    print(f"{'index':>5}  {'type':<{width}}  value")
    for v in record.values:
        print(f"{v.index:>5}  {v.type:<{width}}  {v.value}")
    return 0


def _status(loaded: Any) -> int:
    path = loaded.data_dir / "queue.sqlite3"
    if not path.exists():
        print(f"no queue yet at {path}: nothing was registered with this data_dir")
        return 0
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        pending = db.execute("SELECT count(*) FROM messages WHERE stream = ?", (STREAM,)).fetchone()[0]
        counts = dict(
            db.execute(
                "SELECT state, count(*) FROM outcomes WHERE stream = ? GROUP BY state", (STREAM,)
            ).fetchall()
        )
        failures = db.execute(
            "SELECT key, message, ts FROM outcomes WHERE stream = ? AND state = 'failed' ORDER BY id DESC LIMIT 10",
            (STREAM,),
        ).fetchall()
        year = year_now()
        states = db.execute(
            "SELECT name, value FROM state WHERE name LIKE ?", (f"{COUNT}/{year}/%",)
        ).fetchall()
    except sqlite3.Error as exc:
        return _fail(f"cannot read {path}: {exc}", 1)
    finally:
        db.close()
    print(f"queued      {pending}")
    print(f"registered  {counts.get('registered', 0)}  (the most recent 10,000 are kept)")
    print(f"failed      {counts.get('failed', 0)}")
    if failures:
        print("last failures:")
        for key, message, _ts in failures:
            print(f"  {key}: {message}")
    per_prefix = yearly_counts(states, year)
    if ident := loaded.config.identifier:
        per_prefix.setdefault(ident.node.prefix, {"registered": 0, "resolved": 0})
    if per_prefix:
        goal_reg, goal_res = REWARD["registered"], REWARD["resolved"]
        print(
            f"this year ({year}, Beijing time) by this gateway; the reward needs {goal_reg:,} and {goal_res:,}:"
        )
        print(f"  {'prefix':<20} {'registered':>12} {'resolved':>12}")
        for prefix, n in sorted(per_prefix.items()):
            reg, res = n["registered"], n["resolved"]
            print(
                f"  {prefix:<20} {reg:>12,} {res:>12,}"
                f"   ({min(100.0, 100 * reg / goal_reg):.1f} % / {min(100.0, 100 * res / goal_res):.1f} %)"
            )
    return 0


def add_parser(sub: Any, func: Any) -> None:
    i = sub.add_parser("id", help="register, resolve or inspect identifiers by hand")
    isub = i.add_subparsers(dest="id_command", required=True, parser_class=type(i))
    r = isub.add_parser("register", help="register one identifier")
    r.add_argument("handle")
    r.add_argument("--template", help="templateVersion (snms), the metadata template's handle (idhub)")
    r.add_argument("--value", action="append", default=[], metavar="INDEX:TYPE=VALUE")
    s = isub.add_parser("resolve", help="resolve one identifier")
    s.add_argument("handle")
    s.add_argument("--json", action="store_true")
    isub.add_parser(
        "status",
        help="registration queue: depth, outcomes, this year's registrations and resolutions per prefix",
    )
    for p in (r, s, isub.choices["status"]):
        p.add_argument("-c", "--config", required=True)
    i.set_defaults(func=func)
