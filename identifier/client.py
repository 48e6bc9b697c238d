"""Clients of a resolution node: the `snms` API of secondary nodes, the Handle.Net REST API, and
the `idhub` OpenAPI of enterprise nodes.

All three sit behind one interface (`NodeClient`). Outcomes are exceptions with a meaning the queue
acts on: `Transient` (network, timeout, HTTP 5xx, 504 "maybe registered": retry later),
`Exists` (the handle is already registered), `NotFound`, `Rejected` (a business failure with
the node's message: do not retry), `Unauthorised` (the node refused our credentials: a
config problem, not a verdict on the identifier). An expired token (`status: -1` or HTTP 401)
is handled here: log in again and repeat the request once.

An answer that is not the node's protocol never escapes as another exception: a body that is
not JSON (an HTML error page of a proxy), JSON of another shape (an array where the envelope
belongs, a missing or mistyped field, a status that is an HTTP code of a framework's error
page), an unusable token, or a body over `ANSWER_MAX` bytes is `Transient`: the node did not
say no, so what is queued stays queued and is tried again (for a write, `maybe_done`: it may
have been applied, which the retry recognises). Only the node's own answer saying no is
`Rejected`, and HTTP 413 (the request is too large; a batch is then sent one by one). Text
from the node in a message is one line of at most `MESSAGE_MAX` characters.

Logins follow Teleinfo's public developer guide (github.com/teleinfo-dev/id-guide):
- `snms`, `login: plain`: `POST /identity/token` {username, password}
  (docs/dev-tools/snms/v3/identity-auth.md, "明文传输").
- `snms`, `login: cipher`: `POST /identity/token/v1` {username, password: digest}, the digest
  `sha256hex(sha256hex(password) + "yyyy-MM-dd")` in lower-case hex, the date the node's (Beijing,
  UTC+8) (same page, "密文传输"; its example value is the digest of `123456` on 2019-08-15, though
  its note says `12345`). Near midnight a refused digest is tried once more with the neighbouring
  day, in case the two clocks sit on either side of it.
- `idhub`: `GET /api/v1/doip/public/challenge?handle=<app handle>` -> a nonce in `data`; `POST
  /api/v1/doip/public/verify-response` {handle, signature: Base64(RSA-PKCS#1 v1.5-SHA256(nonce))}
  signed with the app's PKCS#8 private key -> `data.token`, valid 24 h
  (docs/dev-tools/standard/api/challenge.md); then the DOIP calls of
  docs/dev-tools/standard/api/handle.md: `POST /api/v1/doip?targetId=H&operationId=0.DOIP/Op.Create`
  (`Op.Update`, `Op.Delete`) and `GET ...&operationId=0.DOIP/Op.Retrieve`, envelope {code,
  message, data}.

Passwords, digests, tokens and private keys never appear in a message or a log line.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import hashlib
import json
import re
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx
import orjson

from .templates import (
    Malformed,
    Template,
    TemplateItem,
    Value,
    kind_of,
    read_int,
    read_list,
    read_obj,
    read_str,
    text_of,
)

BATCH_MAX = 2000
ANSWER_MAX = 8 * 1024**2  # bytes; a batch answer for 2000 identifiers is about 200 KiB
MESSAGE_MAX = 300  # characters of the node's text kept in a message
_RETRY_LATER = {408, 425, 429}  # request timeout, too early, too many requests
_TOKEN = re.compile(r"[\x21-\x7e]{1,4096}")  # what an Authorization header can carry
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
BEIJING = dt.timezone(dt.timedelta(hours=8), "UTC+8")
MIDNIGHT_WINDOW = dt.timedelta(minutes=15)  # how near midnight the neighbouring day is tried too


def sha256hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def cipher_digest(password: str, day: dt.date) -> str:
    """The `login: cipher` password: sha256hex(sha256hex(password) + "yyyy-MM-dd"), lower-case hex
    (docs/dev-tools/snms/v3/identity-auth.md, "密文传输")."""
    return sha256hex(sha256hex(password) + day.isoformat())


def cipher_days(now: dt.datetime) -> list[dt.date]:
    """The node's dates to try, in order: Beijing's today, then, within MIDNIGHT_WINDOW of
    midnight, the day on the other side of it."""
    local = now.astimezone(BEIJING)
    today = local.date()
    since = local - local.replace(hour=0, minute=0, second=0, microsecond=0)
    if since < MIDNIGHT_WINDOW:
        return [today, today - dt.timedelta(days=1)]
    if dt.timedelta(days=1) - since <= MIDNIGHT_WINDOW:
        return [today, today + dt.timedelta(days=1)]
    return [today]


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class NodeError(Exception):
    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class Transient(NodeError):
    """Try again later; `maybe_done` when the node may have applied it (HTTP 504, timeout)."""

    def __init__(self, message: str, maybe_done: bool = False):
        super().__init__(message)
        self.maybe_done = maybe_done


class Rejected(NodeError):
    pass


class Exists(Rejected):
    pass


class NotFound(Rejected):
    pass


class Unauthorised(Rejected):
    """The node refused our credentials (login refused, HTTP authentication refused)."""


@dataclass(frozen=True, slots=True)
class Record:
    handle: str
    template: str | None
    values: tuple[Value, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "handle": self.handle,
            "templateVersion": self.template,
            "values": [{"index": v.index, "type": v.type, "value": v.value} for v in self.values],
        }


@dataclass(frozen=True, slots=True)
class Registration:
    handle: str
    template: str | None
    values: tuple[Value, ...]


class NodeClient(Protocol):
    kind: str

    async def resolve(self, handle: str) -> Record: ...
    async def register(self, reg: Registration) -> None: ...
    async def register_batch(self, regs: list[Registration]) -> list[NodeError | None]: ...
    async def update(self, reg: Registration) -> None: ...
    async def delete(self, handle: str) -> None: ...
    async def template(self, version: str) -> Template: ...
    async def close(self) -> None: ...


def _exists_message(msg: str) -> bool:
    return "already exist" in msg.lower() or "已存在" in msg


def _missing_message(msg: str) -> bool:
    m = msg.lower()
    return "not exist" in m or "not found" in m or "不存在" in msg


def _verify(ca: str | None) -> ssl.SSLContext | bool:
    return ssl.create_default_context(cafile=ca) if ca else True


@dataclass(frozen=True, slots=True)
class Answer:
    """An HTTP answer read in full (at most ANSWER_MAX bytes)."""

    method: str
    status: int
    content_type: str
    body: bytes

    @property
    def write(self) -> bool:
        """A request that changes the node: an unreadable answer may hide that it was applied."""
        return self.method != "GET"

    def describe(self) -> str:
        ctype = self.content_type.split(";")[0].strip() or "no content type"
        return f"HTTP {self.status} ({ctype})"

    def snippet(self) -> str:
        if not self.body.strip():
            return "an empty body"
        return repr(one_line(self.body[:200].decode("utf-8", "replace"), 60))


def one_line(text: str, limit: int = MESSAGE_MAX) -> str:
    """Text from the node as one line of at most `limit` characters."""
    text = " ".join(_CONTROL.sub(" ", text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class _Http:
    def __init__(self, url: str, timeout: float, ca: str | None):
        self.url = url.rstrip("/")
        self.http = httpx.AsyncClient(
            base_url=self.url,
            timeout=timeout,
            verify=_verify(ca),
            limits=httpx.Limits(max_connections=8, max_keepalive_connections=8),
        )

    async def send(self, method: str, path: str, **kw: Any) -> Answer:
        """The answer, or Transient: no answer, a 5xx/408/429, or one larger than ANSWER_MAX."""
        maybe = method != "GET"
        if "json" in kw:  # orjson: a batch of 2,000 registrations is encoded several times faster
            kw["content"] = orjson.dumps(kw.pop("json"))
            kw["headers"] = {**kw.get("headers", {}), "Content-Type": "application/json"}
        try:
            async with self.http.stream(method, path, **kw) as r:
                if r.status_code == 504:
                    raise Transient(f"{self.url} answered 504 gateway timeout", maybe_done=True)
                if r.status_code >= 500 or r.status_code in _RETRY_LATER:
                    raise Transient(f"{self.url} answered HTTP {r.status_code}")
                length = r.headers.get("content-length", "")
                if length.isdigit() and int(length) > ANSWER_MAX:
                    raise Transient(self._too_large(r.status_code), maybe_done=maybe)
                body = bytearray()
                async for chunk in r.aiter_bytes():  # decompressed: a small gzip cannot blow up
                    body += chunk
                    if len(body) > ANSWER_MAX:
                        raise Transient(self._too_large(r.status_code), maybe_done=maybe)
                return Answer(method, r.status_code, r.headers.get("content-type", ""), bytes(body))
        except httpx.TimeoutException:
            raise Transient(f"no answer from {self.url} within the timeout", maybe_done=maybe) from None
        except httpx.HTTPError as exc:  # refused, reset, a broken or mis-encoded answer
            raise Transient(
                f"cannot reach {self.url}: {exc.__class__.__name__}: {one_line(str(exc), 200)}",
                maybe_done=maybe and not isinstance(exc, httpx.ConnectError),
            ) from None

    def _too_large(self, status: int) -> str:
        return f"{self.url} answered HTTP {status} with more than {ANSWER_MAX // 1024**2} MiB; not read"

    async def close(self) -> None:
        await self.http.aclose()


class _Node:
    """What both APIs share: the node's address, the enterprise prefix, one HTTP client."""

    def __init__(
        self,
        url: str,
        prefix: str,
        username: str | None,
        password: str | None,
        timeout: float = 10.0,
        ca: str | None = None,
    ):
        self.prefix = prefix
        self._user, self._password = username, password
        self._h = _Http(url, timeout, ca)

    async def close(self) -> None:
        await self._h.close()


class SnmsClient(_Node):
    """The secondary-node API: JSON envelope {status, message, data}, Bearer token."""

    kind = "snms"

    def __init__(
        self,
        url: str,
        prefix: str,
        username: str | None,
        password: str | None,
        timeout: float = 10.0,
        ca: str | None = None,
        login: str = "plain",
        clock: Callable[[], dt.datetime] = _utcnow,
    ):
        super().__init__(url, prefix, username, password, timeout, ca)
        if login not in ("plain", "cipher"):
            raise ValueError(f"login is plain or cipher, not {login!r}")
        self.login_mode = login
        self._clock = clock
        self._token: str | None = None
        self._login_lock = asyncio.Lock()
        self.logins = 0

    async def login(self) -> None:
        if self.login_mode == "plain":
            data = await self._login_once("/identity/token", self._password)
        else:
            days = cipher_days(self._clock())
            for n, day in enumerate(days):
                try:
                    data = await self._login_once(
                        "/identity/token/v1", cipher_digest(self._password or "", day)
                    )
                    break
                except Unauthorised:
                    if n == len(days) - 1:
                        raise
        token = data.get("token") if isinstance(data, dict) else None
        if not isinstance(token, str) or not _TOKEN.fullmatch(token):
            raise Transient(f"the node answered the login without a usable token ({kind_of(token)})")
        self._token = token
        self.logins += 1

    async def _login_once(self, path: str, password: str | None) -> Any:
        """One login request: its data, or Unauthorised (refused) / Transient."""
        a = await self._h.send("POST", path, json={"username": self._user, "password": password})
        if a.status == 401:
            raise Unauthorised("login refused: HTTP 401")
        status, message, data = _envelope(a)
        if status == -4:
            raise Transient(f"node internal error at login: {message or 'status -4'}")
        if status != 1:
            how = " (cipher)" if self.login_mode == "cipher" else ""
            raise Unauthorised(f"login refused{how}: {message or f'status {status}'}")
        return data

    async def _call(self, method: str, path: str, **kw: Any) -> Any:
        for attempt in (1, 2):
            token = self._token
            if token is None:
                async with self._login_lock:
                    if self._token is None:
                        await self.login()
                token = self._token
            a = await self._h.send(method, path, headers={"Authorization": f"Bearer {token}"}, **kw)
            status, message, data = _envelope(a)
            if status == -1:
                async with self._login_lock:
                    if self._token == token:
                        self._token = None  # expired: the next attempt logs in again
                if attempt == 1:
                    continue
                raise Transient("the node keeps refusing the token", maybe_done=a.write)
            if status == 1:
                return data
            msg = message or f"status {status}"
            if status == -4:
                raise Transient(f"node internal error: {msg}", maybe_done=a.write)
            if status == -3:
                raise Rejected(f"no permission: {msg}")
            if a.status == 404 or _missing_message(msg):
                raise NotFound(msg)
            if _exists_message(msg):
                raise Exists(msg)
            raise Rejected(msg)
        raise AssertionError("unreachable")

    @staticmethod
    def _body(reg: Registration) -> dict[str, Any]:
        return {
            "handle": reg.handle,
            "templateVersion": reg.template,
            "value": [v.to_api() for v in reg.values],
        }

    async def resolve(self, handle: str) -> Record:
        data = await self._call("GET", "/identityv2/data/detail", params={"handle": handle})
        if data is None or data == {} or data == []:
            raise NotFound(f"{handle} is not registered")
        return _record(data, handle, "value", "templateVersion")

    async def register(self, reg: Registration) -> None:
        await self._call("POST", "/identityv2/data", json=self._body(reg))

    async def register_batch(self, regs: list[Registration]) -> list[NodeError | None]:
        if len(regs) > BATCH_MAX:
            raise ValueError(f"a batch holds at most {BATCH_MAX} identifiers")
        data = await self._call("POST", "/identityv2/data/batchCreate", json=[self._body(r) for r in regs])
        if data is not None and not isinstance(data, list):
            raise Transient(f"the node's batch answer is {kind_of(data)}, not a list", maybe_done=True)
        outcome: dict[str, str] = {}
        for item in data or []:  # an item of another shape tells nothing: its handle stays unknown
            if (
                isinstance(item, dict)
                and isinstance(item.get("handle"), str)
                and isinstance(item.get("msg"), str)
            ):
                outcome[item["handle"].lower()] = one_line(item["msg"])
        out: list[NodeError | None] = []
        for reg in regs:
            msg = outcome.get(reg.handle.lower())
            if msg is None:
                out.append(Transient("the batch answer does not mention this handle", maybe_done=True))
            elif msg == "success":
                out.append(None)
            elif _exists_message(msg):
                out.append(Exists(msg))
            else:
                out.append(Rejected(msg))
        return out

    async def update(self, reg: Registration) -> None:
        await self._call("PUT", "/identityv2/data", json=self._body(reg))

    async def delete(self, handle: str) -> None:
        await self._call("DELETE", "/identityv2/data", json={"handle": handle})

    async def template(self, version: str) -> Template:
        data = await self._call(
            "GET", "/snms/api/v5/template", params={"prefix": self.prefix, "version": version}
        )
        if isinstance(data, list):  # some nodes answer a list of the matching templates
            data = data[0] if data else None
        if data is None or data == {}:
            raise NotFound(f"template {version} does not exist for prefix {self.prefix}")
        try:
            return Template.from_api(data)
        except Malformed as exc:
            raise Transient(f"the node's template {version} cannot be read: {exc}") from None

    async def create_template(self, template: Template) -> None:
        await self._call("POST", "/snms/api/v5/template", json=template.to_api())


_HANDLE_CODES = {
    2: "server error",
    100: "handle not found",
    101: "handle already exists",
    102: "invalid handle",
    200: "values not found",
    201: "value already exists",
    202: "invalid value",
    402: "authentication needed",
}


class HandleClient(_Node):
    """The Handle.Net REST API (`/api/handles/{handle}`, responseCode), HTTP Basic authentication.

    It has no templates and no batch call: a batch is sent as concurrent single requests."""

    kind = "handle"

    def __init__(
        self,
        url: str,
        prefix: str,
        username: str | None,
        password: str | None,
        timeout: float = 10.0,
        ca: str | None = None,
    ):
        super().__init__(url, prefix, username, password, timeout, ca)
        self._auth = httpx.BasicAuth(username, password or "") if username else None

    async def _call(self, method: str, handle: str, **kw: Any) -> dict[str, Any]:
        a = await self._h.send(method, f"/api/handles/{handle}", auth=self._auth, **kw)
        try:
            body = _object(a)
        except Transient:
            if a.status == 401:
                raise Unauthorised("authentication refused: HTTP 401") from None
            raise
        try:
            code = read_int(body.get("responseCode"), "its responseCode")
        except Malformed as exc:
            raise Transient(f"the node answered {a.describe()}: {exc}", maybe_done=a.write) from None
        if code == 1:
            return body
        msg = _message(body) or _HANDLE_CODES.get(code, f"responseCode {code}")
        if code == 2:
            raise Transient(f"handle server error: {msg}", maybe_done=a.write)
        if code == 100:
            raise NotFound(msg)
        if code == 101:
            raise Exists(msg)
        if code == 402 or a.status == 401:
            raise Unauthorised(f"authentication refused: {msg}")
        raise Rejected(msg)

    async def resolve(self, handle: str) -> Record:
        return _record(await self._call("GET", handle), handle, "values", None)

    async def register(self, reg: Registration) -> None:
        await self._call(
            "PUT",
            reg.handle,
            params={"overwrite": "false"},
            json={"values": [v.to_api() for v in reg.values]},
        )

    async def register_batch(self, regs: list[Registration]) -> list[NodeError | None]:
        async def one(reg: Registration) -> NodeError | None:
            try:
                await self.register(reg)
            except NodeError as exc:
                return exc
            return None

        sem = asyncio.Semaphore(16)

        async def bounded(reg: Registration) -> NodeError | None:
            async with sem:
                return await one(reg)

        return list(await asyncio.gather(*(bounded(r) for r in regs)))

    async def update(self, reg: Registration) -> None:
        await self._call(
            "PUT", reg.handle, params={"overwrite": "true"}, json={"values": [v.to_api() for v in reg.values]}
        )

    async def delete(self, handle: str) -> None:
        await self._call("DELETE", handle)

    async def template(self, version: str) -> Template:
        raise NotFound("the Handle.Net API has no templates")


IDHUB_OK = {1, 10000}  # the guide: 1 for challenge, verify and retrieve, 10000 for writes
IDHUB_META = "0.TYPE/DO.DOIPMETA"  # the type of a metadata template's record
_OP = "0.DOIP/Op."


class IdhubClient(_Node):
    """An enterprise node's OpenAPI (IDHub): challenge-response login with the app's private key,
    then the DOIP calls (docs/dev-tools/standard/api/challenge.md, .../handle.md).

    A record is `{type: <metadata template handle>, attributes: {content: {<item enName>: value}}}`:
    a registration's template is the template's handle and each value's `type` the item's English
    name. The DOIP API has no batch call: a batch is sent as concurrent single requests. Codes: 1 or
    10000 success, 104 not found, 105 already exists, 701 not this enterprise's identifier, 403 no
    permission, 401 (or HTTP 401) token missing or expired: log in again.

    The private key is read at the first login (`cryptography` is imported then, not before)."""

    kind = "idhub"

    def __init__(
        self,
        url: str,
        prefix: str,
        app_handle: str,
        private_key: str,
        timeout: float = 10.0,
        ca: str | None = None,
        concurrency: int = 16,
    ):
        super().__init__(url, prefix, app_handle, None, timeout, ca)
        self.app_handle = app_handle
        self._key_path = private_key
        self._key: Any = None
        self._token: str | None = None
        self._login_lock = asyncio.Lock()
        self._concurrency = concurrency
        self._templates: dict[str, Template] = {}
        self.logins = 0

    def _private_key(self) -> Any:
        if self._key is None:
            self._key = load_private_key(self._key_path)
        return self._key

    async def login(self) -> None:
        key = self._private_key()  # Unauthorised if the file cannot be used: a config problem
        a = await self._h.send("GET", "/api/v1/doip/public/challenge", params={"handle": self.app_handle})
        code, message, nonce = _idhub_envelope(a)
        if code not in IDHUB_OK:
            raise _login_refused("challenge", code, message)
        if isinstance(nonce, int) and not isinstance(nonce, bool):
            nonce = str(nonce)
        if not isinstance(nonce, str) or not nonce or len(nonce) > 4096:
            raise Transient(f"the node answered the challenge without a usable nonce ({kind_of(nonce)})")
        signature = sign_nonce(key, nonce)
        a = await self._h.send(
            "POST",
            "/api/v1/doip/public/verify-response",
            json={"handle": self.app_handle, "signature": signature},
        )
        code, message, data = _idhub_envelope(a)
        if code not in IDHUB_OK:
            raise _login_refused("verify-response", code, message)
        token = data.get("token") if isinstance(data, dict) else None
        if not isinstance(token, str) or not _TOKEN.fullmatch(token):
            raise Transient(f"the node answered the login without a usable token ({kind_of(token)})")
        self._token = token
        self.logins += 1

    async def _call(self, method: str, target: str, op: str, body: Any = None) -> Any:
        params = {"targetId": target, "operationId": _OP + op}
        kw: dict[str, Any] = {"params": params}
        if body is not None:
            kw["json"] = body
        for attempt in (1, 2):
            token = self._token
            if token is None:
                async with self._login_lock:
                    if self._token is None:
                        await self.login()
                token = self._token
            a = await self._h.send(method, "/api/v1/doip", headers={"Authorization": f"Bearer {token}"}, **kw)
            code, message, data = _idhub_envelope(a)
            if code == 401:
                async with self._login_lock:
                    if self._token == token:
                        self._token = None  # expired: the next attempt logs in again
                if attempt == 1:
                    continue
                raise Transient("the node keeps refusing the token", maybe_done=a.write)
            if code in IDHUB_OK:
                return data
            msg = message or f"code {code}"
            if 500 <= code < 600:
                raise Transient(f"node internal error: {msg} (code {code})", maybe_done=a.write)
            if code == 104:
                raise NotFound(msg)
            if code == 105 or _exists_message(msg):
                raise Exists(msg)
            if code == 701:
                raise Rejected(f"not this enterprise's identifier: {msg}")
            if code == 403:
                raise Rejected(f"no permission: {msg}")
            if _missing_message(msg):
                raise NotFound(msg)
            raise Rejected(f"{msg} (code {code})")
        raise AssertionError("unreachable")

    @staticmethod
    def _body(reg: Registration) -> dict[str, Any]:
        return {"type": reg.template, "attributes": {"content": {v.type: v.value for v in reg.values}}}

    async def resolve(self, handle: str) -> Record:
        data = await self._call("GET", handle, "Retrieve")
        if data is None or data == {}:
            raise NotFound(f"{handle} is not registered")
        try:
            d = read_obj(data, "the record")
            name = d.get("id", handle)
            type_ = d.get("type")
            if not isinstance(name, str) or (type_ is not None and not isinstance(type_, str)):
                raise Malformed("its id or type is not a string")
            attributes = read_obj(d.get("attributes"), "its attributes")
        except Malformed as exc:
            raise Transient(f"the node's record of {handle} cannot be read: {exc}") from None
        indexes: dict[str, int] = {}
        if type_ and type_ != IDHUB_META:
            with contextlib.suppress(NotFound, Rejected):  # no template to read: indexes stay 0
                indexes = {i.id_type: i.id_index for i in (await self.template(type_)).items}
        try:
            values = _idhub_values(attributes, indexes)
        except Malformed as exc:
            raise Transient(f"the node's record of {handle} cannot be read: {exc}") from None
        return Record(name, type_, values)

    async def register(self, reg: Registration) -> None:
        await self._call("POST", reg.handle, "Create", self._body(reg))

    async def register_batch(self, regs: list[Registration]) -> list[NodeError | None]:
        if len(regs) > BATCH_MAX:
            raise ValueError(f"a batch holds at most {BATCH_MAX} identifiers")
        sem = asyncio.Semaphore(self._concurrency)

        async def one(reg: Registration) -> NodeError | None:
            async with sem:
                try:
                    await self.register(reg)
                except NodeError as exc:
                    return exc
                return None

        return list(await asyncio.gather(*(one(r) for r in regs)))

    async def update(self, reg: Registration) -> None:
        await self._call("POST", reg.handle, "Update", self._body(reg))

    async def delete(self, handle: str) -> None:
        await self._call("POST", handle, "Delete")

    async def template(self, version: str) -> Template:
        """The metadata template whose handle is `version` (a Retrieve of that handle)."""
        t = self._templates.get(version)
        if t is not None:
            return t
        data = await self._call("GET", version, "Retrieve")
        if data is None or data == {}:
            raise NotFound(f"metadata template {version} does not exist")
        try:
            t = metadata_template(version, data)
        except Malformed as exc:
            raise Transient(f"the node's metadata template {version} cannot be read: {exc}") from None
        self._templates[version] = t
        return t


def load_private_key(path: str) -> Any:
    """The app's RSA private key from a PKCS#8 PEM file; Unauthorised (a message naming the file,
    never its content) if it cannot be read or is not one."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    try:
        pem = Path(path).read_bytes()
    except OSError as exc:
        raise Unauthorised(f"cannot read the private key file {path}: {exc.strerror or exc}") from None
    if b"-----BEGIN PRIVATE KEY-----" not in pem:
        raise Unauthorised(f"{path} is not a PKCS#8 PEM private key (-----BEGIN PRIVATE KEY-----)")
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        raise Unauthorised(f"{path}: the private key cannot be read (unencrypted PKCS#8 PEM)") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise Unauthorised(f"{path}: the private key is not an RSA key")
    return key


def sign_nonce(key: Any, nonce: str) -> str:
    """Base64 of the RSA PKCS#1 v1.5 SHA-256 signature of the nonce's bytes, as the guide's
    example signs it (docs/dev-tools/standard/api/challenge.md, "签名生成")."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    return base64.b64encode(key.sign(nonce.encode(), padding.PKCS1v15(), hashes.SHA256())).decode()


def _login_refused(step: str, code: int, message: str) -> NodeError:
    msg = message or f"code {code}"
    if 500 <= code < 600:
        return Transient(f"node internal error at login ({step}): {msg}")
    return Unauthorised(f"login refused at {step}: {msg} (code {code})")


def _idhub_envelope(a: Answer) -> tuple[int, str, Any]:
    """The IDHub envelope {code, message, data} of an answer: (code, message, data)."""
    if a.status == 401:
        return 401, "unauthorised", None
    body = _object(a)
    try:
        code = read_int(body.get("code"), "its code")
    except Malformed as exc:
        raise Transient(f"the node answered {a.describe()}: {exc}", maybe_done=a.write) from None
    return code, _message(body), body.get("data")


def _idhub_values(attributes: dict[str, Any], indexes: dict[str, int]) -> tuple[Value, ...]:
    """An instance's values: `content` {enName: value} (what Create sends, and this simulator
    answers), or `elements` [{index, type, data: {value}}] (the guide's retrieval example)."""
    if "content" in attributes:
        content = read_obj(attributes["content"], "its content")
        return tuple(
            Value(indexes.get(name, 0), name, text_of(v))
            for name, v in content.items()
            if isinstance(name, str)
        )
    out = []
    for e in read_list(attributes.get("elements"), "its elements"):
        e = read_obj(e, "an element")
        data = e.get("data")
        value = data.get("value") if isinstance(data, dict) else e.get("value", data)
        out.append(
            Value(
                read_int(e.get("index"), "an element's index"),
                read_str(e.get("type"), "an element's type"),
                text_of(value),
            )
        )
    return tuple(out)


def metadata_template(handle: str, data: Any) -> Template:
    """A Template from the Retrieve answer of a metadata template's handle
    (docs/dev-tools/standard/api/handle.md, "元数据标识"): items from `itemInfos`, each item's
    `idType` its English name, required from `required`; `Malformed` if it has not that shape."""
    d = read_obj(data, "the template")
    if d.get("type") != IDHUB_META:
        raise Malformed(f"{handle} is not a metadata template (type {kind_of(d.get('type'))})")
    content = read_obj(read_obj(d.get("attributes"), "its attributes").get("content"), "its content")
    required = {x for x in read_list(content.get("required"), "its required") if isinstance(x, str)}
    items = []
    for info in read_list(content.get("itemInfos"), "its itemInfos"):
        info = read_obj(info, "an item")
        basic = read_obj(info.get("itemBasicInfo"), "an item's itemBasicInfo")
        schema = info.get("itemSchemaInfo")
        schema = {} if schema is None else read_obj(schema, "an item's itemSchemaInfo")
        en = read_str(basic.get("enName"), "an item's enName")
        low, high = schema.get("minLength"), schema.get("maxLength")
        items.append(
            TemplateItem(
                name=text_of(basic.get("cnName")) or en,
                id_type=en,
                id_index=read_int(basic.get("itemIndex"), f"item {en!r}: itemIndex"),
                required=en in required,
                min_length=0 if low is None else read_int(low, f"item {en!r}: minLength"),
                max_length=None if high is None else read_int(high, f"item {en!r}: maxLength"),
            )
        )
    prefix = handle.partition("/")[0]
    return Template(
        prefix,
        handle,
        text_of(read_obj(content.get("basicInfo") or {}, "its basicInfo").get("metaName")),
        tuple(items),
    )


def _parse(a: Answer) -> Any:
    if a.status == 413:
        raise Rejected("the node refused the request as too large (HTTP 413)")
    try:
        return json.loads(a.body)
    except (ValueError, RecursionError):  # not JSON, not UTF-8, or nested too deeply
        raise Transient(
            f"the node answered {a.describe()} with a body that is not JSON: {a.snippet()}",
            maybe_done=a.write,
        ) from None


def _object(a: Answer) -> dict[str, Any]:
    body = _parse(a)
    if not isinstance(body, dict):
        raise Transient(
            f"the node answered {a.describe()} with {kind_of(body)} instead of an object",
            maybe_done=a.write,
        )
    return body


def _message(body: dict[str, Any]) -> str:
    return one_line(text_of(body.get("message")))


def _envelope(a: Answer) -> tuple[int, str, Any]:
    """The snms envelope {status, message, data} of an answer: (status, message, data)."""
    if a.status == 401:
        return -1, "unauthorised", None
    body = _object(a)
    try:
        status = read_int(body.get("status"), "its status")
    except Malformed as exc:
        raise Transient(f"the node answered {a.describe()}: {exc}", maybe_done=a.write) from None
    if not -100 < status < 100:  # {"status": 404, "error": ...}: a framework's error page
        raise Transient(
            f"the node answered {a.describe()} with status {status}, not its answer envelope",
            maybe_done=a.write,
        )
    return status, _message(body), body.get("data")


def _record(d: Any, handle: str, values: str, template: str | None) -> Record:
    """A record from a node's answer: `values` and `template` name its fields."""
    try:
        if not isinstance(d, dict):
            raise Malformed(f"it is {kind_of(d)}, not an object")
        name = d.get("handle", handle)
        version = d.get(template) if template else None
        if not isinstance(name, str) or (version is not None and not isinstance(version, str)):
            raise Malformed("its handle or templateVersion is not a string")
        if values not in d:
            raise Malformed(f"it has no '{values}'")
        return Record(name, version, tuple(Value.from_api(v) for v in read_list(d.get(values), values)))
    except Malformed as exc:
        raise Transient(f"the node's record of {handle} cannot be read: {exc}") from None


def from_settings(node: Any, relative: Any) -> NodeClient:
    """A client for the config's `identifier.node` (files relative to the config's folder)."""
    ca = str(relative(node.ca)) if node.ca else None
    if node.kind == "idhub":
        return IdhubClient(
            node.url, node.prefix, node.app_handle, str(relative(node.private_key)), node.timeout, ca
        )
    if node.kind == "snms":
        return SnmsClient(
            node.url,
            node.prefix,
            node.username,
            node.password.get_secret_value() if node.password else None,
            node.timeout,
            ca,
            login=node.login,
        )
    return make_client(
        node.kind,
        node.url,
        node.prefix,
        node.username,
        node.password.get_secret_value() if node.password else None,
        node.timeout,
        str(relative(node.ca)) if node.ca else None,
    )


def make_client(
    kind: str,
    url: str,
    prefix: str,
    username: str | None,
    password: str | None,
    timeout: float = 10.0,
    ca: str | None = None,
) -> NodeClient:
    cls = SnmsClient if kind == "snms" else HandleClient
    return cls(url, prefix, username, password, timeout, ca)
