"""paho-mqtt driven by the asyncio event loop instead of paho's network thread.

The loop watches paho's socket and calls `loop_read` when it is readable and `loop_write`
while paho has bytes to send (paho says so through its socket callbacks); a timer calls
`loop_misc` (keep-alive) once a second. Connecting blocks (name lookup, TCP and TLS
handshakes), so each attempt runs in a worker thread; everything else, and so every paho
callback after the connect (`on_connect`, `on_publish`, `on_message`, `on_disconnect`), runs on
the event loop. Without the thread, the gateway and paho no longer take turns on the GIL and
no acknowledgement crosses threads: at 1,000 messages per second that was a quarter of the
gateway's CPU.

After a lost connection or a failed attempt it waits `delay()` seconds (the sink's jittered
back-off) and connects again, until `stop`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho

log = logging.getLogger("edgegw.mqtt")
KEEPALIVE_TICK = 1.0  # seconds between loop_misc calls


class PahoOnLoop:
    def __init__(
        self,
        client: paho.Client,
        host: str,
        port: int,
        keepalive: int,
        delay: Callable[[], float],
        on_connect_fail: Callable[[BaseException], None],
        after_read: Callable[[], None] | None = None,
    ):
        """`after_read`: called after each batch of packets read (the socket may be gone)."""
        self.client = client
        self.after_read = after_read
        self.delay = delay
        self.on_connect_fail = on_connect_fail
        client.connect_async(host, port, keepalive=keepalive)
        client.on_socket_open = self._socket_open
        client.on_socket_close = self._socket_close
        client.on_socket_register_write = self._want_write
        client.on_socket_unregister_write = self._wrote
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = 0
        self._sock: Any = None  # the socket the loop watches
        self._writing = False
        self._closed = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._tick: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        self._task = self._loop.create_task(self._keep_connected(), name="mqtt-connection")
        self._tick = self._loop.call_later(KEEPALIVE_TICK, self._misc)

    def stop(self) -> None:
        """Stop reconnecting and stop watching the socket. Call after `client.disconnect()`:
        the DISCONNECT it queued is written here, and paho then closes the socket."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
        if self._tick is not None:
            self._tick.cancel()
        if self.client.socket() is not None and self.client.want_write():
            with contextlib.suppress(OSError):
                self.client.loop_write()
        self._unwatch()

    async def _keep_connected(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping:
            self._closed.clear()
            try:
                await loop.run_in_executor(None, self._connect)
            except Exception as exc:  # refused, unreachable, timed out, TLS: all mean "try again"
                try:
                    self.on_connect_fail(exc)
                except Exception:  # a bug in the report must not end reconnecting
                    log.exception("reporting a failed connect failed")
            else:
                await self._closed.wait()  # until the connection is lost
            if self._stopping:
                return
            try:
                delay = self.delay()
            except Exception:
                log.exception("the reconnect delay failed")
                delay = KEEPALIVE_TICK
            await asyncio.sleep(delay)

    def _connect(self) -> None:
        # worker thread: paho makes the socket, sends CONNECT, and calls _socket_open
        self.client.reconnect()
        if self._stopping:  # stopped while connecting: nobody will read this socket
            sock = self.client.socket()
            if sock is not None:
                sock.close()

    # ---- paho's socket callbacks: the worker thread (connect) or the event loop ----

    def _on_loop(self, fn: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        if threading.get_ident() == self._thread:
            fn(*args)
        else:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(fn, *args)

    def _socket_open(self, _c: Any, _u: Any, sock: Any) -> None:
        self._on_loop(self._watch, sock)

    def _socket_close(self, _c: Any, _u: Any, sock: Any) -> None:
        self._on_loop(self._lost, sock)

    def _want_write(self, _c: Any, _u: Any, sock: Any) -> None:
        self._on_loop(self._start_writing, sock)

    def _wrote(self, _c: Any, _u: Any, sock: Any) -> None:
        self._on_loop(self._stop_writing, sock)

    # ---- the event loop ----

    def _watch(self, sock: Any) -> None:
        if self._stopping or self._loop is None:
            return
        self._unwatch()
        self._sock = sock
        self._loop.add_reader(sock, self._read)
        if self.client.want_write():
            self._start_writing(sock)

    def _lost(self, sock: Any) -> None:
        if sock is self._sock:
            self._unwatch()
            self._closed.set()

    def _unwatch(self) -> None:
        sock, self._sock = self._sock, None
        if sock is None or self._loop is None or self._loop.is_closed():
            return
        self._loop.remove_reader(sock)
        if self._writing:
            self._loop.remove_writer(sock)
            self._writing = False

    def _start_writing(self, sock: Any) -> None:
        if sock is self._sock and not self._writing and self._loop is not None:
            self._loop.add_writer(sock, self._write)
            self._writing = True

    def _stop_writing(self, sock: Any) -> None:
        if sock is self._sock and self._writing and self._loop is not None:
            self._loop.remove_writer(sock)
            self._writing = False

    def _read(self) -> None:
        client = self.client
        client.loop_read()
        if self.after_read is not None:
            self.after_read()
        sock = client.socket()
        # TLS: a record may hold more than paho read; the selector will not say so
        pending = getattr(sock, "pending", None)
        if pending is not None and sock is self._sock and pending() > 0 and self._loop is not None:
            self._loop.call_soon(self._read)

    def _write(self) -> None:
        self.client.loop_write()

    def _misc(self) -> None:
        if self._stopping or self._loop is None:
            return
        try:
            # keep-alive: a PINGREQ when the line is quiet, and a broker that stopped answering
            # (frozen, or a half-open connection) taken for lost, so that the loop reconnects
            self.client.loop_misc()
        except Exception:
            log.exception("MQTT keep-alive check failed")
        finally:
            self._tick = self._loop.call_later(KEEPALIVE_TICK, self._misc)
