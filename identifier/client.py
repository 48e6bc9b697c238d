"""Clients of a secondary resolution node: the `snms` API and the Handle.Net REST API.

Both sit behind one interface (`NodeClient`). Outcomes are exceptions with a meaning the queue
acts on: `Transient` (network, timeout, HTTP 5xx, 504 "maybe registered": retry later),
`Exists` (the handle is already registered), `NotFound`, `Rejected` (a business failure with
the node's message: do not retry). An expired token (`status: -1` or HTTP 401) is handled here:
log in again and repeat the request once.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from .templates import Template, Value

BATCH_MAX = 2000


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


class _Http:
    def __init__(self, url: str, timeout: float, ca: str | None):
        self.url = url.rstrip("/")
        self.http = httpx.AsyncClient(
            base_url=self.url,
            timeout=timeout,
            verify=_verify(ca),
            limits=httpx.Limits(max_connections=8, max_keepalive_connections=8),
        )

    async def send(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            r = await self.http.request(method, path, **kw)
        except httpx.TimeoutException:
            raise Transient(
                f"no answer from {self.url} within the timeout", maybe_done=method != "GET"
            ) from None
        except httpx.HTTPError as exc:
            raise Transient(f"cannot reach {self.url}: {exc.__class__.__name__}: {exc}") from None
        if r.status_code == 504:
            raise Transient(f"{self.url} answered 504 gateway timeout", maybe_done=True)
        if r.status_code >= 500:
            raise Transient(f"{self.url} answered HTTP {r.status_code}")
        return r

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
    ):
        super().__init__(url, prefix, username, password, timeout, ca)
        self._token: str | None = None
        self._login_lock = asyncio.Lock()
        self.logins = 0

    async def login(self) -> None:
        r = await self._h.send(
            "POST", "/identity/token", json={"username": self._user, "password": self._password}
        )
        body = _envelope(r)
        if body.get("status") != 1:
            raise Rejected(f"login refused: {body.get('message') or r.status_code}")
        token = (body.get("data") or {}).get("token")
        if not token:
            raise Rejected("login answered without a token")
        self._token = token
        self.logins += 1

    async def _call(self, method: str, path: str, **kw: Any) -> Any:
        for attempt in (1, 2):
            token = self._token
            if token is None:
                async with self._login_lock:
                    if self._token is None:
                        await self.login()
                token = self._token
            r = await self._h.send(method, path, headers={"Authorization": f"Bearer {token}"}, **kw)
            body = _envelope(r)
            status = body.get("status")
            if r.status_code == 401 or status == -1:
                async with self._login_lock:
                    if self._token == token:
                        self._token = None  # expired: the next attempt logs in again
                if attempt == 1:
                    continue
                raise Transient("the node keeps refusing the token")
            if status == 1:
                return body.get("data")
            msg = str(body.get("message") or f"status {status}")
            if status == -4:
                raise Transient(f"node internal error: {msg}")
            if status == -3:
                raise Rejected(f"no permission: {msg}")
            if r.status_code == 404 or _missing_message(msg):
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
        if not data:
            raise NotFound(f"{handle} is not registered")
        return Record(
            str(data.get("handle", handle)),
            data.get("templateVersion"),
            tuple(Value.from_api(v) for v in data.get("value") or []),
        )

    async def register(self, reg: Registration) -> None:
        await self._call("POST", "/identityv2/data", json=self._body(reg))

    async def register_batch(self, regs: list[Registration]) -> list[NodeError | None]:
        if len(regs) > BATCH_MAX:
            raise ValueError(f"a batch holds at most {BATCH_MAX} identifiers")
        data = await self._call("POST", "/identityv2/data/batchCreate", json=[self._body(r) for r in regs])
        outcome: dict[str, str] = {}
        for item in data or []:
            outcome[str(item.get("handle", "")).lower()] = str(item.get("msg", ""))
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
        if not data:
            raise NotFound(f"template {version} does not exist for prefix {self.prefix}")
        if isinstance(data, list):
            data = data[0]
        return Template.from_api(data)

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
        r = await self._h.send(method, f"/api/handles/{handle}", auth=self._auth, **kw)
        body = _json(r)
        code = body.get("responseCode")
        if code == 1:
            return body
        msg = str(body.get("message") or _HANDLE_CODES.get(code, f"responseCode {code}"))  # type: ignore[arg-type]
        if code == 2:
            raise Transient(f"handle server error: {msg}")
        if code == 100:
            raise NotFound(msg)
        if code == 101:
            raise Exists(msg)
        if code == 402 or r.status_code == 401:
            raise Rejected(f"authentication refused: {msg}")
        raise Rejected(msg)

    async def resolve(self, handle: str) -> Record:
        body = await self._call("GET", handle)
        return Record(
            str(body.get("handle", handle)), None, tuple(Value.from_api(v) for v in body.get("values") or [])
        )

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


def _json(r: httpx.Response) -> dict[str, Any]:
    try:
        body = r.json()
    except ValueError:
        raise Transient(f"the node answered HTTP {r.status_code} with a body that is not JSON") from None
    if not isinstance(body, dict):
        raise Transient(f"the node answered HTTP {r.status_code} with unexpected JSON")
    return body


def _envelope(r: httpx.Response) -> dict[str, Any]:
    if r.status_code == 401:
        return {"status": -1, "message": "unauthorised"}
    return _json(r)


def from_settings(node: Any, relative: Any) -> NodeClient:
    """A client for the config's `identifier.node` (files relative to the config's folder)."""
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
