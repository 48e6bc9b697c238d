"""The routes of the README's "Local HTTP API and status page", the status page and its live feed.

Reads are open on loopback (or need the token, or a session opened with it, when
`read_requires_token` is set or the API listens off loopback); every write needs the Bearer
token, checked before the body is read, and write-back is off while no token is configured.
Every failure is answered with JSON: {"status": <code>, "error": "<reason>"}. Before any route,
the layers of guard.py check the Host header, the number of requests in progress and the size
of the body (see create_app for the order).
"""

from __future__ import annotations

import asyncio
import html
import json
import logging
import time
from importlib import resources
from typing import TYPE_CHECKING, Annotated, Any

import orjson
from edgegw.identifier.client import NotFound, Rejected, Transient
from edgegw.identifier.syntax import IdentifierError, parse
from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from .. import __version__
from ..logs import event
from ..metrics import exposition, registry_for
from ..writeback import write_error
from . import views
from .auth import SESSION_IDLE, SESSION_MAX, AuthError, Sessions, bearer, check_token, expected_token
from .feed import EventStream, Feed
from .guard import BodyLimit, Concurrency, Guard, TrustedHosts, limited
from .history import History

if TYPE_CHECKING:
    from ..runtime import Gateway

log = logging.getLogger("edgegw.api")

# the shape of an identifier (identifier.syntax checks the details and says what is wrong)
HANDLE_PATTERN = r"^[0-9]+(\.[0-9]+)*/[A-Za-z0-9_.:-]+$"
MAX_BODY = 64 * 1024  # bytes; a write is a few dozen
BODY_TIMEOUT = 5.0  # seconds for a body to arrive once the headers have
MAX_REQUESTS = 32  # requests in progress at once (the live feed has its own cap, api.max_streams)
MAX_DIGITS = 20  # an integer longer than this fits no point (uint64 has 20 digits)
EVENTS = "/api/v1/events"
ALARMS = "/api/v1/alarms"
# the status page's chart library (uPlot, MIT, vendor/uPlot.LICENSE): the version is in the name,
# so a browser may keep them
VENDOR = {
    "uPlot-1.6.32.iife.min.js": "text/javascript; charset=utf-8",
    "uPlot-1.6.32.min.css": "text/css; charset=utf-8",
}
VENDOR_HEADERS = {"Cache-Control": "public, max-age=31536000, immutable", "X-Content-Type-Options": "nosniff"}

PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
        "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class ApiError(Exception):
    def __init__(self, status: int, reason: str, headers: dict[str, str] | None = None):
        super().__init__(reason)
        self.status, self.reason, self.headers = status, reason, headers


class WriteBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    value: bool | int | float | str = Field(description="the engineering value, as the point's type")


class Problem(BaseModel):
    status: int
    error: str


def _responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": Problem, "description": PROBLEMS[code]} for code in codes}


PROBLEMS = {
    400: "the body is not JSON, or nested too deeply",
    401: "no token (or session)",
    403: "wrong token, or write-back not enabled",
    404: "unknown device, point or identifier",
    408: "the body did not arrive in time",
    409: "read-only point",
    413: "the body is larger than 64 KiB",
    422: "value of the wrong type or out of range",
    500: "internal error (logged)",
    502: "the device or node refused, or its answer could not be read",
    503: "too busy, or the queue file cannot be used now",
    504: "the device or node did not answer in time",
}
READ_ERRORS = _responses(401, 403, 404, 503)
WRITE_ERRORS = _responses(400, 401, 403, 404, 408, 409, 413, 422, 500, 502, 503, 504)
IDENT_ERRORS = _responses(401, 403, 404, 422, 502, 503, 504)
WRITE_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": WriteBody.model_json_schema()}},
    }
}


def _settings(request: Request) -> Any:
    return request.app.state.gw.cfg.api  # the running config: a reload rotates the token


def reader(request: Request) -> None:
    try:
        request.app.state.sessions.check_read(_settings(request), request)
    except AuthError as exc:
        raise ApiError(exc.status, exc.reason, exc.headers) from None


def writer(request: Request) -> str:
    s = _settings(request)
    try:
        if s is None or s.token is None:
            raise AuthError(403, "write-back is disabled: set api.token in the config to enable it")
        check_token(s, bearer(request))
    except AuthError as exc:
        _refused(request, exc.status, exc.reason)
        raise ApiError(exc.status, exc.reason, exc.headers) from None
    return f"token@{_client(request)}"


Read = Annotated[None, Depends(reader)]
Write = Annotated[str, Depends(writer)]


def _client(request: Request) -> str:
    return request.client.host if request.client else "?"


def _refused(request: Request, status: int, reason: str) -> None:
    """One log line for a refused write (at most one a second per status: see guard.limited)."""
    limited.log(
        f"refused {status}",
        logging.WARNING,
        "write refused",
        device=str(request.path_params.get("device", "?"))[:100],
        point=str(request.path_params.get("point", "?"))[:100],
        status=status,
        error=reason[:300],
        client=_client(request),
    )


class _TooLarge(ValueError):
    pass


def _int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_DIGITS:
        raise _TooLarge(f"a number of {len(text.lstrip('-'))} digits fits no point (at most {MAX_DIGITS})")
    return int(text)


def _constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


def parse_write(raw: bytes) -> WriteBody:
    """The body of a write, or ApiError 400 (not JSON, nested too deeply) / 422 (not a value)."""
    try:
        data = json.loads(raw, parse_int=_int, parse_constant=_constant)
    except _TooLarge as exc:
        raise ApiError(422, str(exc)) from None
    except RecursionError:
        raise ApiError(400, "the body is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ApiError(400, f"the body is not JSON: {str(exc)[:200]}") from None
    try:
        return WriteBody.model_validate(data)
    except ValidationError as exc:
        raise ApiError(422, _validation_reason(exc.errors())) from None
    except RecursionError:
        raise ApiError(400, "the body is nested too deeply") from None


def _validation_reason(errors: Any) -> str:
    parts = []
    for e in errors:
        where = ".".join(str(x) for x in e.get("loc", ()) if x != "body")
        parts.append(f"{where}: {e.get('msg')}" if where else str(e.get("msg")))
    return "; ".join(parts)[:1000] or "invalid request"


async def read_body(request: Request) -> bytes:
    """The body, at most MAX_BODY bytes (BodyLimit refuses more), within BODY_TIMEOUT."""
    chunks: list[bytes] = []
    try:
        async with asyncio.timeout(BODY_TIMEOUT):
            async for chunk in request.stream():
                chunks.append(chunk)
    except TimeoutError:
        raise ApiError(
            408, f"the body did not arrive within {BODY_TIMEOUT:g} s", {"Connection": "close"}
        ) from None
    except ClientDisconnect:
        raise ApiError(400, "the client closed the connection before sending the body") from None
    return b"".join(chunks)


def _docs_page(spec: dict[str, Any]) -> str:
    """A route list from the OpenAPI document: served from the gateway itself, no script."""
    rows = []
    for path, ops in spec.get("paths", {}).items():
        for method, op in ops.items():
            codes = ", ".join(sorted(op.get("responses", {})))
            rows.append(
                f"<tr><td><code>{html.escape(method.upper())}</code></td><td><code>{html.escape(path)}</code></td>"
                f"<td>{html.escape(op.get('summary', ''))}<div class=d>{html.escape(op.get('description', ''))}</div></td>"
                f"<td>{html.escape(codes)}</td></tr>"
            )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>edgegw API</title>'
        "<style>body{font:14px system-ui,sans-serif;margin:18px}table{border-collapse:collapse}"
        "td,th{border-bottom:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}"
        ".d{color:#666;font-size:12px;white-space:pre-wrap}</style></head><body>"
        f"<h1>edgegw {html.escape(str(spec.get('info', {}).get('version', '')))} HTTP API</h1>"
        '<p>The OpenAPI document: <a href="openapi.json">/openapi.json</a>. Errors are JSON: '
        '<code>{"status": 404, "error": "reason"}</code>.</p>'
        "<table><tr><th>method</th><th>path</th><th></th><th>status codes</th></tr>"
        + "".join(rows)
        + "</table></body></html>"
    )


def _health_routes(app: FastAPI, gw: Gateway, registry: Any) -> None:
    """Liveness, readiness and the Prometheus metrics."""

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, Any]:
        """The process is alive and its event loop answers."""
        return {"status": "ok", "version": __version__}

    @app.get("/readyz", tags=["health"], responses={503: {"model": Problem, "description": "not ready"}})
    async def readyz() -> JSONResponse:
        """Config loaded and the sinks connected (MQTT broker, InfluxDB, secondary node), the
        queue file writable. 503 lists the reasons in `reasons`."""
        waiting = gw.not_ready()
        if waiting:
            body = {"status": 503, "error": "; ".join(waiting), "ready": False, "reasons": waiting}
            return JSONResponse(body, 503)
        return JSONResponse({"ready": True})

    @app.get("/metrics", tags=["health"], response_class=Response, responses=READ_ERRORS)
    async def metrics(_: Read) -> Response:
        """Prometheus text format."""
        return Response(exposition(registry), media_type="text/plain; version=0.0.4; charset=utf-8")


def _session_routes(app: FastAPI, sessions: Sessions) -> None:
    """Sign in and out of a read-only browser session (the status page)."""

    @app.post("/api/v1/session", tags=["gateway"], responses=_responses(401, 403))
    async def sign_in(request: Request) -> JSONResponse:
        """Open a read-only session: send the token once in `Authorization: Bearer`; the answer
        sets an HttpOnly, SameSite=Strict cookie. For browsers (the status page's live feed)."""
        s = _settings(request)
        token = expected_token(s)
        try:
            if token is None:
                raise AuthError(403, "no api.token is configured, so there is nothing to sign in with")
            check_token(s, bearer(request))
        except AuthError as exc:
            limited.log("sign-in", logging.WARNING, "sign-in refused", status=exc.status, error=exc.reason)
            raise ApiError(exc.status, exc.reason, exc.headers) from None
        assert token is not None
        sid = sessions.open(token)
        answer = JSONResponse(
            {"ok": True, "idle_timeout_s": int(SESSION_IDLE), "max_age_s": int(SESSION_MAX)}
        )
        answer.set_cookie(
            sessions.cookie,
            sid,
            max_age=int(SESSION_MAX),
            path="/",
            secure=s.tls is not None,
            httponly=True,
            samesite="strict",
        )
        event(log, logging.INFO, "session opened", client=_client(request))
        return answer

    @app.delete("/api/v1/session", tags=["gateway"])
    async def sign_out(request: Request) -> JSONResponse:
        """End this browser's session."""
        sessions.close(request.cookies.get(sessions.cookie))
        answer = JSONResponse({"ok": True})
        answer.delete_cookie(sessions.cookie, path="/", httponly=True, samesite="strict")
        return answer


def _device_routes(app: FastAPI, gw: Gateway, started: float) -> None:
    """The gateway, its devices and their points; writes."""

    @app.get("/api/v1/status", tags=["gateway"], responses=READ_ERRORS)
    async def status(_: Read) -> dict[str, Any]:
        """The gateway, its sinks and its queues."""
        return views.summary(gw, started)

    @app.get("/api/v1/devices", tags=["devices"], responses=READ_ERRORS)
    async def devices(_: Read) -> list[dict[str, Any]]:
        """Every configured device with its state."""
        return [views.device_info(gw, d) for d in views.device_ids(gw)]

    @app.get("/api/v1/devices/{device}", tags=["devices"], responses=READ_ERRORS)
    async def device(device: str, _: Read) -> dict[str, Any]:
        """One device: status, last error and counters."""
        _known(device)
        return views.device_info(gw, device, counters=True)

    @app.get("/api/v1/devices/{device}/points", tags=["devices"], responses=READ_ERRORS)
    async def points(device: str, _: Read) -> dict[str, Any]:
        """The latest reading of each point: value, quality and its own time `ts` (ms; the
        device's timestamp when it sends one, also as `source_ts`), with unit and name."""
        _known(device)
        return views.device_points(gw, device)

    @app.get("/api/v1/view", tags=["devices"], responses=READ_ERRORS)
    async def view(
        _: Read,
        devices: Annotated[str, Query(max_length=5000, description="device ids, comma-separated")],
        since: Annotated[int, Query(ge=0, description="trend samples newer than this (ms)")] = 0,
        meta: Annotated[bool, Query(description="with each point's name, unit, range, type")] = False,
    ) -> Response:
        """What the status page shows of the devices on its screen (at most 50): each device
        with its counters, every point's latest reading (rounded to its resolution by the page:
        `decimals`) and its trend, the samples newer than `since` from the gateway's bounded
        history (`history`: step, window, samples kept per point)."""
        wanted = [d for d in devices.split(",") if d]
        body = views.view(gw, app.state.history, wanted, since, meta)
        return Response(orjson.dumps(body, default=str), media_type="application/json")

    @app.put(
        "/api/v1/devices/{device}/points/{point}",
        tags=["devices"],
        responses=WRITE_ERRORS,
        openapi_extra=WRITE_BODY,
    )
    async def write(device: str, point: str, request: Request, who: Write) -> dict[str, Any]:
        """Write-back: write an `rw` point through the device's driver. Body: `{"value": …}`.
        The token is checked before the body is read. The answer is the device's: 200 when it
        accepted the value, 502 with the exception, 504 on timeout."""
        try:
            body = parse_write(await read_body(request))
        except ApiError as exc:
            _refused(request, exc.status, exc.reason)
            raise
        try:
            done = await gw.write_point(device, point, body.value, who=who, via="http")
        except Exception as exc:
            status, reason = write_error(exc)
            if status == 500:
                if limited.allow("write internal"):
                    log.error(
                        "write failed with an internal error",
                        exc_info=exc,
                        extra={"fields": {"device": device, "point": point, "by": who, "via": "http"}},
                    )
            elif status < 500:  # the device's own failures (502/504) are logged by the gateway
                _refused(request, status, reason)
            raise ApiError(status, reason) from None
        return {"ok": True, "device": device, "point": point, "value": done.value}

    def _known(device: str) -> None:
        if gw.resolved(device) is None:
            raise ApiError(404, f"no device '{device}' in the configuration")


def _alarm_routes(app: FastAPI, gw: Gateway) -> None:
    """Active alarms across devices, and acknowledging one."""

    @app.get("/api/v1/alarms", tags=["alarms"], responses=READ_ERRORS)
    async def alarms(_: Read) -> list[dict[str, Any]]:
        """The active alarms of every device, highest severity first, each with `device`."""
        return gw.alarms.active() if gw.alarms is not None else []

    @app.post(
        "/api/v1/alarms/{device}/{alarm}/ack", tags=["alarms"], responses=_responses(401, 403, 404, 409)
    )
    async def ack(device: str, alarm: str, request: Request, who: Write) -> dict[str, Any]:
        """Acknowledge an active alarm (token): `acked` becomes true, with `acked_at`. 404: no
        such alarm; 409: it is not active."""
        if gw.alarms is None:
            raise ApiError(404, "no alarms are configured")
        try:
            return gw.alarms.ack(device, alarm, who)
        except KeyError:
            raise ApiError(404, f"no alarm '{alarm}' on device '{device}'") from None
        except ValueError as exc:
            _refused(request, 409, str(exc))
            raise ApiError(409, str(exc)) from None


def _identifier_routes(app: FastAPI, gw: Gateway) -> None:
    """Identifier registrations, and resolving through the node."""

    @app.get("/api/v1/identifiers", tags=["identifiers"], responses=IDENT_ERRORS)
    async def identifiers(
        _: Read,
        state: Annotated[str | None, Query(pattern="^(queued|registered|failed)$")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[dict[str, Any]]:
        """Identifier registrations, newest first: queued (not yet accepted by the node),
        registered or failed. 503 while the queue file cannot be used."""
        if gw.registrar is None:
            raise ApiError(404, "no identifier node is configured")
        try:
            return views.identifiers(gw, state, limit)
        except views.QueueUnavailable as exc:
            limited.log("queue", logging.WARNING, "identifier list unavailable", error=str(exc))
            raise ApiError(503, str(exc), {"Retry-After": "5"}) from None

    @app.get("/api/v1/identifiers/{handle:path}", tags=["identifiers"], responses=IDENT_ERRORS)
    async def resolve(
        handle: Annotated[
            str, Path(pattern=HANDLE_PATTERN, description="PREFIX/SUFFIX, e.g. 88.118.8/SN-000123")
        ],
        _: Read,
    ) -> dict[str, Any]:
        """Resolve an identifier through the secondary node: 404 when it is not registered,
        502 when the node refuses or answers something unreadable or cannot be reached, 504 when
        it did not answer in time."""
        registrar = gw.registrar
        if registrar is None:
            raise ApiError(404, "no identifier node is configured")
        try:
            ident = str(parse(handle))
        except IdentifierError as exc:
            raise ApiError(422, f"'{handle}' is not an identifier: {exc}") from None
        try:
            record = await registrar.client.resolve(ident)
            return record.to_json()
        except NotFound as exc:
            raise ApiError(404, str(exc) or f"{ident} is not registered") from None
        except Transient as exc:
            status, reason = (504 if exc.maybe_done else 502), f"secondary node: {exc}"
        except Rejected as exc:
            status, reason = 502, f"the secondary node refused: {exc}"
        except Exception as exc:  # a node answer the client cannot take apart
            status, reason = (
                502,
                f"the secondary node's answer could not be read: {type(exc).__name__}: {exc}",
            )
        limited.log(
            "resolve", logging.WARNING, "resolve failed", handle=ident, status=status, error=reason[:300]
        )
        raise ApiError(status, reason[:1000])


def _page_routes(app: FastAPI, feed: Feed, sessions: Sessions, page: str) -> None:
    """The status page, its chart library, the API overview and the live feed."""

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page, headers=PAGE_HEADERS)

    vendor = resources.files(__package__).joinpath("vendor")

    @app.get("/vendor/{name}", include_in_schema=False)
    async def vendored(name: str) -> Response:
        if name not in VENDOR:
            raise ApiError(404, "no such file")
        return Response(vendor.joinpath(name).read_bytes(), media_type=VENDOR[name], headers=VENDOR_HEADERS)

    @app.get("/docs", response_class=HTMLResponse, include_in_schema=False)
    async def docs() -> HTMLResponse:
        return HTMLResponse(_docs_page(app.openapi()), headers=PAGE_HEADERS)

    @app.get(EVENTS, tags=["gateway"], response_class=StreamingResponse, responses=READ_ERRORS)
    async def events(
        request: Request,
        _: Read,
        mode: Annotated[str, Query(pattern="^(snapshot|delta)$")] = "snapshot",
    ) -> Response:
        """Server-Sent Events: a `snapshot` of devices, values, queues and identifiers each
        second, the same one for every open stream (its `id` counts the snapshots). With
        `mode=delta` (the status page): a `state` (the gateway and every device's health, no
        values), then each second a `delta` with only what changed. At most `api.max_streams`
        streams at once: 503 beyond."""
        cap = _settings(request).max_streams
        delta = mode == "delta"
        if not feed.acquire(cap, delta):
            limited.log("streams", logging.WARNING, "live feed refused: all streams taken", max_streams=cap)
            raise ApiError(503, f"all {cap} live streams are taken (api.max_streams)", {"Retry-After": "5"})

        def allowed() -> bool:
            try:
                sessions.check_read(_settings(request), request)
            except AuthError:
                return False
            return True

        return EventStream(feed, allowed, delta)


def create_app(gw: Gateway) -> FastAPI:
    # no Swagger UI or ReDoc: they load their scripts from a CDN, and the plant has no internet
    app = FastAPI(
        title="edgegw",
        version=__version__,
        description="Local HTTP API of the edgegw industrial edge gateway",
        docs_url=None,
        redoc_url=None,
    )
    app.state.gw = gw
    assert gw.cfg.api is not None
    sessions = app.state.sessions = Sessions(gw.cfg.api.port)
    registry = registry_for(gw)
    started = time.time()
    page = resources.files(__package__).joinpath("status.html").read_text(encoding="utf-8")

    def current() -> Any:
        return gw.cfg.api

    # outermost first: Guard, TrustedHosts, Concurrency, BodyLimit (add_middleware wraps)
    app.add_middleware(BodyLimit, limit=MAX_BODY)
    app.add_middleware(Concurrency, limit=MAX_REQUESTS, exempt=("/healthz", EVENTS))
    app.add_middleware(TrustedHosts, settings=current)
    app.add_middleware(Guard)

    def build_snapshot() -> bytes | None:
        try:
            return orjson.dumps(views.snapshot(gw, started), default=str)
        except Exception as exc:
            if limited.allow("snapshot"):
                log.error("building the live feed's snapshot failed", exc_info=exc)
            return None

    history = app.state.history = History(gw)

    def build_state() -> dict[str, Any] | None:
        try:
            state = views.page_state(gw, started, history)
            # the page asks for the alarm list only from a gateway that has it
            state["alarms"] = any(getattr(r, "path", None) == ALARMS for r in app.routes)
            return state
        except Exception as exc:
            if limited.allow("page state"):
                log.error("building the status page's state failed", exc_info=exc)
            return None

    feed = app.state.feed = Feed(build_snapshot, gw.stopping, state=build_state)

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"status": exc.status, "error": exc.reason}, exc.status, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"status": exc.status_code, "error": str(exc.detail)}, exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"status": 422, "error": _validation_reason(exc.errors())}, 422)

    _health_routes(app, gw, registry)
    _session_routes(app, sessions)
    _device_routes(app, gw, started)
    _identifier_routes(app, gw)
    _alarm_routes(app, gw)
    _page_routes(app, feed, sessions, page)
    return app
