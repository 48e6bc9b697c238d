"""Sparkplug B 3.0 edge node (paho-mqtt): births and deaths, DDATA by alias, commands, the
primary host's STATE, and the durable queue's history sent as historical after the births.

Session. Each MQTT CONNECT carries the NDEATH will (QoS 1, not retained) with the next bdSeq
(first 0, +1 per CONNECT a broker accepted, wrapping at 256); the accepted one is written to
`data_dir/sparkplug.bdseq`, so a restart goes on from it. On connect the node subscribes to its NCMD and DCMD topics (and the
primary host's STATE), then publishes NBIRTH (seq 0, bdSeq, `Node Control/Rebirth` false) and a
DBIRTH per device, each with every metric: name = point id, alias, datatype, value (or is_null
with Quality 0), properties. One seq, 0-255 wrapping, runs across NBIRTH, DBIRTH, DDATA and
DDEATH. A device going offline gets DDEATH, coming back a DBIRTH. With `primary_host_id`
nothing is born until that host's STATE says online; an offline STATE not older than the last
online one ends the session (NDEATH, disconnect, a new CONNECT with the next bdSeq).

Delivery. Sparkplug publishes data at QoS 0, so there is no PUBACK to delete a queued row on.
Every sample is committed to the durable queue (stream `sparkplug`) as the DDATA metrics it
becomes, and published from there in order. After a batch of rows the node re-sends its NCMD
SUBSCRIBE (idempotent, no retained message on that topic); the broker handles a client's
packets in order, so its SUBACK says every row before it arrived, and those rows leave the
queue. A connection lost before that keeps them: they go again in the next session. Rows queued
before a session's births (a broker or host outage, a crash) are sent after the births with
`is_historical` and their original timestamps; at-least-once, like the JSON sink.

Aliases are numbered once per device and point and kept in `data_dir/sparkplug.aliases.json`,
so the metrics committed to the queue stay valid across restarts and reloads.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import struct
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from edgegw.drivers.base import WriteFailed
from paho.mqtt.enums import CallbackAPIVersion

from ...config.schema import SparkplugSettings
from ...config.units import UNECE_REC20
from ...dictionary import DictionaryEntry, visible
from ...durable_queue import DurableQueue
from ...logs import RateLimited, event, report_crash
from ...normalise import Reading, Sample
from ...writeback import WriteRejected, write_error
from .. import DeviceInfo, SinkContext, WritePoint
from ..broker import configure, next_reconnect_delay
from . import payload as pb

log = logging.getLogger("edgegw.sparkplug")
STREAM = "sparkplug"
REBIRTH = "Node Control/Rebirth"
GOOD, BAD = 192, 0  # the only Quality values besides 500 (stale) the specification allows
_TS = struct.Struct(">Q")

DATATYPES = {
    "bool": pb.BOOLEAN,
    "int8": pb.INT8,
    "uint8": pb.UINT8,
    "int16": pb.INT16,
    "uint16": pb.UINT16,
    "int32": pb.INT32,
    "uint32": pb.UINT32,
    "int64": pb.INT64,
    "uint64": pb.UINT64,
    "float32": pb.FLOAT,
    "float64": pb.DOUBLE,
    "string": pb.STRING,
}


def datatype_of(e: DictionaryEntry) -> int:
    """A scaled integer point is a Double: its engineering value has decimals."""
    if e.type.startswith(("int", "uint")) and (e.scale != 1.0 or e.offset != 0.0):
        return pb.DOUBLE
    return DATATYPES[e.type]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class _Device:
    info: DeviceInfo
    points: list[DictionaryEntry]
    alias: dict[str, int]
    datatype: dict[str, int]
    # per point: its alias field, value -> value field, and (pack, tag, size) for Float/Double
    encoders: dict[str, tuple[bytes, Any, Any]]
    # the latest readings for births: the last full sample, and what partial samples changed
    last_full: list[Reading] = field(default_factory=list)
    changed: dict[str, Reading] = field(default_factory=dict)
    last_ts: int = 0

    def latest(self) -> dict[str, Reading]:
        out = {r.id: r for r in self.last_full}
        out.update(self.changed)
        return out

    online: bool = True
    born: bool = False  # a DBIRTH went out in this session and no DDEATH after it


class SparkplugSink:
    name = "sparkplug"

    def __init__(self, settings: SparkplugSettings, ctx: SinkContext):
        s = self.s = settings
        self.queue: DurableQueue = ctx.queue
        self.commit_interval = ctx.commit_interval
        self.write: WritePoint | None = ctx.write if s.commands else None
        self.data_dir = Path(ctx.data_dir)
        self.node = s.edge_node_id or ctx.gateway_id
        self.ns = f"spBv1.0/{s.group_id}"
        self._ncmd = f"{self.ns}/NCMD/{self.node}"
        self._dcmd = f"{self.ns}/DCMD/{self.node}/+"
        self._state_topic = f"spBv1.0/STATE/{s.primary_host_id}" if s.primary_host_id else None
        self._broker = f"{s.host}:{s.port}"
        self._devices: dict[str, _Device] = {}
        self._aliases_path = self.data_dir / "sparkplug.aliases.json"
        self._aliases: dict[str, int] = self._load_aliases()
        self._next_alias = max(self._aliases.values(), default=0)
        self._bdseq_path = self.data_dir / "sparkplug.bdseq"
        self.bdseq = self._read_bdseq()  # the value of the current (or next) CONNECT's will
        self._session_up = False  # a broker accepted the CONNECT carrying self.bdseq
        self._seq = 0
        self.connected = False
        self.host_online = self._state_topic is None
        self._host_ts = -1  # timestamp of the last online STATE
        self.born = False  # NBIRTH went out in this session
        self._boundary = 0  # rows up to here were queued before this session's births
        self._cursor = 0  # last row published in this session
        self._unconfirmed: list[int] = []  # rows published since the last barrier
        self._barriers: dict[int, list[int]] = {}  # SUBSCRIBE mid -> rows it confirms
        self._confirmed: deque[int] = deque()  # SUBACKed barrier mids, from paho's thread
        self._events: deque[tuple[int, str, str]] = deque()  # (after row, DDEATH|DBIRTH, device)
        self._attempt = 0
        self._stopping = False
        self.published = self.acked = self.births = self.rebirths = self.commands = self.damaged = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._ratelimit = RateLimited(log, 30.0)
        self.client = self._make_client(ctx)

    # ---- persisted state: bdSeq and aliases ----

    def _read_bdseq(self) -> int:
        """The bdSeq of the next CONNECT: one more than the last a broker accepted."""
        try:
            last = int(self._bdseq_path.read_text().strip())
        except (OSError, ValueError):
            return 0  # the first CONNECT ever carries 0
        return (last + 1) % 256

    def _write_bdseq(self, value: int) -> None:
        """The bdSeq a broker accepted, kept so that the next start goes on from it."""
        tmp = self._bdseq_path.with_suffix(".tmp")
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            with open(tmp, "w") as f:
                f.write(f"{value}\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self._bdseq_path)
        except OSError as exc:
            self._ratelimit.log("bdseq", logging.ERROR, "cannot keep the Sparkplug bdSeq", error=str(exc))

    def _load_aliases(self) -> dict[str, int]:
        try:
            data = json.loads(self._aliases_path.read_text())
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict):
            return {}
        return {str(k): int(v) for k, v in data.items() if isinstance(v, int) and not isinstance(v, bool)}

    def _save_aliases(self) -> None:
        tmp = self._aliases_path.with_suffix(".tmp")
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(self._aliases, separators=(",", ":")))
            os.replace(tmp, self._aliases_path)
        except OSError as exc:
            self._ratelimit.log("aliases", logging.ERROR, "cannot keep the Sparkplug aliases", error=str(exc))

    # ---- paho (its network thread hands everything to the event loop) ----

    def _make_client(self, ctx: SinkContext) -> paho.Client:
        s = self.s
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=s.client_id or f"edgegw-{ctx.gateway_id}-spb",
            clean_session=True,
            protocol=paho.MQTTv311,
        )
        client.max_inflight_messages_set(20)  # QoS 1 only carries SUBSCRIBEs and the will
        client.max_queued_messages_set(0)
        configure(client, s, ctx.relative)
        self._set_will(client)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_connect_fail = self._on_connect_fail
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        return client

    def _ndeath(self) -> bytes:
        return pb.encode_payload(
            now_ms(), [pb.Metric(name="bdSeq", datatype=pb.INT64, value=self.bdseq)], None
        )

    def _set_will(self, client: paho.Client) -> None:
        client.will_set(f"{self.ns}/NDEATH/{self.node}", self._ndeath(), qos=1, retain=False)

    def _on_connect(self, client: paho.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            self._broker_warning("broker refused the connection", reason=str(reason))
            return
        self._attempt = 0
        self._session_up = True
        self._write_bdseq(self.bdseq)  # this CONNECT's will is registered: its bdSeq is used
        sock = client.socket()
        if isinstance(sock, socket.socket):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # subscriptions first: commands (and the host's STATE) before anything is born
        client.subscribe([(self._ncmd, 1), (self._dcmd, 1)])
        if self._state_topic is not None:
            client.subscribe(self._state_topic, qos=1)
        event(log, logging.INFO, "connected to broker", broker=self._broker, bdseq=self.bdseq)
        self._call(self._on_connected)

    def _on_disconnect(self, client: paho.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        # paho's thread, before its next CONNECT: that one carries the next bdSeq
        if self._session_up:
            self._session_up = False
            self.bdseq = (self.bdseq + 1) % 256
            self._set_will(client)
        self._call(self._on_disconnected, str(reason))

    def _on_connect_fail(self, _c: Any, _u: Any) -> None:
        self._next_reconnect_delay()
        self._broker_warning("cannot reach the broker; buffering on disk, retrying")

    def _on_subscribe(self, _c: Any, _u: Any, mid: int, _rc: Any, _p: Any) -> None:
        self._confirmed.append(mid)
        self._call(self._wake.set)

    def _on_message(self, _c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
        if msg.retain and msg.topic != self._state_topic:
            # NCMD/DCMD are never retained (Sparkplug 4.2); one that is would come back with
            # every SUBSCRIBE barrier: a Rebirth storm, or a write repeated
            self._call(self._retained_command, msg.topic)
            return
        self._call(self._message, msg.topic, bytes(msg.payload))

    def _retained_command(self, topic: str) -> None:
        self._ratelimit.log(
            "retained",
            logging.WARNING,
            "ignored a retained command (commands are never retained)",
            topic=topic,
        )

    def _call(self, fn: Any, *args: Any) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(fn, *args)

    def _next_reconnect_delay(self) -> None:
        self._attempt += 1
        next_reconnect_delay(self.client, self.s, self._attempt)

    def _broker_warning(self, msg: str, **fields: Any) -> None:
        self._ratelimit.log("connect", logging.WARNING, msg, broker=self._broker, **fields)

    # ---- session (event loop thread) ----

    def _on_connected(self) -> None:
        self.connected = True
        if self.host_online:
            self._birth_all()

    def _on_disconnected(self, reason: str) -> None:
        was = self.connected
        self.connected = self.born = False
        self.host_online = self._state_topic is None
        self._unconfirmed.clear()
        self._barriers.clear()
        self._events.clear()
        for d in self._devices.values():
            d.born = False
        if self._stopping:
            return
        self._next_reconnect_delay()
        if was:
            event(
                log, logging.WARNING, "lost the broker; buffering on disk", broker=self._broker, reason=reason
            )
        else:
            self._broker_warning("cannot reach the broker; buffering on disk", reason=reason)

    def _next_seq(self) -> int:
        seq = self._seq
        self._seq = (seq + 1) % 256
        return seq

    def _publish(self, topic: str, body: bytes) -> bool:
        info = self.client.publish(topic, body, qos=0, retain=False)
        return info.rc == paho.MQTT_ERR_SUCCESS

    def _birth_all(self) -> None:
        """NBIRTH and every device's DBIRTH (a session's start, or a Rebirth request); what is
        queued until now is history, sent after them. A device that is offline is born too, so
        that its history can follow, and dies after it."""
        if not self.connected:
            return
        with contextlib.suppress(Exception):
            self.queue.commit()
        self._boundary = self.queue.last_id()
        self._cursor = 0  # everything unconfirmed goes again, in order, after the births
        self._unconfirmed.clear()
        self._barriers.clear()
        self._events.clear()
        self._seq = 0
        self._next_seq()
        metrics = [
            pb.Metric(name="bdSeq", datatype=pb.INT64, value=self.bdseq, timestamp=now_ms()),
            pb.Metric(name=REBIRTH, datatype=pb.BOOLEAN, value=False, timestamp=now_ms()),
        ]
        self._publish(f"{self.ns}/NBIRTH/{self.node}", pb.encode_payload(now_ms(), metrics, 0))
        self.born = True
        self.births += 1
        for device, d in self._devices.items():
            self._device_birth(device, force=True)
            if not d.online:
                self._events.append((self._boundary, "DDEATH", device))
        self._wake.set()

    def _device_birth(self, device: str, force: bool = False) -> None:
        d = self._devices.get(device)
        if d is None or not self.born or not (d.online or force):
            return
        metrics = []
        latest = d.latest()
        for e in d.points:
            r = latest.get(e.id)
            v, q, ts, at = (r.v, r.q, r.ts, d.last_ts) if r is not None else (None, "bad", None, now_ms())
            props: dict[str, tuple[int, object]] = {
                "Quality": (pb.INT32, BAD if q == "bad" or v is None else GOOD)
            }
            if q == "uncertain":
                props["qualityDetail"] = (pb.STRING, "uncertain")
            if e.unit:
                props["engUnit"] = (pb.STRING, UNECE_REC20.get(e.unit, (e.unit, ""))[0])
            if e.range is not None:
                props["engLow"] = (pb.DOUBLE, float(e.range[0]))
                props["engHigh"] = (pb.DOUBLE, float(e.range[1]))
            names = e.name or {}
            text = " / ".join(n for n in (names.get("en"), names.get("zh")) if n) or e.description
            if text:
                props["description"] = (pb.STRING, text)
            metrics.append(
                pb.Metric(
                    name=e.id,
                    alias=d.alias[e.id],
                    timestamp=ts if ts is not None else at,
                    datatype=d.datatype[e.id],
                    value=None if q == "bad" else v,
                    properties=props,
                )
            )
        self._publish(
            f"{self.ns}/DBIRTH/{self.node}/{device}", pb.encode_payload(now_ms(), metrics, self._next_seq())
        )
        d.born = True

    def _device_death(self, device: str) -> None:
        d = self._devices.get(device)
        if d is None or not d.born or not self.born:
            return
        self._publish(
            f"{self.ns}/DDEATH/{self.node}/{device}", pb.encode_payload(now_ms(), [], self._next_seq())
        )
        d.born = False

    def _message(self, topic: str, body: bytes) -> None:
        try:
            if topic == self._state_topic:
                self._host_state(body)
            elif topic == self._ncmd:
                self._node_command(body)
            elif topic.startswith(f"{self.ns}/DCMD/{self.node}/"):
                self._device_command(topic.rsplit("/", 1)[1], body)
        except pb.PayloadError as exc:
            self._ratelimit.log(
                "payload",
                logging.WARNING,
                "ignored a command that is not a Sparkplug payload",
                topic=topic,
                error=str(exc),
            )

    def _host_state(self, body: bytes) -> None:
        try:
            state = json.loads(body)
            online, ts = state["online"], state["timestamp"]
            if not isinstance(online, bool) or not isinstance(ts, int) or isinstance(ts, bool):
                raise ValueError
        except (ValueError, KeyError, TypeError, RecursionError):
            self._ratelimit.log(
                "state",
                logging.WARNING,
                "ignored a STATE message that is not Sparkplug 3.0 JSON",
                body=body[:100],
            )
            return
        if online:
            if ts >= self._host_ts:
                self._host_ts = ts
                if not self.host_online:
                    event(log, logging.INFO, "primary host online", host=self.s.primary_host_id)
                self.host_online = True
                if self.connected and not self.born:
                    self._birth_all()
            return
        if ts < self._host_ts:
            return  # an old offline STATE (retained from before the host came back)
        was_online, self.host_online = self.host_online, False
        if was_online:
            event(log, logging.WARNING, "primary host offline", host=self.s.primary_host_id)
        if self.connected and self.born:
            # a session that was born ends (the host may have missed its data); one still
            # waiting for the host stays connected and waits
            # the NDEATH the will would send, then a new session with the next bdSeq
            self.client.publish(f"{self.ns}/NDEATH/{self.node}", self._ndeath(), qos=1, retain=False)
            self.born = False
            self.client.disconnect()
            self.client.reconnect_delay_set(min_delay=self.s.reconnect_min, max_delay=self.s.reconnect_min)  # type: ignore[arg-type]
            # paho ends its loop on a requested disconnect: connect again ourselves
            asyncio.get_running_loop().call_later(0.1, self._reconnect)

    def _reconnect(self) -> None:
        """A new session after ending one on purpose (paho's loop ends on a requested disconnect)."""
        if self._stopping or self.connected:
            return
        self.client.loop_stop()
        self.client.connect_async(self.s.host, self.s.port, keepalive=int(self.s.keepalive))
        self.client.loop_start()

    def _node_command(self, body: bytes) -> None:
        for m in pb.decode_payload(body).metrics:
            if m.name == REBIRTH and m.value is True:
                self.rebirths += 1
                event(log, logging.INFO, "rebirth requested")
                self._birth_all()
            else:
                self._ratelimit.log(
                    "ncmd", logging.WARNING, "ignored an NCMD metric", metric=str(m.name or m.alias)
                )

    def _device_command(self, device: str, body: bytes) -> None:
        p = pb.decode_payload(body)
        self.commands += 1
        d = self._devices.get(device)
        for m in p.metrics:
            point = m.name
            if point is None and m.alias is not None and d is not None:
                point = next((k for k, a in d.alias.items() if a == m.alias), None)
            if d is None or point is None or point not in d.alias:
                self._ratelimit.log(
                    "dcmd",
                    logging.WARNING,
                    "ignored a DCMD for an unknown metric",
                    device=device,
                    metric=str(m.name or m.alias),
                )
                continue
            if self.write is None:
                self._ratelimit.log(
                    "dcmd", logging.WARNING, "ignored a DCMD: commands are off", device=device, metric=point
                )
                continue
            task = asyncio.create_task(self._command(device, point, m.value))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _command(self, device: str, point: str, value: object) -> None:
        assert self.write is not None
        try:
            await self.write(device, point, value, "sparkplug DCMD", "sparkplug")
        except Exception as exc:
            event(
                log,
                logging.WARNING,
                "DCMD write refused",
                device=device,
                point=point,
                error=write_error(exc)[1],
            )
            if not isinstance(exc, WriteRejected | WriteFailed | TimeoutError):
                log.error("DCMD write failed with an internal error", exc_info=exc)

    # ---- the gateway side ----

    def add_device(self, info: DeviceInfo) -> None:
        points = [e for e in info.points if visible(e, self.s.max_classification)]
        new = False
        alias: dict[str, int] = {}
        for e in points:
            key = f"{info.id}/{e.id}"
            if key not in self._aliases:
                self._next_alias += 1
                self._aliases[key] = self._next_alias
                new = True
            alias[e.id] = self._aliases[key]
        if new:
            self._save_aliases()  # before a sample of this device is queued with them
        old = self._devices.get(info.id)
        d = _Device(
            info,
            points,
            alias,
            {e.id: datatype_of(e) for e in points},
            {
                e.id: (
                    b"\x10" + pb.varint(alias[e.id]),
                    value_encoder(datatype_of(e)),
                    _FIXED.get(datatype_of(e)),
                )
                for e in points
            },
        )
        if old is not None:
            d.last_full, d.changed, d.last_ts, d.online = old.last_full, old.changed, old.last_ts, old.online
            d.born = old.born  # its rows queued until the new DBIRTH are still its DDATA
        self._devices[info.id] = d
        if self.born:
            self._queue_event("DBIRTH", info.id)

    def remove_device(self, device: str, reason: str) -> None:
        if device in self._devices:
            self._queue_event("DDEATH", device)
            self._queue_event("FORGET", device)

    def device_status(self, device: str, state: str, reason: str | None) -> None:
        d = self._devices.get(device)
        if d is None:
            return
        if state not in ("online", "offline"):
            return  # connecting: neither born nor dead yet
        online = state == "online"
        if online == d.online:
            return
        d.online = online
        self._queue_event("DBIRTH" if online else "DDEATH", device)

    def _queue_event(self, kind: str, device: str) -> None:
        """A birth or death goes out after the rows queued before it, in order."""
        if not self.born:
            if kind == "FORGET":
                self._devices.pop(device, None)
            return
        with contextlib.suppress(Exception):
            self.queue.commit()
        self._events.append((self.queue.last_id(), kind, device))
        self._wake.set()

    def submit(self, sample: Sample) -> None:
        """Commit the sample as the DDATA metrics it becomes: per point its alias, its own
        timestamp and its value (bad: is_null with Quality 0; uncertain: Quality 192 with
        qualityDetail), encoded with the point's precompiled encoder."""
        d = self._devices.get(sample.device)
        if d is None:
            return
        out = bytearray(_TS.pack(sample.ts))
        sample_ts = b"\x18" + pb.varint(sample.ts)
        if not self.born:
            sample_ts += b"\x28\x01"  # is_historical: it waits for the next session's births
        historical = not self.born
        encoders = d.encoders
        d.last_ts = sample.ts
        if sample.full:
            d.last_full, d.changed = sample.readings, {}
        else:
            d.changed.update((r.id, r) for r in sample.readings)
        tail = len(sample_ts)
        for r in sample.readings:
            enc = encoders.get(r.id)
            if enc is None:
                continue
            prefix, value_of, fixed = enc
            v = r.v
            if fixed is not None and r.ts is None and r.q == "good" and v.__class__ is float:
                # the common case, a good Float/Double at the sample's time: written in place
                packer, tag, size = fixed
                try:
                    packed = packer(tag, v)
                except (struct.error, OverflowError):  # beyond a Float: the general path says bad
                    packed = None
                if packed is not None:
                    out += b"\x12"
                    out.append(len(prefix) + tail + size)
                    out += prefix
                    out += sample_ts
                    out += packed
                    continue
            if r.ts is None:
                head = prefix + sample_ts
            else:
                head = prefix + b"\x18" + pb.varint(r.ts) + (b"\x28\x01" if historical else b"")
            q = r.q
            if q == "good" and r.v is not None:
                try:
                    body = head + value_of(r.v)
                except (ValueError, TypeError, OverflowError, struct.error):
                    body = head + _NULL_BAD
            elif q == "bad" or r.v is None:
                body = head + _NULL_BAD
            else:
                try:
                    body = head + _QUALITY_UNCERTAIN + value_of(r.v)
                except (ValueError, TypeError, OverflowError, struct.error):
                    body = head + _NULL_BAD
            n = len(body)
            out += (b"\x12" + bytes((n,)) if n < 0x80 else b"\x12" + pb.varint(n)) + body
        if len(out) == 8:
            return
        self.queue.append(STREAM, sample.device, bytes(out))
        self._wake.set()

    def device_alarms(self, device: str, active: list[dict[str, Any]]) -> None:
        return None  # alarms are MQTT events (P/G/D/alarm, retained P/G/D/alarms)

    def publish_event(self, suffix: str, body: dict[str, Any]) -> None:
        return None  # gateway events (identifier results) are JSON-contract topics, not Sparkplug metrics

    # ---- the pump ----

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.client.connect_async(self.s.host, self.s.port, keepalive=int(self.s.keepalive))
        self.client.loop_start()
        self._task = asyncio.create_task(self._run(), name="sparkplug-sink")
        self._task.add_done_callback(report_crash)

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                self._cycle()
            except Exception as exc:  # a queue that cannot be read, or a bug: retry, never stop
                self._ratelimit.log(
                    "cycle", logging.ERROR, "Sparkplug sink cycle failed; retrying", error=repr(exc)
                )
                self._wake.set()
                await asyncio.sleep(1.0)
            if self.queue.failing is not None and self.queue.dirty:
                self._wake.set()
            await asyncio.sleep(self.commit_interval)

    def _cycle(self) -> None:
        done: list[int] = []
        while self._confirmed:
            done += self._barriers.pop(self._confirmed.popleft(), [])
        if done:
            self.acked += len(done)
            self.queue.ack(done)
        self.queue.commit()
        self._pump()

    def _pump(self) -> None:
        if not (self.connected and self.born):
            return
        room = self.s.inflight - len(self._unconfirmed) - sum(len(v) for v in self._barriers.values())
        while room > 0:
            want = min(room, 500)
            rows = self.queue.after(STREAM, self._cursor, want)
            for row_id, device, body in rows:
                while self._events and self._events[0][0] < row_id:
                    self._fire(self._events.popleft())
                d = self._devices.get(device)
                if d is not None and d.born:
                    metrics = body[8:]
                    try:
                        if row_id <= self._boundary and not _historical(metrics):
                            metrics = _as_historical(metrics)
                    except pb.PayloadError as exc:
                        # a row the disk damaged: settled and counted, never a queue stuck on it
                        self.damaged += 1
                        self._ratelimit.log(
                            "damaged",
                            logging.ERROR,
                            "dropped a damaged queued row",
                            row=row_id,
                            error=str(exc),
                        )
                        self._unconfirmed.append(row_id)
                        self._cursor = row_id
                        room -= 1
                        continue
                    if not self._publish(
                        f"{self.ns}/DDATA/{self.node}/{device}",
                        b"\x08" + pb.varint(now_ms()) + metrics + b"\x18" + pb.varint(self._next_seq()),
                    ):
                        return
                    self.published += 1
                self._unconfirmed.append(row_id)  # rows of a dead device are settled too
                self._cursor = row_id
                room -= 1
            if len(rows) < want:
                # every committed row is out, so every event's rows are: an event's mark may be
                # a row of another stream (the JSON sink's), which this cursor never reaches
                while self._events:
                    self._fire(self._events.popleft())
                break
            if room <= 0:
                while self._events and self._events[0][0] <= self._cursor:
                    self._fire(self._events.popleft())
                break
        if self._unconfirmed:
            rc, mid = self.client.subscribe(self._ncmd, qos=1)  # the barrier: its SUBACK confirms them
            if rc == paho.MQTT_ERR_SUCCESS and mid is not None:
                self._barriers[mid] = self._unconfirmed
                self._unconfirmed = []

    def _fire(self, ev: tuple[int, str, str]) -> None:
        _, kind, device = ev
        if kind == "DBIRTH":
            self._device_birth(device)
        elif kind == "DDEATH":
            self._device_death(device)
        else:
            self._devices.pop(device, None)

    def problem(self) -> str | None:
        if not self.connected:
            return "Sparkplug broker not connected"
        if not self.host_online:
            return f"Sparkplug primary host {self.s.primary_host_id} not online"
        return None

    async def replace(self, settings: SparkplugSettings, ctx: SinkContext) -> SparkplugSink:
        sink = SparkplugSink(settings, ctx)
        await self._leave(flush=False)
        for device, d in self._devices.items():
            sink._devices[device] = d
            d.born = False
        return sink

    async def stop(self, devices: list[str]) -> None:
        await self._leave(flush=True)

    async def _leave(self, flush: bool) -> None:
        for t in self._tasks:
            t.cancel()
        if self._task is not None:
            self._task.cancel()
        deadline = time.monotonic() + (self.s.flush_timeout if flush else 1.0)
        with contextlib.suppress(Exception):
            self._cycle()
        while (
            flush
            and self.connected
            and self.born
            and time.monotonic() < deadline
            and (self._barriers or self.queue.count(STREAM, self._cursor))
        ):
            await asyncio.sleep(0.02)
            with contextlib.suppress(Exception):
                self._cycle()
        self._stopping = True
        if self.connected:
            # an orderly end: the NDEATH the will would have sent
            info = self.client.publish(f"{self.ns}/NDEATH/{self.node}", self._ndeath(), qos=1, retain=False)
            while not info.is_published() and time.monotonic() < deadline + 1:
                await asyncio.sleep(0.02)
        self.client.disconnect()
        self.client.loop_stop()


def _quality(value: int, detail: str | None = None) -> bytes:
    props: dict[str, tuple[int, object]] = {"Quality": (pb.INT32, value)}
    if detail:
        props["qualityDetail"] = (pb.STRING, detail)
    encoded = pb.encode_properties(props)
    return b"\x4a" + pb.varint(len(encoded)) + encoded  # Metric.properties = 9


_QUALITY_BAD = _quality(BAD)
_QUALITY_UNCERTAIN = _quality(GOOD, "uncertain")
_NULL_BAD = b"\x38\x01" + _QUALITY_BAD  # is_null, Quality 0
_D = struct.Struct("<d")
_F = struct.Struct("<f")
# tag and value in one pack, for the in-place path of submit: (pack, tag, bytes with the tag)
_FIXED = {
    pb.DOUBLE: (struct.Struct("<Bd").pack, 0x69, 9),  # double_value = 13, 64-bit
    pb.FLOAT: (struct.Struct("<Bf").pack, 0x65, 5),  # float_value = 12, 32-bit
}


def value_encoder(datatype: int) -> Any:
    """value -> the Metric value field of this datatype, as a closure made once per point."""
    if datatype == pb.DOUBLE:
        pack_d = _D.pack
        return lambda v: b"\x69" + pack_d(float(v))  # double_value = 13, 64-bit
    if datatype == pb.FLOAT:
        pack_f = _F.pack
        return lambda v: b"\x65" + pack_f(float(v))  # float_value = 12, 32-bit
    if datatype == pb.BOOLEAN:
        return lambda v: b"\x70\x01" if v else b"\x70\x00"  # boolean_value = 14
    if datatype in (pb.INT64, pb.UINT64):
        return lambda v: b"\x58" + pb.varint(int(v) & 0xFFFFFFFFFFFFFFFF)  # long_value = 11
    if datatype == pb.STRING:
        return lambda v: pb.value_field(pb.STRING, v, 10)
    return lambda v: b"\x50" + pb.varint(int(v) & 0xFFFFFFFF)  # int_value = 10


def _historical(metrics: bytes) -> bool:
    """True when the row's metrics were queued already flagged historical."""
    for no, _w, raw in pb.fields(metrics):
        if no == 2:
            return any(n == 5 for n, _, _ in pb.fields(bytes(raw)))  # type: ignore[call-overload]
    return True


def _as_historical(metrics: bytes) -> bytes:
    """The row's metrics with is_historical set (a row sent live once, lost with its session)."""
    out = b""
    for no, _w, raw in pb.fields(metrics):
        if no == 2:
            inner = b"\x28\x01" + bytes(raw)  # type: ignore[call-overload]
            out += b"\x12" + pb.varint(len(inner)) + inner
    return out


def create(settings: SparkplugSettings, ctx: SinkContext) -> SparkplugSink:
    return SparkplugSink(settings, ctx)
