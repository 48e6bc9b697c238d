"""A resolution node simulator (the node side of the README's "Identifiers"), FastAPI over one SQLite store.

It serves the `snms` routes (JSON envelope {status, message, data}, HTTP 200 for business
outcomes, Bearer tokens that expire; the plain login `POST /identity/token` and the cipher login
`POST /identity/token/v1`, which accepts only sha256hex(sha256hex(password) + the node's date in
Beijing time), docs/dev-tools/snms/v3/identity-auth.md of teleinfo-dev/id-guide), the Handle.Net
REST routes (`/api/handles/{handle}`, responseCode, HTTP Basic), and an enterprise node's IDHub
OpenAPI (challenge-response login with the app's RSA key, docs/dev-tools/standard/api/challenge.md;
the DOIP calls `/api/v1/doip?targetId=H&operationId=0.DOIP/Op.Create|Update|Delete|Retrieve`,
envelope {code, message, data}, docs/dev-tools/standard/api/handle.md) over the same identifiers.
An IDHub metadata template is the seeded template of version V under handle `PREFIX/META_V`; its
items' English names are their idType.

The login answers refusals as the guide shows: a wrong password or digest `{"status": -2,
"message": "用户名/密码错误！"}`; a wrong signature (the guide shows no example) `{"code": 401,
"message": "签名验证失败 …"}`; an unknown or malformed app handle `{"code": 40508, "message":
"标识格式异常"}` as the guide's challenge example. Logins are never faulted or garbled. and enforces the node's rules: the
template named by `templateVersion` must exist for the prefix, every value's index/type must be
one of its items, required items present, lengths within minLength..maxLength, indexes
1000-1999 reserved, format `string`, at most 2000 items per batch.

Faults for tests (`PUT /admin/faults`): `latency` seconds per request, `error_rate` (HTTP 500,
nothing applied), `timeout_rate` (HTTP 504 *after* the change was applied, as real nodes do),
`garbage` (the rate of answers garbled *after* the request was handled, as a misbehaving proxy
or a broken node would; `garbage_kind`: `html` an HTML page, `truncated` JSON cut in half,
`array` the answer wrapped in a JSON list, `strings` every number as a string, `shapeless` the
data replaced by an object or value of another shape, `any` one of them at random; the login
and the admin routes are never garbled); `POST /admin/expire-tokens` expires every token. `GET /admin/stats` counts registrations and
resolutions per prefix, as the provincial statistics do.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import hashlib
import json
import random
import secrets
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import yaml
from edgegw.identifier.syntax import Identifier, IdentifierError, parse
from edgegw.identifier.templates import Template, Value, value_problems
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

BATCH_MAX = 2000
WRONG_PASSWORD = "用户名/密码错误！"  # the guide's refusal of a login (identity-auth.md)
BEIJING = dt.timezone(dt.timedelta(hours=8))
META = "META_"  # an IDHub metadata template's handle: PREFIX/META_<version>
LOGIN_PATHS = (
    "/identity/token",
    "/identity/token/v1",
    "/api/v1/doip/public/challenge",
    "/api/v1/doip/public/verify-response",
)


def cipher_digest(password: str, day: dt.date) -> str:
    inner = hashlib.sha256(password.encode()).hexdigest()
    return hashlib.sha256((inner + day.isoformat()).encode()).hexdigest()


GARBAGE_KINDS = ("html", "truncated", "array", "strings", "shapeless")
_HTML = (
    b"<!DOCTYPE html><html><head><title>Service Unavailable</title></head>"
    b"<body><h1>The service is temporarily unavailable</h1><p>Please try again later.</p></body></html>"
)


@dataclass
class Faults:
    latency: float = 0.0
    error_rate: float = 0.0
    timeout_rate: float = 0.0
    garbage: float = 0.0
    garbage_kind: str = "any"


def _stringify(doc: Any) -> Any:
    if isinstance(doc, bool) or doc is None:
        return doc
    if isinstance(doc, int | float):
        return str(doc)
    if isinstance(doc, list):
        return [_stringify(d) for d in doc]
    if isinstance(doc, dict):
        return {k: _stringify(v) for k, v in doc.items()}
    return doc


def garble(body: bytes, kind: str, rng: random.Random) -> tuple[bytes, str]:
    """An answer of the wrong shape made from a right one: (body, content type)."""
    if kind == "any":
        kind = rng.choice(GARBAGE_KINDS)
    if kind == "html":
        return _HTML, "text/html; charset=utf-8"
    if kind == "truncated":
        return body[: max(1, len(body) // 2)], "application/json"
    try:
        doc = json.loads(body)
    except ValueError:
        doc = None
    if kind == "array":
        doc = [doc]
    elif kind == "strings":
        doc = _stringify(doc)
    elif isinstance(doc, dict) and "data" in doc:  # snms: the envelope stays, its data does not
        doc = {**doc, "data": {"unexpected": True} if isinstance(doc["data"], dict) else "OK"}
    elif isinstance(doc, dict):  # Handle.Net: values that are not a list
        doc = {**doc, "values": "OK"}
    return json.dumps(doc).encode(), "application/json"


@dataclass
class NodeState:
    users: dict[str, tuple[str, tuple[str, ...]]]  # username -> (password, prefixes)
    apps: dict[str, tuple[bytes, tuple[str, ...]]] = field(
        default_factory=dict
    )  # IDHub app -> (PEM, prefixes)
    token_ttl: float = 24 * 3600.0
    challenges: dict[str, str] = field(default_factory=dict)  # app handle -> its pending nonce
    tokens: dict[str, tuple[str, float]] = field(default_factory=dict)  # token -> (user, expires)
    faults: Faults = field(default_factory=Faults)
    rng: random.Random = field(default_factory=lambda: random.Random(7))


class Store:
    def __init__(self, path: str = ":memory:"):
        self._templates: dict[tuple[str, str], Template | None] = {}
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(
            """
            CREATE TABLE IF NOT EXISTS handles (
                key TEXT PRIMARY KEY, handle TEXT NOT NULL, prefix TEXT NOT NULL,
                template TEXT, value TEXT NOT NULL, created INTEGER NOT NULL, updated INTEGER NOT NULL);
            CREATE TABLE IF NOT EXISTS templates (
                prefix TEXT NOT NULL, version TEXT NOT NULL, body TEXT NOT NULL,
                PRIMARY KEY (prefix, version));
            CREATE TABLE IF NOT EXISTS stats (
                prefix TEXT NOT NULL, what TEXT NOT NULL, n INTEGER NOT NULL,
                PRIMARY KEY (prefix, what));
            """
        )

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        self.db.execute("BEGIN")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def template(self, prefix: str, version: str) -> Template | None:
        key = (prefix, version)
        if key not in self._templates:  # read once: a batch of 2000 asks 2000 times
            row = self.db.execute(
                "SELECT body FROM templates WHERE prefix = ? AND version = ?", key
            ).fetchone()
            self._templates[key] = Template.from_api(json.loads(row[0])) if row else None
        return self._templates[key]

    def put_template(self, t: Template) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO templates (prefix, version, body) VALUES (?, ?, ?)",
            (t.prefix, t.version, json.dumps(t.to_api())),
        )
        self._templates[(t.prefix, t.version)] = t

    def get(self, handle: str) -> tuple[str, str | None, list[dict[str, Any]]] | None:
        row = self.db.execute(
            "SELECT handle, template, value FROM handles WHERE key = ?", (handle.lower(),)
        ).fetchone()
        return (row[0], row[1], json.loads(row[2])) if row else None

    def exists(self, key: str) -> bool:
        return self.db.execute("SELECT 1 FROM handles WHERE key = ?", (key,)).fetchone() is not None

    def count(self, prefix: str, what: str, n: int = 1) -> None:
        self.db.execute(
            "INSERT INTO stats (prefix, what, n) VALUES (?, ?, ?) "
            "ON CONFLICT(prefix, what) DO UPDATE SET n = n + excluded.n",
            (prefix, what, n),
        )

    def stats(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for prefix, what, n in self.db.execute("SELECT prefix, what, n FROM stats"):
            out.setdefault(prefix, {})[what] = n
        for prefix, n in self.db.execute("SELECT prefix, count(*) FROM handles GROUP BY prefix"):
            out.setdefault(prefix, {})["handles"] = n
        return out


def _ok(data: Any = None) -> dict[str, Any]:
    return {"status": 1, "message": "success", "data": data}


def _fail(status: int, message: str) -> dict[str, Any]:
    return {"status": status, "message": message, "data": None}


def _values(raw: Any) -> tuple[list[Value] | None, str | None]:
    if not isinstance(raw, list):
        return None, "value must be a list"
    out = []
    for v in raw:
        if not isinstance(v, dict) or "index" not in v or "type" not in v:
            return None, "each value needs index, type and data"
        data = v.get("data")
        if (
            not isinstance(data, dict)
            or data.get("format") != "string"
            or not isinstance(data.get("value"), str)
        ):
            return None, f"value index {v.get('index')}: data.format must be 'string' with a string value"
        try:
            out.append(Value(int(v["index"]), str(v["type"]), data["value"]))
        except (TypeError, ValueError):
            return None, f"value index {v.get('index')!r} is not a number"
    return out, None


class Node:
    """What the routes share: the node's state and store, one writer at a time, and the node's
    rules for a registration."""

    def __init__(self, state: NodeState, store: Store):
        self.state, self.store = state, store
        self.lock = asyncio.Lock()  # one writer at a time keeps batches atomic on the one connection

    async def body_of(self, request: Request) -> Any:
        try:
            return orjson.loads(await request.body())
        except ValueError:  # orjson.JSONDecodeError is one
            return None

    def prefixes(self, user: str) -> tuple[str, ...]:
        """The prefixes a logged-in user or IDHub app may write."""
        if user in self.state.apps:
            return self.state.apps[user][1]
        return self.state.users[user][1] if user in self.state.users else ()

    def user_of(self, request: Request) -> str | None:
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Bearer "):
            return None
        entry = self.state.tokens.get(auth[7:])
        if entry is None or entry[1] < time.monotonic():
            return None
        return entry[0]

    async def faulted(self) -> tuple[bool, bool]:
        """(fail now with 500, answer 504 after applying)."""
        f = self.state.faults
        if f.latency:
            await asyncio.sleep(f.latency)
        return self.state.rng.random() < f.error_rate, self.state.rng.random() < f.timeout_rate

    def check(
        self, user: str, handle: Any, template: Any, raw_values: Any, must_template: bool = True
    ) -> tuple[str | None, list[Value]]:
        """Every node rule for one registration; returns (problem, values)."""
        if not isinstance(handle, str):
            return "handle is required", []
        try:
            ident = parse(handle)
        except IdentifierError as exc:
            return f"invalid handle: {exc}", []
        if ident.prefix not in self.prefixes(user):
            return f"no permission for prefix {ident.prefix}", []
        values, problem = _values(raw_values)
        if problem or values is None:
            return problem, []
        if not must_template:
            problems = value_problems(values)
        else:
            t = self.store.template(ident.prefix, str(template)) if template is not None else None
            if t is None:
                return f"template {template} does not exist for prefix {ident.prefix}", values
            problems = t.problems(values)  # the rules of any template included
        return ("; ".join(problems) if problems else None), values

    def write(
        self, handle: str, template: Any, raw_values: list[Any], update: bool, ident: Identifier | None = None
    ) -> None:
        now = time.time_ns() // 1_000_000
        ident = ident or parse(handle)
        if update:
            self.store.db.execute(
                "UPDATE handles SET template = ?, value = ?, updated = ? WHERE key = ?",
                (template, orjson.dumps(raw_values).decode(), now, ident.key),
            )
        else:
            self.store.db.execute(
                "INSERT INTO handles (key, handle, prefix, template, value, created, updated) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (ident.key, handle, ident.prefix, template, orjson.dumps(raw_values).decode(), now, now),
            )

    def apply(
        self, user: str, item: Any, update: bool, tally: Counter[tuple[str, str]] | None = None
    ) -> str | None:
        """Register or update one item under every node rule; the problem, or None if done.
        `tally` collects the statistics of a batch, written once for it."""
        item = item if isinstance(item, dict) else {}
        handle = item.get("handle")
        problem, _ = self.check(user, handle, item.get("templateVersion"), item.get("value"))
        if problem:
            return problem
        ident = parse(handle)
        exists = self.store.exists(ident.key)
        if exists and not update:
            return f"标识已存在 (handle {handle} already exists)"  # the guide's wording, and ours
        if not exists and update:
            return f"handle {handle} does not exist"
        self.write(handle, item.get("templateVersion"), item["value"], update, ident)
        what = (ident.prefix, "updates" if update else "registrations")
        if tally is None:
            self.store.count(*what)
        else:
            tally[what] += 1
        return None

    async def guarded(self, request: Request) -> tuple[str | None, Any, bool]:
        """(user, early answer, answer 504 after applying): login, then the injected faults."""
        user = self.user_of(request)
        if user is None:
            return None, _fail(-1, "not logged in or the token has expired"), False
        fail, late_504 = await self.faulted()
        if fail:
            return None, JSONResponse({"status": -4, "message": "internal error"}, status_code=500), False
        return user, None, late_504

    def late(self, late_504: bool, answer: Any) -> Any:
        return JSONResponse({"message": "gateway timeout"}, status_code=504) if late_504 else answer

    def basic_user(self, request: Request) -> str | None:
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Basic "):
            return None
        try:
            user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
        except ValueError:
            return None
        return user if user in self.state.users and self.state.users[user][0] == password else None


def _hs(code: int, http: int = 200, **extra: Any) -> Any:
    return JSONResponse({"responseCode": code, **extra}, status_code=http)


def _snms_routes(app: Any, node: Node) -> None:
    """The SNMS API: login, resolve, register, update and delete, singly and in batches."""

    def issue(user: str) -> str:
        tok = secrets.token_hex(16)
        node.state.tokens[tok] = (user, time.monotonic() + node.state.token_ttl)
        return tok

    @app.post("/identity/token")
    async def token(request: Request) -> Any:
        body = await node.body_of(request) or {}
        user = body.get("username") if isinstance(body, dict) else None
        if user not in node.state.users or node.state.users[user][0] != body.get("password"):
            return _fail(-2, WRONG_PASSWORD)
        return _ok({"token": issue(user)})

    @app.post("/identity/token/v1")
    async def token_cipher(request: Request) -> Any:
        body = await node.body_of(request) or {}
        user = body.get("username") if isinstance(body, dict) else None
        if user not in node.state.users:
            return _fail(-2, WRONG_PASSWORD)
        day = dt.datetime.now(BEIJING).date()  # the node's date: only today's digest is taken
        if not secrets.compare_digest(
            str(body.get("password")), cipher_digest(node.state.users[user][0], day)
        ):
            return _fail(-2, WRONG_PASSWORD)
        return _ok({"token": issue(user)})

    @app.get("/identityv2/data/detail")
    async def detail(request: Request, handle: str = "") -> Any:
        user = node.user_of(request)
        if user is None:
            return _fail(-1, "not logged in or the token has expired")
        fail, _ = await node.faulted()
        if fail:
            return JSONResponse({"status": -4, "message": "internal error"}, status_code=500)
        try:
            ident = parse(handle)
        except IdentifierError as exc:
            return _fail(-2, f"invalid handle: {exc}")
        rec = node.store.get(handle)
        node.store.count(ident.prefix, "resolutions")
        if rec is None:
            return _fail(-2, f"handle {handle} does not exist")
        # as a real node, it adds the template version at the reserved index 1001 (handle-operate.md)
        tv = {"index": 1001, "type": "TEMPLATE", "auth": "1", "data": {"format": "string", "value": rec[1]}}
        value = [*rec[2], tv] if rec[1] is not None else rec[2]
        return _ok({"prefix": ident.prefix, "handle": rec[0], "templateVersion": rec[1], "value": value})

    async def single(request: Request, update: bool) -> Any:
        user, early, late_504 = await node.guarded(request)
        if user is None:
            return early
        body = await node.body_of(request)
        if not isinstance(body, dict):
            return _fail(-2, "the body must be a JSON object")
        async with node.lock:
            problem = node.apply(user, body, update)
        return _fail(-2, problem) if problem else node.late(late_504, _ok(True))

    @app.post("/identityv2/data")
    async def register(request: Request) -> Any:
        return await single(request, update=False)

    @app.put("/identityv2/data")
    async def update(request: Request) -> Any:
        return await single(request, update=True)

    async def batch(request: Request, update: bool) -> Any:
        user, early, late_504 = await node.guarded(request)
        if user is None:
            return early
        body = await node.body_of(request)
        if not isinstance(body, list):
            return _fail(-2, "the body must be a JSON list")
        if len(body) > BATCH_MAX:
            return _fail(-2, f"at most {BATCH_MAX} identifiers per batch, got {len(body)}")
        tally: Counter[tuple[str, str]] = Counter()
        async with node.lock:
            with node.store.transaction():
                results = [
                    {
                        "handle": item.get("handle") if isinstance(item, dict) else None,
                        "msg": node.apply(user, item, update, tally) or "success",
                    }
                    for item in body
                ]
                for (prefix, what), n in tally.items():
                    node.store.count(prefix, what, n)
        return node.late(late_504, _ok(results))

    @app.post("/identityv2/data/batchCreate")
    async def batch_create(request: Request) -> Any:
        return await batch(request, update=False)

    @app.put("/identityv2/data/batchUpdate")
    async def batch_update(request: Request) -> Any:
        return await batch(request, update=True)

    @app.delete("/identityv2/data")
    async def delete(request: Request) -> Any:
        user = node.user_of(request)
        if user is None:
            return _fail(-1, "not logged in or the token has expired")
        body = await node.body_of(request)
        handle = body.get("handle") if isinstance(body, dict) else None
        try:
            ident = parse(str(handle))
        except IdentifierError as exc:
            return _fail(-2, f"invalid handle: {exc}")
        if ident.prefix not in node.prefixes(user):
            return _fail(-3, f"no permission for prefix {ident.prefix}")
        async with node.lock:
            if node.store.get(str(handle)) is None:
                return _fail(-2, f"handle {handle} does not exist")
            node.store.db.execute("DELETE FROM handles WHERE key = ?", (ident.key,))
        return _ok(True)


def _template_routes(app: Any, node: Node) -> None:
    """SNMS templates: read one, define one."""

    @app.get("/snms/api/v5/template")
    async def get_template(request: Request, prefix: str = "", version: str = "") -> Any:
        if node.user_of(request) is None:
            return _fail(-1, "not logged in or the token has expired")
        t = node.store.template(prefix, version)
        if t is None:
            return _fail(-2, f"template {version} does not exist for prefix {prefix}")
        return _ok(t.to_api())

    @app.post("/snms/api/v5/template")
    async def post_template(request: Request) -> Any:
        user = node.user_of(request)
        if user is None:
            return _fail(-1, "not logged in or the token has expired")
        body = await node.body_of(request)
        try:
            t = Template.from_api(body)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            return _fail(-2, f"invalid template: {exc}")
        if t.prefix not in node.prefixes(user):
            return _fail(-3, f"no permission for prefix {t.prefix}")
        bad = [i.id_index for i in t.items if 1000 <= i.id_index <= 1999]
        if bad:
            return _fail(-2, f"indexes {bad} are reserved (1000-1999)")
        node.store.put_template(t)
        return _ok(True)


def _handle_routes(app: Any, node: Node) -> None:
    """The Handle.Net REST API (Basic auth)."""

    @app.get("/api/handles/{handle:path}")
    async def hs_get(handle: str) -> Any:
        fail, _ = await node.faulted()
        if fail:
            return _hs(2, 500, message="server error")
        try:
            ident = parse(handle)
        except IdentifierError as exc:
            return _hs(102, 400, message=str(exc))
        rec = node.store.get(handle)
        node.store.count(ident.prefix, "resolutions")
        if rec is None:
            return _hs(100, 404, handle=handle)
        return _hs(1, 200, handle=rec[0], values=rec[2])

    @app.put("/api/handles/{handle:path}")
    async def hs_put(request: Request, handle: str, overwrite: bool = True) -> Any:
        user = node.basic_user(request)
        if user is None:
            return _hs(402, 401, message="authentication needed")
        fail, late_504 = await node.faulted()
        if fail:
            return _hs(2, 500, message="server error")
        body = await node.body_of(request)
        raw = body.get("values") if isinstance(body, dict) else None
        problem, _ = node.check(user, handle, None, raw, must_template=False)
        if problem:
            return _hs(102 if problem.startswith("invalid handle") else 202, 400, message=problem)
        async with node.lock:
            exists = node.store.get(handle) is not None
            if exists and not overwrite:
                return _hs(101, 409, handle=handle, message="handle already exists")
            node.write(handle, None, raw, update=exists)  # type: ignore[arg-type]
            node.store.count(parse(handle).prefix, "updates" if exists else "registrations")
        if late_504:
            return JSONResponse({"message": "gateway timeout"}, status_code=504)
        return _hs(1, 200 if exists else 201, handle=handle)

    @app.delete("/api/handles/{handle:path}")
    async def hs_delete(request: Request, handle: str) -> Any:
        if node.basic_user(request) is None:
            return _hs(402, 401, message="authentication needed")
        try:
            ident = parse(handle)
        except IdentifierError as exc:
            return _hs(102, 400, message=str(exc))
        async with node.lock:
            if node.store.get(handle) is None:
                return _hs(100, 404, handle=handle)
            node.store.db.execute("DELETE FROM handles WHERE key = ?", (ident.key,))
        return _hs(1, 200, handle=handle)


def _hub(code: int, message: str, data: Any = None, http: int = 200) -> Any:
    body: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        body["data"] = data
    return JSONResponse(body, status_code=http)


def verify_signature(pem: bytes, nonce: str, signature: Any) -> bool:
    """Whether `signature` is Base64 of the RSA PKCS#1 v1.5 SHA-256 signature of the nonce by the
    key whose PEM (public, or private: its public half) is given."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    if not isinstance(signature, str):
        return False
    try:
        raw = base64.b64decode(signature, validate=True)
    except ValueError:
        return False
    if b"PRIVATE KEY" in pem:
        key: Any = serialization.load_pem_private_key(pem, password=None).public_key()
    else:
        key = serialization.load_pem_public_key(pem)
    if not isinstance(key, rsa.RSAPublicKey):
        return False
    try:
        key.verify(raw, nonce.encode(), padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return False
    return True


def metadata_record(t: Template, handle: str) -> dict[str, Any]:
    """A metadata template as the DOIP Retrieve answers it (handle.md, "元数据标识")."""
    return {
        "id": handle,
        "type": "0.TYPE/DO.DOIPMETA",
        "attributes": {
            "content": {
                "basicInfo": {"metaName": t.description, "metaCode": t.version, "metaState": 1},
                "itemInfos": [
                    {
                        "itemBasicInfo": {
                            "itemIndex": i.id_index,
                            "itemCode": i.id_type,
                            "enName": i.id_type,
                            "cnName": i.name,
                            "state": 0,
                        },
                        "itemSchemaInfo": {
                            "dataType": 1,
                            "dataTypeString": "字符型",
                            "minLength": i.min_length,
                            **({"maxLength": i.max_length} if i.max_length is not None else {}),
                        },
                    }
                    for i in t.items
                ],
                "required": [i.id_type for i in t.items if i.required],
                "uniqueness": [],
                "inputItem": [i.id_type for i in t.items],
                "listItem": [],
            }
        },
    }


def _idhub_routes(app: Any, node: Node) -> None:
    """An enterprise node's IDHub OpenAPI: challenge-response login, DOIP operations."""

    def meta(handle: str) -> Template | None:
        try:
            ident = parse(handle)
        except IdentifierError:
            return None
        if not ident.suffix.startswith(META):
            return None
        return node.store.template(ident.prefix, ident.suffix[len(META) :])

    @app.get("/api/v1/doip/public/challenge")
    async def challenge(handle: str = "") -> Any:
        if handle not in node.state.apps:
            return _hub(40508, "标识格式异常")
        nonce = str(secrets.randbelow(10**9))
        node.state.challenges[handle] = nonce
        return _hub(1, "operation was successfully processed", nonce)

    @app.post("/api/v1/doip/public/verify-response")
    async def verify(request: Request) -> Any:
        body = await node.body_of(request)
        handle = body.get("handle") if isinstance(body, dict) else None
        if not isinstance(handle, str) or handle not in node.state.apps:
            return _hub(40508, "标识格式异常")
        nonce = node.state.challenges.pop(handle, None)  # a nonce is good for one answer
        if nonce is None or not verify_signature(node.state.apps[handle][0], nonce, body.get("signature")):
            return _hub(401, "签名验证失败 signature verification failed")
        tok = secrets.token_hex(16)
        node.state.tokens[tok] = (handle, time.monotonic() + node.state.token_ttl)
        return _hub(1, "operation was successfully processed", {"token": tok})

    def content_values(t: Template, content: Any) -> tuple[str | None, list[dict[str, Any]]]:
        if not isinstance(content, dict):
            return "attributes.content must be an object of item English names to values", []
        raw = []
        for name, value in content.items():
            item = next((i for i in t.items if i.id_type == name), None)
            if item is None:
                return f"{name} 不是元数据模板 {t.version} 的属性 (not an item of the template)", []
            if not isinstance(value, str):
                return f"{name}: 属性值须为字符串 (values are strings)", []
            raw.append(Value(item.id_index, name, value).to_api())
        return None, raw

    async def write(request: Request, user: str, target: str, op: str) -> Any:
        try:
            ident = parse(target)
        except IdentifierError:
            return _hub(40508, "标识格式异常")
        if ident.prefix not in node.prefixes(user):
            return _hub(701, "非本企业标识")
        if op == "Delete":
            async with node.lock:
                if node.store.get(target) is None:
                    return _hub(104, "标识对象不存在")
                node.store.db.execute("DELETE FROM handles WHERE key = ?", (ident.key,))
            return None
        body = await node.body_of(request)
        if not isinstance(body, dict) or not isinstance(body.get("attributes"), dict):
            return _hub(400, "请求参数错误: the body is {type, attributes: {content}}")
        t = meta(str(body.get("type")))
        if t is None:
            return _hub(104, f"元数据模板 {body.get('type')} 不存在 (the metadata template does not exist)")
        problem, raw = content_values(t, body["attributes"].get("content"))
        if problem is None:
            values = [Value.from_api(v) for v in raw]
            problems = value_problems(values) + t.problems(values)
            problem = "; ".join(problems) if problems else None
        if problem:
            return _hub(400, problem)
        async with node.lock:
            exists = node.store.get(target) is not None
            if exists and op == "Create":
                return _hub(105, "标识已存在")
            if not exists and op == "Update":
                return _hub(104, "标识对象不存在")
            node.write(target, str(body["type"]), raw, update=exists)
            node.store.count(ident.prefix, "updates" if exists else "registrations")
        return None

    @app.post("/api/v1/doip")
    async def doip_write(request: Request, targetId: str = "", operationId: str = "") -> Any:
        user = node.user_of(request)
        if user is None:
            return _hub(401, "token无效或已过期 (not logged in or the token has expired)", http=401)
        op = operationId.removeprefix("0.DOIP/Op.")
        if op not in ("Create", "Update", "Delete"):
            return _hub(400, f"unknown operationId {operationId!r}")
        fail, late_504 = await node.faulted()
        if fail:
            return _hub(500, "internal error", http=500)
        refused = await write(request, user, targetId, op)
        if refused is not None:
            return refused
        body = await node.body_of(request) if op != "Delete" else None
        return node.late(late_504, _hub(10000, "成功", body))

    @app.get("/api/v1/doip")
    async def doip_retrieve(request: Request, targetId: str = "", operationId: str = "") -> Any:
        if node.user_of(request) is None:
            return _hub(401, "token无效或已过期 (not logged in or the token has expired)", http=401)
        if operationId != "0.DOIP/Op.Retrieve":
            return _hub(400, f"unknown operationId {operationId!r}")
        fail, _ = await node.faulted()
        if fail:
            return _hub(500, "internal error", http=500)
        try:
            ident = parse(targetId)
        except IdentifierError:
            return _hub(40508, "标识格式异常")
        t = meta(targetId)
        if t is not None:
            return _hub(1, "成功", metadata_record(t, targetId))
        rec = node.store.get(targetId)
        node.store.count(ident.prefix, "resolutions")
        if rec is None:
            return _hub(104, "标识对象不存在")
        handle, template, raw = rec
        content = {v["type"]: v.get("data", {}).get("value") for v in raw}
        return _hub(1, "成功", {"id": handle, "type": template, "attributes": {"content": content}})


def _admin_routes(app: Any, node: Node) -> None:
    """Simulator only: counts, the registered handles, faults, token expiry."""

    @app.get("/admin/stats")
    async def stats() -> Any:
        return node.store.stats()

    @app.get("/admin/handles")
    async def handles(prefix: str = "") -> Any:
        rows = node.store.db.execute(
            "SELECT handle, template, value FROM handles WHERE prefix = ? OR ? = '' ORDER BY created, handle",
            (prefix, prefix),
        ).fetchall()
        return [{"handle": h, "templateVersion": t, "value": json.loads(v)} for h, t, v in rows]

    @app.put("/admin/faults")
    async def set_faults(request: Request) -> Any:
        body = await node.body_of(request) or {}
        kind = str(body.get("garbage_kind", "any"))
        if kind not in (*GARBAGE_KINDS, "any"):
            return JSONResponse({"error": f"garbage_kind is one of {', '.join(GARBAGE_KINDS)}, any"}, 422)
        node.state.faults = Faults(
            latency=float(body.get("latency", 0)),
            error_rate=float(body.get("error_rate", 0)),
            timeout_rate=float(body.get("timeout_rate", 0)),
            garbage=float(body.get("garbage", 0)),
            garbage_kind=kind,
        )
        return node.state.faults.__dict__

    @app.post("/admin/expire-tokens")
    async def expire_tokens() -> Any:
        n = len(node.state.tokens)
        node.state.tokens.clear()
        return {"expired": n}


def create_app(state: NodeState, store: Store) -> Any:
    app = FastAPI(title="edgegw secondary-node simulator")
    node = Node(state, store)

    @app.middleware("http")
    async def garbage(request: Request, call_next: Any) -> Any:
        response = await call_next(request)
        f, path = state.faults, request.url.path
        if not f.garbage or path.startswith("/admin/") or path in LOGIN_PATHS:
            return response
        if state.rng.random() >= f.garbage:
            return response
        body = b"".join([chunk async for chunk in response.body_iterator])
        content, ctype = garble(body, f.garbage_kind, state.rng)
        return Response(content, status_code=response.status_code, media_type=ctype)

    _snms_routes(app, node)
    _template_routes(app, node)
    _handle_routes(app, node)
    _idhub_routes(app, node)
    _admin_routes(app, node)
    return app


def load_templates(path: Path, prefixes: tuple[str, ...]) -> list[Template]:
    """Templates from a YAML file: a list of the API's template objects. One without a
    `prefix` is seeded for every prefix the node serves."""
    doc = yaml.safe_load(path.read_text()) or []
    out = []
    for t in doc:
        if t.get("prefix"):
            out.append(Template.from_api(t))
        else:
            out += [Template.from_api({**t, "prefix": p}) for p in prefixes]
    return out


def build(
    users: dict[str, tuple[str, tuple[str, ...]]],
    templates: list[Template],
    store_path: str = ":memory:",
    token_ttl: float = 24 * 3600.0,
    apps: dict[str, tuple[bytes, tuple[str, ...]]] | None = None,
) -> Any:
    """The simulator's app. `apps`: IDHub app handle -> (its PEM key: public, or private whose public
    half checks the signatures, the prefixes it may write)."""
    store = Store(store_path)
    for t in templates:
        store.put_template(t)
    return create_app(NodeState(users=users, apps=apps or {}, token_ttl=token_ttl), store)
