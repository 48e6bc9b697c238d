"""The routes of DESIGN.md section 7, the status page and its live feed.

Reads are open on loopback (or need the token when `read_requires_token` is set or the API
listens off loopback); every write needs the Bearer token, and write-back is off while no token
is configured. Errors are JSON: {"status": <code>, "error": "<reason>"}.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import time
from importlib import resources
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from drivers.base import WriteFailed, WriteTimeout
from identifier.client import NodeError, NotFound, Transient
from identifier.syntax import IdentifierError, parse

from .. import __version__
from ..metrics import exposition, registry_for
from ..writeback import WriteRejected
from . import views

if TYPE_CHECKING:
    from ..runtime import Gateway

# the shape of an identifier (identifier.syntax checks the details and says what is wrong)
HANDLE_PATTERN = r"^[0-9]+(\.[0-9]+)*/[A-Za-z0-9_.:-]+$"
_KIND_STATUS = {"unknown": 404, "read_only": 409, "bad_value": 422, "disabled": 403}


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


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": Problem, "description": text}
    for code, text in (
        (400, "the body is not JSON"),
        (401, "no token"),
        (403, "wrong token, or write-back not enabled"),
        (404, "unknown device, point or identifier"),
        (409, "read-only point"),
        (422, "value of the wrong type or out of range"),
        (502, "the device or node refused"),
        (504, "the device or node did not answer in time"),
    )
}


def _bearer(request: Request, allow_query: bool) -> str | None:
    header = request.headers.get("authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip()
    if allow_query:  # EventSource cannot send headers: the status page passes ?access_token=
        return request.query_params.get("access_token")
    return None


def _settings(request: Request) -> Any:
    return request.app.state.gw.cfg.api  # the running config: a reload rotates the token


def _check_token(request: Request, allow_query: bool) -> None:
    s = _settings(request)
    expected = s.token.get_secret_value() if s and s.token else None
    given = _bearer(request, allow_query)
    if given is None:
        raise ApiError(401, "a Bearer token is required", {"WWW-Authenticate": "Bearer"})
    if expected is None or not hmac.compare_digest(given.encode(), expected.encode()):
        raise ApiError(403, "the token is not valid")


def reader(request: Request) -> None:
    s = _settings(request)
    if s is not None and (s.read_requires_token or not s.loopback):
        _check_token(request, allow_query=True)


def writer(request: Request) -> str:
    s = _settings(request)
    if s is None or s.token is None:
        raise ApiError(403, "write-back is disabled: set api.token in the config to enable it")
    _check_token(request, allow_query=False)
    return f"token@{request.client.host if request.client else '?'}"


Read = Annotated[None, Depends(reader)]
Write = Annotated[str, Depends(writer)]


def create_app(gw: Gateway) -> FastAPI:
    app = FastAPI(
        title="edgegw",
        version=__version__,
        description="Local HTTP API of the edgegw industrial edge gateway",
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.gw = gw
    registry = registry_for(gw)
    started = time.time()
    page = resources.files(__package__).joinpath("status.html").read_text(encoding="utf-8")

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"status": exc.status, "error": exc.reason}, exc.status, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"status": exc.status_code, "error": str(exc.detail)}, exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for e in exc.errors():
            where = ".".join(str(x) for x in e.get("loc", ()) if x != "body")
            parts.append(f"{where}: {e.get('msg')}" if where else str(e.get("msg")))
        return JSONResponse({"status": 422, "error": "; ".join(parts) or "invalid request"}, 422)

    # ---- health, readiness, metrics ----

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, Any]:
        """The process is alive and its event loop answers."""
        return {"status": "ok", "version": __version__}

    @app.get("/readyz", tags=["health"], responses={503: {"model": Problem, "description": "not ready"}})
    async def readyz() -> JSONResponse:
        """Config loaded and the sinks connected (MQTT broker, InfluxDB, secondary node)."""
        waiting = gw.not_ready()
        if waiting:
            return JSONResponse({"status": 503, "error": "; ".join(waiting), "ready": False}, 503)
        return JSONResponse({"ready": True})

    @app.get("/metrics", tags=["health"], response_class=Response)
    async def metrics(_: Read) -> Response:
        """Prometheus text format."""
        return Response(exposition(registry), media_type="text/plain; version=0.0.4; charset=utf-8")

    # ---- devices ----

    @app.get("/api/v1/status", tags=["gateway"])
    async def status(_: Read) -> dict[str, Any]:
        """The gateway, its sinks and its queues."""
        return views.summary(gw, started)

    @app.get("/api/v1/devices", tags=["devices"])
    async def devices(_: Read) -> list[dict[str, Any]]:
        """Every configured device with its state."""
        return [views.device_info(gw, d) for d in views.device_ids(gw)]

    @app.get("/api/v1/devices/{device}", tags=["devices"], responses=ERRORS)
    async def device(device: str, _: Read) -> dict[str, Any]:
        """One device: status, last error and counters."""
        _known(device)
        return views.device_info(gw, device, counters=True)

    @app.get("/api/v1/devices/{device}/points", tags=["devices"], responses=ERRORS)
    async def points(device: str, _: Read) -> dict[str, Any]:
        """The latest value of each point, with quality, unit and time."""
        _known(device)
        return views.device_points(gw, device)

    @app.put("/api/v1/devices/{device}/points/{point}", tags=["devices"], responses=ERRORS)
    async def write(device: str, point: str, body: WriteBody, who: Write) -> dict[str, Any]:
        """Write-back: write an `rw` point through the device's driver. The answer is the
        device's: 200 when it accepted the value, 502 with the exception, 504 on timeout."""
        try:
            done = await gw.write_point(device, point, body.value, who=who, via="http")
        except WriteRejected as exc:
            raise ApiError(_KIND_STATUS[exc.kind], exc.reason) from None
        except WriteTimeout as exc:
            raise ApiError(504, f"the device did not answer the write: {exc}") from None
        except WriteFailed as exc:
            raise ApiError(502, f"the device refused the write: {exc}") from None
        except TimeoutError:
            raise ApiError(504, "the device did not answer the write in time (connection busy)") from None
        return {"ok": True, "device": device, "point": point, "value": done.value}

    def _known(device: str) -> None:
        if gw.resolved(device) is None:
            raise ApiError(404, f"no device '{device}' in the configuration")

    # ---- identifiers ----

    @app.get("/api/v1/identifiers", tags=["identifiers"], responses=ERRORS)
    async def identifiers(
        _: Read,
        state: Annotated[str | None, Query(pattern="^(queued|registered|failed)$")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[dict[str, Any]]:
        """Identifier registrations, newest first: queued (not yet accepted by the node),
        registered or failed."""
        if gw.registrar is None:
            raise ApiError(404, "no identifier node is configured")
        return views.identifiers(gw, state, limit)

    @app.get("/api/v1/identifiers/{handle:path}", tags=["identifiers"], responses=ERRORS)
    async def resolve(
        handle: Annotated[
            str, Path(pattern=HANDLE_PATTERN, description="PREFIX/SUFFIX, e.g. 88.118.8/SN-000123")
        ],
        _: Read,
    ) -> dict[str, Any]:
        """Resolve an identifier through the secondary node."""
        if gw.registrar is None:
            raise ApiError(404, "no identifier node is configured")
        try:
            ident = str(parse(handle))
        except IdentifierError as exc:
            raise ApiError(422, f"'{handle}' is not an identifier: {exc}") from None
        try:
            record = await gw.registrar.client.resolve(ident)
        except NotFound as exc:
            raise ApiError(404, str(exc) or f"{ident} is not registered") from None
        except Transient as exc:
            raise ApiError(504 if exc.maybe_done else 502, f"secondary node: {exc}") from None
        except NodeError as exc:
            raise ApiError(502, f"secondary node: {exc}") from None
        return record.to_json()

    # ---- status page ----

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/api/v1/events", tags=["gateway"], response_class=StreamingResponse)
    async def events(request: Request, _: Read) -> StreamingResponse:
        """Server-Sent Events: a `snapshot` of devices, values, queues and identifiers each second."""

        async def stream() -> Any:
            while not gw.stopping.is_set():
                body = json.dumps(views.snapshot(gw, started), separators=(",", ":"), ensure_ascii=False)
                yield f"event: snapshot\ndata: {body}\n\n"
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(gw.stopping.wait(), 1.0)
                if await request.is_disconnected():
                    break

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    return app
