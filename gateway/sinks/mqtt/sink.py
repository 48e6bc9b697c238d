"""MQTT sink (paho-mqtt): the topics and payloads of the README's "MQTT contract", with store-and-forward.

Every `data` message is committed to the durable queue, with its `seq`, before it is handed
to paho; it is deleted when the broker's PUBACK arrives. At most `northbound.mqtt.inflight` messages
are with paho at once, so a broker outage grows the file on disk, not the process memory.
paho keeps the in-flight window across reconnects and resends it (flagged DUP); a restart
resends everything still in the queue. The guarantee is at-least-once, and `seq` lets a
consumer drop the duplicates.

After a (re)connect the queue is sent in two lanes. What was queued before the connect is the
backlog: it is replayed oldest first at `replay_rate` messages per second. What is
queued after the connect is live and goes out at once, so fresh values are not starved behind
an outage's backlog (`replay: ordered` makes live data wait instead). Each lane keeps
the per-device order of `seq`.

Reconnects back off exponentially from `reconnect_min` to `reconnect_max` with jitter (each
delay drawn from its upper half), so a plant's gateways do not reconnect in lock-step after a
broker restart.

The session is clean (clean_session=True): the gateway only publishes, so a persistent
session would buy nothing on the broker and would make the broker keep state for client ids
that may never come back. Delivery does not depend on the broker's session: what was not
acknowledged is still in the gateway's queue.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import sqlite3
import time
import zlib
from collections import deque
from typing import Any

import orjson
import paho.mqtt.client as paho
from edgegw.drivers.base import LatencyHistogram, WriteFailed
from paho.mqtt.enums import CallbackAPIVersion

from ... import __version__
from ...config.schema import MqttSettings
from ...dictionary import visible
from ...durable_queue import DurableQueue
from ...logs import RateLimited, event, report_crash
from ...normalise import Reading, Sample
from ...writeback import WriteRejected, write_error
from .. import DeviceInfo, SinkContext, WritePoint
from ..broker import configure, next_reconnect_delay
from ..paho_loop import PahoOnLoop

log = logging.getLogger("edgegw.mqtt")
STREAM = "mqtt"
_QUICKACK = getattr(socket, "TCP_QUICKACK", None)


def _json(obj: Any) -> bytes:
    # orjson: compact UTF-8 like json.dumps(separators=(",", ":"), ensure_ascii=False), several
    # times faster on the hot path (a 100-point data message per device and poll). NaN and
    # infinities become null, which is valid JSON where json.dumps would write NaN.
    return orjson.dumps(obj)


def _sample_ts(body: bytes) -> int | None:
    """The `ts` of a data message as submit() writes it ({"seq":N,"ts":T,…}), without parsing
    the whole payload; None for anything else."""
    if not body.startswith(b'{"seq":'):
        return None
    i = body.find(b',"ts":', 7, 40)
    j = body.find(b",", i + 6) if i > 0 else -1
    if j < 0:
        return None
    try:
        return int(body[i + 6 : j])
    except ValueError:
        return None


def _point(r: Reading) -> dict[str, Any]:
    p: dict[str, Any] = {"v": r.v, "q": r.q}
    if r.reason is not None:
        p["reason"] = r.reason
    if r.ts is not None:
        p["ts"] = r.ts
    return p


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class MqttSink:
    name = "mqtt"

    def __init__(
        self,
        settings: MqttSettings,
        gateway_id: str,
        queue: DurableQueue,
        tls_path: Any = None,
        write: WritePoint | None = None,
        commit_interval: float = 0.02,
    ):
        self.s = settings
        self.commit_interval = commit_interval
        self._interned: dict[object, Any] = {}  # equal meta payloads and point sets, kept once
        self.gateway_id = gateway_id
        self.queue = queue
        self.prefix = f"{settings.topic_prefix}/{gateway_id}"
        self._broker = f"{settings.host}:{settings.port}"
        self._visible: dict[str, frozenset[str]] = {}
        self._hidden: set[str] = set()  # devices with points above max_classification
        self._meta: dict[str, bytes] = {}
        self._status: dict[str, bytes] = {}
        self._alarms: dict[str, bytes] = {}  # retained P/G/D/alarms, republished on each connect
        self._inflight: dict[int, int] = {}  # paho mid -> queue row id
        self._sent_at: dict[int, float] = {}  # paho mid -> when it was handed to paho
        self._sampled_at: dict[int, int] = {}  # paho mid -> the data message's ts (poll end, ms)
        self.publish_latency = LatencyHistogram()
        self.sample_latency = LatencyHistogram()  # poll end -> broker acknowledgement
        # P/G/<device>/set requests are taken only with commands: true
        self.write = write
        self.on_command = self._on_command if settings.commands and write is not None else None
        self._commands: set[asyncio.Task[None]] = set()
        self.commands = 0
        self._live_cursor = 0  # last row handed to paho in the live lane
        self._replay_cursor = 0  # last row handed to paho in the backlog lane
        self._boundary = 0  # rows up to here were queued before the last connect
        self._replaying = False
        self._replay_started = 0.0
        self._replay_sent = 0
        self._tokens = 0.0
        self._tokens_at = 0.0
        self._attempt = 0
        self._acks: deque[tuple[int, float]] = deque()
        self.connected = False
        self._stopping = False
        self.queue_errors = 0
        self.crashes = 0
        self.published = 0
        self.acked = 0
        self.replayed = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._ratelimit = RateLimited(log, 30.0)
        self._delay = settings.reconnect_min
        self.client = self._make_client(tls_path)
        self.io = PahoOnLoop(
            self.client,
            settings.host,
            settings.port,
            int(settings.keepalive),
            lambda: self._delay,
            self._on_connect_fail,
            after_read=self._quickack,
        )

    # ---- paho setup and callbacks (on the event loop: PahoOnLoop runs paho there) ----

    def _make_client(self, tls_path: Any) -> paho.Client:
        s = self.s
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=s.client_id or f"edgegw-{self.gateway_id}",
            clean_session=True,
            protocol=paho.MQTTv311,
        )
        # paho's own window is off (0): the sink keeps at most `inflight` data messages with
        # paho, and with a window paho scans every message in flight on each PUBACK
        client.max_inflight_messages_set(0)
        configure(client, s, tls_path)
        client.will_set(f"{self.prefix}/status", _json({"state": "offline"}), qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        return client

    def _on_connect(self, client: paho.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            self._broker_warning("broker refused the connection", reason=str(reason))
            return
        self._attempt = 0
        sock = client.socket()
        if isinstance(sock, socket.socket):
            # PUBLISHes leave at once instead of waiting for the broker's ACK of the previous one
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        event(log, logging.INFO, "connected to broker", broker=self._broker)
        loop = self._loop
        if loop is not None and not loop.is_closed():
            # after paho's callback returns: publishing from inside it would wait for a write
            loop.call_soon(self._on_connected)

    def _on_connected(self) -> None:
        # retained state is re-published on every connect: the broker may have restarted empty
        client = self.client
        client.publish(f"{self.prefix}/status", self._birth(), qos=1, retain=True)
        for device, payload in self._meta.items():
            client.publish(f"{self.prefix}/{device}/meta", payload, qos=1, retain=True)
        for device, payload in self._status.items():
            client.publish(f"{self.prefix}/{device}/status", payload, qos=1, retain=True)
        for device, payload in self._alarms.items():
            client.publish(f"{self.prefix}/{device}/alarms", payload, qos=1, retain=True)
        if self.on_command is not None:
            client.subscribe(f"{self.prefix}/+/set", qos=1)
        self.connected = True
        try:
            self._begin_replay()
        except sqlite3.Error as exc:
            # the backlog is sent once the queue can be read again: every row after the
            # cursors goes out in the live lane
            self._replaying = False
            self._ratelimit.log("queue", logging.ERROR, "cannot read the queue; retrying", error=str(exc))
        self._wake.set()

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        was = self.connected
        self.connected = False
        if self._stopping:
            return
        self._next_reconnect_delay()
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

    def _on_connect_fail(self, exc: BaseException) -> None:
        self._next_reconnect_delay()
        self._broker_warning(
            "cannot reach the broker; buffering on disk, retrying",
            queued=self.queue.depth_of(STREAM),
            error=str(exc) or type(exc).__name__,
        )

    def _next_reconnect_delay(self) -> None:
        self._attempt += 1
        self._delay = next_reconnect_delay(self.client, self.s, self._attempt)

    def _broker_warning(self, msg: str, **fields: Any) -> None:
        # while the broker stays away, one line per 30 s rather than one per retry
        self._ratelimit.log("connect", logging.WARNING, msg, broker=self._broker, **fields)

    def _on_publish(self, client: paho.Client, _u: Any, mid: int, _r: Any, _p: Any) -> None:
        self._acks.append((mid, time.monotonic()))
        self._notify()

    def _quickack(self) -> None:
        # the broker's PUBACKs are answered with an ACK at once, not after the delayed-ACK timer
        # (the broker then sends the next ones without waiting): once per read, not per PUBACK
        sock = self.client.socket()
        if _QUICKACK is not None and isinstance(sock, socket.socket):
            sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)

    def _on_message(self, _c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
        # P/G/<device>/set: handed to the gateway on the event loop thread
        parts = msg.topic.split("/")
        loop, handler = self._loop, self.on_command
        if handler is None or loop is None or loop.is_closed() or len(parts) < 2 or parts[-1] != "set":
            return
        self.commands += 1
        loop.call_soon(handler, parts[-2], bytes(msg.payload))

    def _notify(self, reset: bool = False) -> None:
        if reset:
            self._reset_window()
        self._wake.set()

    def _reset_window(self) -> None:
        # QoS 0: paho drops what it could not send; the next connect's replay sends it again
        self._inflight.clear()
        self._sent_at.clear()
        self._sampled_at.clear()

    def _birth(self) -> bytes:
        return _json({"state": "online", "ts": now_ms(), "version": __version__})

    # ---- the gateway side (event loop thread) ----

    def add_device(self, info: DeviceInfo) -> None:
        device = info.id
        allowed = [e for e in info.points if visible(e, self.s.max_classification)]
        ids = frozenset(e.id for e in allowed)
        self._visible[device] = self._interned.setdefault(ids, ids)
        if len(allowed) < len(info.points):
            self._hidden.add(device)
        else:
            self._hidden.discard(device)
        body: dict[str, Any] = {"model": info.model, "protocol": info.protocol, "location": info.location}
        body["points"] = {e.id: e.meta() for e in allowed}
        payload = _json(body)
        # a plant's devices of one model mostly share their meta: one copy of it, not one each
        payload = self._interned.setdefault(payload, payload)
        self._meta[device] = payload
        if self.connected:  # otherwise the connect publishes the latest
            self.client.publish(f"{self.prefix}/{device}/meta", payload, qos=1, retain=True)

    def remove_device(self, device: str, reason: str) -> None:
        """A device left the configuration: its retained status says so, its meta is cleared."""
        self.device_status(device, "offline", reason)
        self._status.pop(device, None)
        self._visible.pop(device, None)
        self._hidden.discard(device)
        if self._meta.pop(device, None) is not None and self.connected:
            self.client.publish(f"{self.prefix}/{device}/meta", b"", qos=1, retain=True)

    def device_status(self, device: str, state: str, reason: str | None = None) -> None:
        body: dict[str, Any] = {"state": state, "ts": now_ms()}
        if reason:
            body["reason"] = reason
        payload = _json(body)
        self._status[device] = payload
        if self.connected:  # otherwise the connect publishes the latest, so an outage holds no backlog
            self.client.publish(f"{self.prefix}/{device}/status", payload, qos=1, retain=True)

    def submit(self, sample: Sample) -> None:
        """Queue one data message. Never blocks: it is committed within one commit interval."""
        readings = sample.readings
        if sample.device in self._hidden:
            allowed = self._visible[sample.device]
            readings = [r for r in readings if r.id in allowed]
        points = {
            r.id: {"v": r.v, "q": r.q} if r.reason is None and r.ts is None else _point(r) for r in readings
        }
        if not points and not sample.full:
            return
        seq = self.queue.next_seq(f"mqtt/{sample.device}")
        body = _json({"seq": seq, "ts": sample.ts, "points": points})
        if not self.connected:
            # it will wait on disk: deflated it takes about a fifth of the space (JSON starts
            # with "{", a zlib stream with "x", so the two never mix up)
            body = zlib.compress(body, 1)
        self.queue.append(STREAM, f"{self.prefix}/{sample.device}/data", body)
        self._wake.set()

    def device_alarms(self, device: str, active: list[dict[str, Any]]) -> None:
        """The retained `P/G/D/alarms`: the device's active alarms (republished on each connect)."""
        payload = _json(active)
        self._alarms[device] = payload
        if self.connected:
            self.client.publish(f"{self.prefix}/{device}/alarms", payload, qos=1, retain=True)

    def publish_event(self, suffix: str, body: dict[str, Any]) -> None:
        """A non-retained event (identifier outcomes, resolved records) on P/G/<suffix>, through
        the same durable queue as the data."""
        self.queue.append(STREAM, f"{self.prefix}/{suffix}", _json(body))
        self._wake.set()

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.io.start()
        self._task = asyncio.create_task(self._run(), name="mqtt-sink")
        self._task.add_done_callback(report_crash)

    async def _run(self) -> None:
        interval = self.commit_interval
        while True:
            await self._wake.wait()
            self._wake.clear()
            delay = interval
            try:
                self._cycle()
            except sqlite3.Error as exc:  # a read of the queue failed (e.g. locked by another process)
                self.queue_errors += 1
                self._ratelimit.log("queue", logging.ERROR, "cannot read the queue; retrying", error=str(exc))
                delay = max(interval, 1.0)
                self._wake.set()
            except Exception as exc:  # a bug must not end publishing for good
                self.crashes += 1
                log.error(
                    "MQTT sink cycle failed; retrying",
                    exc_info=exc,
                    extra={"fields": {"task": "mqtt-sink", "crashes": self.crashes}},
                )
                delay = min(30.0, max(interval, 1.0) * 2 ** min(self.crashes, 5))
                self._wake.set()
            if self.queue.failing is not None and self.queue.dirty:
                self._wake.set()  # the batch waits in memory: come back to retry the commit
            if self._replaying and self.connected:
                self._wake.set()  # the backlog is paced: come back next interval without a new sample
            await asyncio.sleep(delay)  # batch the next commit

    def _cycle(self) -> None:
        acks = self._acks
        done = []
        sent_at, latency = self._sent_at, self.publish_latency
        sampled_at, since_poll = self._sampled_at, self.sample_latency
        wall_offset = time.time() - time.monotonic()
        while acks:
            mid, at = acks.popleft()
            row = self._inflight.pop(mid, None)
            if row is not None:
                done.append(row)
                t = sent_at.pop(mid, None)
                if t is not None:
                    latency.observe(at - t)
                ts = sampled_at.pop(mid, None)
                if ts is not None:
                    since_poll.observe(max(0.0, at + wall_offset - ts / 1000))
        if done:
            self.acked += len(done)
            self.queue.ack(done)
        self.queue.commit()
        self._pump()

    def _safe_cycle(self) -> None:
        """A cycle at detach or stop: a queue that cannot be read leaves its rows for the next start."""
        try:
            self._cycle()
        except sqlite3.Error as exc:
            event(log, logging.WARNING, "cannot read the queue while stopping", error=str(exc))

    # ---- the two lanes: backlog (paced) and live ----

    def _begin_replay(self) -> None:
        self.queue.commit()
        self._boundary = self.queue.last_id()
        self._live_cursor = self._boundary
        self._replay_cursor = 0
        backlog = self.queue.count(STREAM, 0, self._boundary) - len(self._inflight)
        self._replaying = backlog > 0
        if self._replaying:
            self._replay_started = time.monotonic()
            self._replay_sent = 0
            self._tokens, self._tokens_at = 0.0, self._replay_started
            event(
                log,
                logging.INFO,
                "replaying the backlog",
                messages=backlog,
                rate=self.s.replay_rate or "unlimited",
                order=self.s.replay,
            )

    def _replay_budget(self, room: int) -> int:
        rate = self.s.replay_rate
        if rate <= 0:
            return room
        now = time.monotonic()
        # at most a quarter second of burst, so pacing holds at any commit interval
        self._tokens = min(self._tokens + (now - self._tokens_at) * rate, max(rate / 4, 1.0))
        self._tokens_at = now
        n = min(int(self._tokens), room)
        self._tokens -= n
        return n

    def _pump(self) -> None:
        if not self.connected:
            return
        room = self.s.inflight - len(self._inflight)
        if room <= 0:
            return
        if self._replaying:
            budget = self._replay_budget(room)
            if budget:
                rows = self.queue.after(STREAM, self._replay_cursor, budget, upto=self._boundary)
                busy = set(self._inflight.values()) if self._inflight else ()
                for row_id, topic, body in rows:
                    if row_id not in busy:  # a busy row is paho's to resend
                        if not self._send(row_id, topic, body):
                            break
                        self._replay_sent += 1
                        self.replayed += 1
                    self._replay_cursor = row_id
                if len(rows) < budget and self._replay_cursor >= (rows[-1][0] if rows else 0):
                    self._end_replay()
            if self.s.replay == "ordered" and self._replaying:
                return
            room = self.s.inflight - len(self._inflight)
            if room <= 0:
                return
        for row_id, topic, body in self.queue.after(STREAM, self._live_cursor, room):
            if not self._send(row_id, topic, body):
                break
            self._live_cursor = row_id

    def _end_replay(self) -> None:
        self._replaying = False
        took = time.monotonic() - self._replay_started
        event(
            log,
            logging.INFO,
            "backlog replayed",
            messages=self._replay_sent,
            seconds=round(took, 1),
            per_second=round(self._replay_sent / took) if took > 0 else self._replay_sent,
        )

    def _send(self, row_id: int, topic: str, body: bytes) -> bool:
        if body[:1] == b"x":
            body = zlib.decompress(body)
        info = self.client.publish(topic, body, qos=self.s.qos)
        if info.rc not in (paho.MQTT_ERR_SUCCESS, paho.MQTT_ERR_NO_CONN):
            return False
        self._inflight[info.mid] = row_id
        self._sent_at[info.mid] = time.monotonic()
        ts = _sample_ts(body)
        if ts is not None:
            self._sampled_at[info.mid] = ts
        self.published += 1
        return True

    async def detach(self) -> None:
        """Leave the broker without touching retained state (a reload hands over to a new sink).

        Whatever is not acknowledged stays in the queue; the next sink replays it."""
        if self._task is not None:
            self._task.cancel()
        self._stopping = True
        self.connected = False
        self._safe_cycle()  # record the acknowledgements that arrived
        self.client.disconnect()
        self.io.stop()

    def _on_command(self, device: str, payload: bytes) -> None:
        task = asyncio.create_task(self._command(device, payload), name=f"set-{device}")
        self._commands.add(task)
        task.add_done_callback(self._commands.discard)

    async def _command(self, device: str, payload: bytes) -> None:
        """P/G/D/set {"id":"r1","points":{"setpoint":220.0}} -> P/G/D/set/result."""
        req_id: object = None
        errors: list[str] = []
        try:
            req = json.loads(payload)
            if not isinstance(req, dict) or not isinstance(req.get("points"), dict) or not req["points"]:
                raise ValueError('expected {"id": "...", "points": {"<point>": <value>, ...}}')
            req_id = req.get("id")
            if not isinstance(req_id, str | int | None) or isinstance(req_id, bool):
                req_id = None
                raise ValueError('"id" must be a string or a number')
            if isinstance(req_id, str) and len(req_id) > 200:
                req_id = req_id[:200]
                raise ValueError('"id" is longer than 200 characters')
        except (ValueError, RecursionError) as exc:  # RecursionError: nesting too deep to parse
            errors.append(f"bad request: {str(exc)[:200] or 'nested too deeply'}")
        else:
            for point, value in req["points"].items():
                try:
                    assert self.write is not None  # commands are taken only with a write path
                    await self.write(device, str(point), value, f"mqtt id={req_id}", "mqtt")
                except Exception as exc:
                    errors.append(f"{point}: {write_error(exc)[1]}")
                    if not isinstance(exc, WriteRejected | WriteFailed | TimeoutError):
                        log.error(
                            "write failed with an internal error",
                            exc_info=exc,
                            extra={"fields": {"device": device, "point": point, "via": "mqtt"}},
                        )
        body: dict[str, Any] = {"id": req_id, "ok": not errors}
        if errors:
            body["error"] = "; ".join(errors)
            event(log, logging.WARNING, "set refused", device=device, id=req_id, error=body["error"][:500])
        self.publish_event(f"{device}/set/result", body)

    def problem(self) -> str | None:
        return None if self.connected else "MQTT broker not connected"

    async def replace(self, settings: MqttSettings, ctx: SinkContext) -> MqttSink:
        """A new client on the same queue, with the devices' statuses and counters carried over.
        Made before this one leaves: settings it cannot use (a missing CA file) raise here, and
        this sink goes on as it was."""
        sink = create(settings, ctx)
        await self.detach()
        sink.adopt(self)
        sink._meta.update(self._meta)
        sink._visible.update(self._visible)
        sink._hidden.update(self._hidden)
        return sink

    def adopt(self, old: MqttSink) -> None:
        """Carry the devices' last statuses over from the sink this one replaces."""
        self._status.update(old._status)
        self.published, self.acked, self.replayed = old.published, old.acked, old.replayed
        self.commands, self.publish_latency = old.commands, old.publish_latency
        self.sample_latency = old.sample_latency

    async def stop(self, devices: list[str]) -> None:
        """Flush what can be flushed within `flush_timeout`, set statuses offline, disconnect."""
        for command in self._commands:
            command.cancel()
        if self._task is not None:
            self._task.cancel()
        deadline = time.monotonic() + self.s.flush_timeout
        self._safe_cycle()
        while (
            self.connected
            and (self.queue.depth_of(STREAM) or self._inflight)
            and self.queue.failing is None
            and time.monotonic() < deadline
        ):
            await asyncio.sleep(0.02)
            self._safe_cycle()
        for device in devices:
            self.device_status(device, "offline", "gateway stopped")
        info = self.client.publish(
            f"{self.prefix}/status", _json({"state": "offline", "ts": now_ms()}), qos=1, retain=True
        )
        if self.connected:
            while not info.is_published() and time.monotonic() < deadline + 1:
                await asyncio.sleep(0.02)
        self._safe_cycle()
        self._stopping = True
        self.client.disconnect()
        self.io.stop()
        remaining = self.queue.depth_of(STREAM)
        if remaining:
            event(log, logging.INFO, "messages kept in the queue for the next start", count=remaining)


def create(settings: MqttSettings, ctx: SinkContext) -> MqttSink:
    return MqttSink(
        settings, ctx.gateway_id, ctx.queue, ctx.relative, ctx.write, commit_interval=ctx.commit_interval
    )
