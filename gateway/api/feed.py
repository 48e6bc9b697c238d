"""The live feed (Server-Sent Events): per tick one message of each kind built and the same
bytes sent to every open stream of that kind, so ten open pages cost what one does; the status
page's kind (`?mode=delta`) sends only what changed (see Feed). The number of streams
is capped; a client that reads slowly skips ticks (it always gets the newest snapshot) and one
that stops reading is dropped after SEND_TIMEOUT, so nothing queues up per client."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import orjson
from starlette.responses import Response

from .guard import Receive, Scope, Send

log = logging.getLogger("edgegw.api")

SEND_TIMEOUT = 30.0


class Feed:
    """Two kinds of stream share one tick. A `snapshot` stream gets every device with every
    value each second (the same bytes for every such stream). A `delta` stream (the status
    page's) first gets the page's `state` (every device's health row, no values), then each
    tick only what changed since the tick before: the summary, the devices whose row changed,
    the devices gone, the order when it changed, the identifiers when they changed. A delta
    stream that missed a tick (a slow reader) gets the whole state again instead."""

    def __init__(
        self,
        build: Callable[[], bytes | None],
        stopping: asyncio.Event,
        period: float = 1.0,
        state: Callable[[], dict[str, Any] | None] | None = None,
    ):
        self.build = build  # the snapshot as JSON, or None when it could not be built (logged)
        self.state = state  # the page's state (see views.page_state), or None when it failed
        self.stopping = stopping
        self.period = period
        self.streams = 0
        self.delta_streams = 0
        self.seq = 0
        self.builds = 0
        self.message = b""  # the snapshot of tick `seq` (while snapshot streams are open)
        self.delta = b""  # what changed from tick seq-1 to tick seq
        self._delta_seq = 0
        self._state: dict[str, Any] | None = None
        self._state_seq = 0
        self._state_message: tuple[int, bytes] = (0, b"")
        self._changed = asyncio.Event()
        self._running = False
        self._task: asyncio.Task[None] | None = None

    def acquire(self, cap: int, delta: bool = False) -> bool:
        """A slot for one more stream, or False when `cap` streams are open."""
        if self.streams >= cap:
            return False
        self.streams += 1
        if delta:
            self.delta_streams += 1
            if self.delta_streams == 1 and self._running:
                # nobody depended on an older state: take one now to send deltas against
                self._state, self._state_seq = self._take_state(), self.seq
        if not self._running:  # the first stream: a fresh snapshot now, then one per tick
            self._running = True
            self._tick()
            self._task = asyncio.create_task(self._run(), name="http-api-feed")
        return True

    def release(self, delta: bool = False) -> None:
        self.streams -= 1
        if delta:
            self.delta_streams -= 1

    def _take_state(self) -> dict[str, Any] | None:
        return self.state() if self.state is not None else None

    def _tick(self) -> None:
        snapshots = self.streams > self.delta_streams
        body = self.build() if snapshots else None
        if snapshots and body is None and self.delta_streams == 0:
            return
        seq = self.seq + 1
        if body is not None:
            self.builds += 1
            self.message = b"id: %d\nevent: snapshot\ndata: %s\n\n" % (seq, body)
        if self.delta_streams > 0:
            new = self._take_state()
            if new is not None:
                if self._state is not None and self._state_seq == self.seq:
                    self.delta = b"id: %d\nevent: delta\ndata: %s\n\n" % (
                        seq,
                        orjson.dumps(changes(self._state, new), default=str),
                    )
                    self._delta_seq = seq
                self._state, self._state_seq = new, seq
        self.seq = seq
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

    def _whole_state(self) -> bytes:
        seq, message = self._state_message
        if seq != self._state_seq:
            state = dict(self._state or {})
            state["devices"] = list(state.get("devices", {}).values())
            message = b"id: %d\nevent: state\ndata: %s\n\n" % (
                self._state_seq,
                orjson.dumps(state, default=str),
            )
            self._state_message = (self._state_seq, message)
        return message

    async def next(self, after: int, delta: bool = False) -> tuple[int, bytes] | None:
        """The newest message once it is newer than `after`; None when the gateway stops. In
        delta mode: the change from `after` when `after` is the tick before, else the state."""
        while self.seq <= after or not (self._state_seq == self.seq if delta else self.message):
            if self.stopping.is_set() or not self._running:
                return None
            await self._changed.wait()
        if self.stopping.is_set():
            return None
        if not delta:
            return self.seq, self.message
        if after == self.seq - 1 and self._delta_seq == self.seq:
            return self.seq, self.delta
        return self.seq, self._whole_state()


def changes(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """What the page must apply to `old` to have `new` (see Feed)."""
    out: dict[str, Any] = {"summary": new.get("summary")}
    was, now = old.get("devices", {}), new.get("devices", {})
    out["devices"] = [row for d, row in now.items() if was.get(d) != row]
    gone = [d for d in was if d not in now]
    if gone:
        out["removed"] = gone
    if list(was) != list(now):
        out["order"] = list(now)
    for key in ("identifiers", "identifiers_error", "history", "alarms"):
        if old.get(key) != new.get(key):
            out[key] = new.get(key)
    return out


class EventStream(Response):
    """The ASGI answer of one stream: holds a slot of the feed until the client goes away, the
    gateway stops or `allowed()` turns False (a session ended, the token changed)."""

    media_type = "text/event-stream"

    def __init__(self, feed: Feed, allowed: Callable[[], bool], delta: bool = False):
        self.status_code = 200
        self.background = None
        self.init_headers({"Cache-Control": "no-store", "X-Accel-Buffering": "no"})  # no length: a stream
        self.feed = feed
        self.allowed = allowed
        self.delta = delta

    async def _write(self, send: Send) -> None:
        seen = 0
        while True:
            got = await self.feed.next(seen, self.delta)
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
            self.feed.release(self.delta)
