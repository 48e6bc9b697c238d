"""The local HTTP API (FastAPI on uvicorn), served from the gateway's own event loop."""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import TYPE_CHECKING, Any

import uvicorn

from ..logs import event
from .app import MAX_REQUESTS, create_app

if TYPE_CHECKING:
    from ..runtime import Gateway

log = logging.getLogger("edgegw.api")
logging.getLogger("uvicorn.error").setLevel(logging.WARNING)

# open connections (idle keep-alives and streams included) beyond which uvicorn itself answers
# 503 without reaching the app: the last line behind the app's own caps on requests and streams
MAX_CONNECTIONS = 4 * MAX_REQUESTS


class ApiServer:
    def __init__(self, gw: Gateway, tls_path: Any):
        s = gw.cfg.api
        assert s is not None
        self.settings = s
        self.gw = gw
        self.app = create_app(gw)
        config = uvicorn.Config(
            self.app,
            host=s.host,
            port=s.port,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=2,
            limit_concurrency=MAX_CONNECTIONS + s.max_streams,
            http="h11",
            h11_max_incomplete_event_size=16 * 1024,  # request line and headers
            ssl_certfile=str(tls_path(s.tls.cert)) if s.tls else None,
            ssl_keyfile=str(tls_path(s.tls.key)) if s.tls else None,
        )
        self.server = uvicorn.Server(config)
        self.server.install_signal_handlers = lambda: None  # type: ignore[attr-defined]  # uvicorn < 0.29 calls it
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        s = self.settings
        host = f"[{s.host}]" if ":" in s.host else s.host
        return f"{'https' if s.tls else 'http'}://{host}:{s.port}"

    async def start(self) -> None:
        s = self.settings
        family = socket.AF_INET6 if ":" in s.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((s.host, s.port))
        except OSError as exc:
            sock.close()
            raise OSError(f"the HTTP API cannot listen on {s.listen}: {exc.strerror or exc}") from None
        sock.set_inheritable(True)
        self._task = asyncio.create_task(self.server.serve(sockets=[sock]), name="http-api")
        self.app.state.history.start(self.gw.stopping)  # the status page's trends
        for _ in range(250):
            if self.server.started:
                break
            if self._task.done():
                raise OSError(f"the HTTP API did not start on {s.listen}")
            await asyncio.sleep(0.02)
        reads = "token or session" if (s.read_requires_token or not s.loopback) else "open on loopback"
        writes = "token" if s.token else "disabled (no api.token)"
        event(log, logging.INFO, "HTTP API listening", url=self.url, reads=reads, writes=writes)

    async def stop(self) -> None:
        if self._task is None:
            return
        self.server.should_exit = True
        try:
            await asyncio.wait_for(self._task, 5.0)
        except (TimeoutError, asyncio.CancelledError):
            self._task.cancel()


__all__ = ["ApiServer", "create_app"]
