"""What every HTTP request passes before a route: pure ASGI layers, nothing buffered.

- `Guard`: any exception a route lets through becomes a JSON problem answer (500, or 503 when
  the queue file cannot be read) and one log line, never a traceback in the answer.
- `TrustedHosts`: the Host header must name this gateway (DNS rebinding), else 421.
- `Concurrency`: at most `limit` requests in progress, else 503 at once.
- `BodyLimit`: a body larger than `limit` bytes is refused with 413 before it is read (by its
  Content-Length) or as soon as the streamed chunks pass the limit (chunked uploads).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import socket
import sqlite3
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from ..logs import RateLimited

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger("edgegw.api")
limited = RateLimited(log, 1.0)  # refusals: one line per kind per second, the next counts the rest

WILDCARDS = ("0.0.0.0", "::", "")


def problem_body(status: int, reason: str) -> bytes:
    return json.dumps({"status": status, "error": reason}, ensure_ascii=False).encode()


async def send_problem(
    send: Send, status: int, reason: str, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = problem_body(status, reason)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value)
    return None


class _Tracked:
    """A `send` that remembers whether the answer has started."""

    def __init__(self, send: Send):
        self.send = send
        self.started = False

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
        await self.send(message)


class Guard:
    def __init__(self, app: App):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        tracked = _Tracked(send)
        try:
            await self.app(scope, receive, tracked)
        except Exception as exc:
            route = f"{scope.get('method', '?')} {scope.get('path', '?')}"
            if isinstance(exc, sqlite3.Error):
                status, reason = 503, f"the queue file cannot be read: {exc}"
                limited.log(
                    "sqlite", logging.ERROR, "request failed: queue file error", route=route, error=str(exc)
                )
            else:
                status, reason = 500, f"internal error: {type(exc).__name__}"
                if limited.allow(f"internal {route}"):
                    log.error(
                        "request failed with an internal error",
                        exc_info=exc,
                        extra={"fields": {"route": route}},
                    )
            if not tracked.started:
                await send_problem(send, status, reason)


def _unmapped(
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return _unmapped(ipaddress.ip_address(text.split("%", 1)[0]))
    except ValueError:
        return None


def host_of(header: str) -> str:
    """The host name of a Host header, lower case, without port, brackets or trailing dot."""
    v = header.strip().lower()
    if v.startswith("["):
        return v[1 : v.find("]")] if "]" in v else v
    if v.count(":") == 1:
        v = v.split(":", 1)[0]
    return v.rstrip(".")


class TrustedHosts:
    """Answers only requests whose Host is one of the gateway's names: the listen address,
    localhost, any loopback address, `api.trusted_hosts` (exact, or `*.domain`), and when
    listening on every interface any address literal and the machine's host name. A web page
    whose name was re-pointed at the gateway (DNS rebinding) sends its own name and is refused.
    A request without a Host header (HTTP/1.0) cannot come from such a page and is answered."""

    def __init__(self, app: App, settings: Callable[[], Any]):
        self.app = app
        self.settings = settings
        name = socket.gethostname().lower()  # no DNS lookup: the plant network may have none
        self.machine = {name, name.split(".", 1)[0]} - {""}

    def trusted(self, host: str) -> bool:
        s = self.settings()
        listen = s.host.lower()
        wildcard = listen in WILDCARDS
        ip = parse_ip(host)
        if ip is not None:
            if ip.is_loopback or wildcard or ip == parse_ip(listen):
                return True
            return any(ip == parse_ip(t.strip("[]")) for t in s.trusted_hosts)
        if host in ("localhost", listen) or (wildcard and host in self.machine):
            return True
        for t in s.trusted_hosts:
            t = t.lower().rstrip(".")
            if host == t or (t.startswith("*.") and host.endswith(t[1:])):
                return True
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            raw = _header(scope, b"host")
            if raw is not None:
                host = host_of(raw.decode("latin-1"))
                if not self.trusted(host):
                    limited.log("host", logging.WARNING, "request refused: unknown Host", host=host[:100])
                    reason = (
                        f"Host '{host[:100]}' is not a name of this gateway: "
                        "add it to api.trusted_hosts to use it"
                    )
                    await send_problem(send, 421, reason)
                    return
        await self.app(scope, receive, send)


class Concurrency:
    """At most `limit` requests in progress at once; beyond, 503 with Retry-After. The paths in
    `exempt` are not counted (liveness, and the live feed, which has its own cap)."""

    def __init__(self, app: App, limit: int, exempt: tuple[str, ...] = ()):
        self.app = app
        self.limit = limit
        self.exempt = exempt
        self.active = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in self.exempt:
            await self.app(scope, receive, send)
            return
        if self.active >= self.limit:
            limited.log("busy", logging.WARNING, "request refused: too many at once", limit=self.limit)
            await send_problem(
                send,
                503,
                f"the API is busy ({self.limit} requests in progress): retry",
                [(b"retry-after", b"1")],
            )
            return
        self.active += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.active -= 1


class BodyTooLarge(Exception):
    pass


class BodyLimit:
    def __init__(self, app: App, limit: int):
        self.app = app
        self.limit = limit

    async def _refuse(self, send: Send, scope: Scope) -> None:
        limited.log(
            "body",
            logging.WARNING,
            "request refused: body too large",
            route=scope.get("path", "?"),
            limit=self.limit,
        )
        await send_problem(
            send,
            413,
            f"the request body is larger than {self.limit} bytes",
            [(b"connection", b"close")],  # the rest of the body is not read
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = _header(scope, b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                await send_problem(send, 400, "Content-Length is not a number", [(b"connection", b"close")])
                return
            if declared > self.limit:
                await self._refuse(send, scope)
                return
        received = 0
        limit = self.limit

        async def bounded() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge
            return message

        tracked = _Tracked(send)
        try:
            await self.app(scope, bounded, tracked)
        except BodyTooLarge:
            if not tracked.started:
                await self._refuse(send, scope)
