"""The status page's live feed (Server-Sent Events): one snapshot built per tick and the same
bytes sent to every open stream, so ten open pages cost what one does. The number of streams
is capped; a client that reads slowly skips ticks (it always gets the newest snapshot) and one
that stops reading is dropped after SEND_TIMEOUT, so nothing queues up per client."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from starlette.responses import Response

from .guard import Receive, Scope, Send

log = logging.getLogger("edgegw.api")

SEND_TIMEOUT = 30.0


class Feed:
    def __init__(self, build: Callable[[], bytes | None], stopping: asyncio.Event, period: float = 1.0):
        self.build = build  # the snapshot as JSON, or None when it could not be built (logged)
        self.stopping = stopping
        self.period = period
        self.streams = 0
        self.seq = 0
        self.builds = 0
        self.message = b""
        self._changed = asyncio.Event()
        self._running = False
        self._task: asyncio.Task[None] | None = None

    def acquire(self, cap: int) -> bool:
        """A slot for one more stream, or False when `cap` streams are open."""
        if self.streams >= cap:
            return False
        self.streams += 1
        if not self._running:  # the first stream: a fresh snapshot now, then one per tick
            self._running = True
            self._tick()
            self._task = asyncio.create_task(self._run(), name="http-api-feed")
        return True

    def release(self) -> None:
        self.streams -= 1

    def _tick(self) -> None:
        body = self.build()
        if body is None:
            return
        self.builds += 1
        self.seq += 1
        self.message = b"id: %d\nevent: snapshot\ndata: %s\n\n" % (self.seq, body)
        self._wake()

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def _run(self) -> None:
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), self.period)
                if self.streams <= 0 or self.stopping.is_set():
                    break
                self._tick()
        finally:
            self._running = False
            self._wake()  # streams see the stop

    async def next(self, after: int) -> tuple[int, bytes] | None:
        """The newest message once it is newer than `after`; None when the gateway stops."""
        while self.seq <= after or not self.message:
            if self.stopping.is_set() or not self._running:
                return None
            await self._changed.wait()
        if self.stopping.is_set():
            return None
        return self.seq, self.message


class EventStream(Response):
    """The ASGI answer of one stream: holds a slot of the feed until the client goes away, the
    gateway stops or `allowed()` turns False (a session ended, the token changed)."""

    media_type = "text/event-stream"

    def __init__(self, feed: Feed, allowed: Callable[[], bool]):
        self.status_code = 200
        self.background = None
        self.init_headers({"Cache-Control": "no-store", "X-Accel-Buffering": "no"})  # no length: a stream
        self.feed = feed
        self.allowed = allowed

    async def _write(self, send: Send) -> None:
        seen = 0
        while True:
            got = await self.feed.next(seen)
            if got is None or not self.allowed():
                return
            seen, message = got
            async with asyncio.timeout(SEND_TIMEOUT):
                await send({"type": "http.response.body", "body": message, "more_body": True})

    @staticmethod
    async def _gone(receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> Any:
        try:
            await send(
                {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
            )
            writer = asyncio.ensure_future(self._write(send))
            gone = asyncio.ensure_future(self._gone(receive))
            try:
                done, _ = await asyncio.wait({writer, gone}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                writer.cancel()
                gone.cancel()
            if gone in done:
                return
            try:
                writer.result()
            except (TimeoutError, OSError):
                return  # a client that stopped reading: dropped
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            self.feed.release()
