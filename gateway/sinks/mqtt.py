"""MQTT sink (paho-mqtt): topics and payloads of DESIGN.md section 5, with store-and-forward.

Every `data` message is committed to the durable queue, with its `seq`, before it is handed
to paho; it is deleted when the broker's PUBACK arrives. At most `buffer.inflight` messages
are with paho at once, so a broker outage grows the file on disk, not the process memory.
paho keeps the in-flight window across reconnects and resends it (flagged DUP); a restart
resends everything still in the queue. The guarantee is at-least-once, and `seq` lets a
consumer drop the duplicates.

The session is clean (clean_session=True): the gateway only publishes, so a persistent
session would buy nothing on the broker and would make the broker keep state for client ids
that may never come back.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from collections import deque
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from .. import __version__
from ..config.schema import MqttSettings
from ..dictionary import DictionaryEntry, visible
from ..durable_queue import DurableQueue
from ..logs import RateLimited, event
from ..normalise import Sample

log = logging.getLogger("edgegw.mqtt")
STREAM = "mqtt"


def _json(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class MqttSink:
    def __init__(
        self,
        settings: MqttSettings,
        gateway_id: str,
        queue: DurableQueue,
        tls_path: Any = None,
    ):
        self.s = settings
        self.gateway_id = gateway_id
        self.queue = queue
        self.prefix = f"{settings.topic_prefix}/{gateway_id}"
        self._broker = f"{settings.host}:{settings.port}"
        self._visible: dict[str, frozenset[str]] = {}
        self._meta: dict[str, bytes] = {}
        self._status: dict[str, bytes] = {}
        self._inflight: dict[int, int] = {}  # paho mid -> queue row id
        self._last_sent = 0
        self._acks: deque[int] = deque()
        self.connected = False
        self._stopping = False
        self.published = 0
        self.acked = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._ratelimit = RateLimited(log, 30.0)
        self.client = self._make_client(tls_path)

    # ---- paho setup and callbacks (paho's network thread) ----

    def _make_client(self, tls_path: Any) -> paho.Client:
        s = self.s
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=s.client_id or f"edgegw-{self.gateway_id}",
            clean_session=True,
            protocol=paho.MQTTv311,
        )
        client.max_inflight_messages_set(min(s.buffer.inflight, 65535))
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        if s.username:
            client.username_pw_set(s.username, s.password.get_secret_value() if s.password else None)
        if s.tls is not None:
            resolve = tls_path or (lambda p: p)
            client.tls_set(
                ca_certs=str(resolve(s.tls.ca)) if s.tls.ca else None,
                certfile=str(resolve(s.tls.cert)) if s.tls.cert else None,
                keyfile=str(resolve(s.tls.key)) if s.tls.key else None,
                cert_reqs=ssl.CERT_REQUIRED,
            )
            client.tls_insecure_set(s.tls.insecure)
        client.will_set(f"{self.prefix}/status", _json({"state": "offline"}), qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_connect_fail = self._on_connect_fail
        client.on_publish = self._on_publish
        return client

    def _on_connect(self, client: paho.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            self._broker_warning("broker refused the connection", reason=str(reason))
            return
        event(log, logging.INFO, "connected to broker", broker=self._broker)
        loop = self._loop
        if loop is not None and not loop.is_closed():
            # on the event loop thread, so that no newer device status can be overtaken
            loop.call_soon_threadsafe(self._on_connected)

    def _on_connected(self) -> None:
        # retained state is re-published on every connect: the broker may have restarted empty
        client = self.client
        client.publish(f"{self.prefix}/status", self._birth(), qos=1, retain=True)
        for device, payload in self._meta.items():
            client.publish(f"{self.prefix}/{device}/meta", payload, qos=1, retain=True)
        for device, payload in self._status.items():
            client.publish(f"{self.prefix}/{device}/status", payload, qos=1, retain=True)
        self.connected = True
        self._wake.set()

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        was = self.connected
        self.connected = False
        if self._stopping:
            return
        if was:
            event(
                log,
                logging.WARNING,
                "lost the broker; buffering on disk",
                broker=self._broker,
                reason=str(reason),
            )
        else:
            self._broker_warning("cannot reach the broker; buffering on disk", reason=str(reason))
        if self.s.qos == 0:
            self._notify(reset=True)

    def _on_connect_fail(self, _c: Any, _u: Any) -> None:
        self._broker_warning("cannot reach the broker; buffering on disk, retrying", queued=self.queue.depth)

    def _broker_warning(self, msg: str, **fields: Any) -> None:
        # while the broker stays away, one line per 30 s rather than one per retry
        self._ratelimit.log("connect", logging.WARNING, msg, broker=self._broker, **fields)

    def _on_publish(self, _c: Any, _u: Any, mid: int, _r: Any, _p: Any) -> None:
        self._acks.append(mid)
        self._notify()

    def _notify(self, reset: bool = False) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            if reset:
                loop.call_soon_threadsafe(self._reset_window)
            loop.call_soon_threadsafe(self._wake.set)

    def _reset_window(self) -> None:
        # QoS 0: paho drops what it could not send, so resend from the oldest unacknowledged
        if self._inflight:
            self._last_sent = min(self._inflight.values()) - 1
            self._inflight.clear()

    def _birth(self) -> bytes:
        return _json({"state": "online", "ts": now_ms(), "version": __version__})

    # ---- the gateway side (event loop thread) ----

    def add_device(self, device: str, meta: dict[str, Any], entries: list[DictionaryEntry]) -> None:
        allowed = [e for e in entries if visible(e, self.s.max_classification)]
        self._visible[device] = frozenset(e.id for e in allowed)
        body = dict(meta)
        body["points"] = {e.id: e.meta() for e in allowed}
        payload = _json(body)
        self._meta[device] = payload
        self.client.publish(f"{self.prefix}/{device}/meta", payload, qos=1, retain=True)

    def device_status(self, device: str, state: str, reason: str | None = None) -> None:
        body: dict[str, Any] = {"state": state, "ts": now_ms()}
        if reason:
            body["reason"] = reason
        payload = _json(body)
        self._status[device] = payload
        self.client.publish(f"{self.prefix}/{device}/status", payload, qos=1, retain=True)

    def submit(self, sample: Sample) -> None:
        """Queue one data message. Never blocks: it is committed within one commit interval."""
        allowed = self._visible.get(sample.device)
        points: dict[str, Any] = {}
        for r in sample.readings:
            if allowed is not None and r.id not in allowed:
                continue
            p: dict[str, Any] = {"v": r.v, "q": r.q}
            if r.reason is not None:
                p["reason"] = r.reason
            if r.ts is not None:
                p["ts"] = r.ts
            points[r.id] = p
        if not points and not sample.full:
            return
        seq = self.queue.next_seq(f"mqtt/{sample.device}")
        body = _json({"seq": seq, "ts": sample.ts, "points": points})
        self.queue.append(STREAM, f"{self.prefix}/{sample.device}/data", body)
        self._wake.set()

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.client.connect_async(self.s.host, self.s.port, keepalive=int(self.s.keepalive))
        self.client.loop_start()
        self._task = asyncio.create_task(self._run(), name="mqtt-sink")

    async def _run(self) -> None:
        interval = self.s.buffer.commit_interval
        while True:
            await self._wake.wait()
            self._wake.clear()
            self._cycle()
            await asyncio.sleep(interval)  # batch the next commit

    def _cycle(self) -> None:
        acks = self._acks
        done = []
        while acks:
            mid = acks.popleft()
            row = self._inflight.pop(mid, None)
            if row is not None:
                done.append(row)
        if done:
            self.acked += len(done)
            self.queue.ack(done)
        self.queue.commit()
        self._pump()

    def _pump(self) -> None:
        if not self.connected:
            return
        room = self.s.buffer.inflight - len(self._inflight)
        if room <= 0:
            return
        for row_id, topic, body in self.queue.after(STREAM, self._last_sent, room):
            info = self.client.publish(topic, body, qos=self.s.qos)
            if info.rc not in (paho.MQTT_ERR_SUCCESS, paho.MQTT_ERR_NO_CONN):
                break
            self._inflight[info.mid] = row_id
            self._last_sent = row_id
            self.published += 1

    async def stop(self, devices: list[str], flush_timeout: float = 5.0) -> None:
        """Flush what can be flushed in time, set statuses offline, disconnect."""
        if self._task is not None:
            self._task.cancel()
        deadline = time.monotonic() + flush_timeout
        self._cycle()
        while self.connected and (self.queue.depth or self._inflight) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
            self._cycle()
        for device in devices:
            self.device_status(device, "offline", "gateway stopped")
        info = self.client.publish(
            f"{self.prefix}/status", _json({"state": "offline", "ts": now_ms()}), qos=1, retain=True
        )
        if self.connected:
            while not info.is_published() and time.monotonic() < deadline + 1:
                await asyncio.sleep(0.02)
        self._cycle()
        self._stopping = True
        self.client.disconnect()
        self.client.loop_stop()
        remaining = self.queue.depth
        if remaining:
            event(log, logging.INFO, "messages kept in the queue for the next start", count=remaining)
