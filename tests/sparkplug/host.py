"""A Sparkplug host for the tests: subscribes to spBv1.0/#, keeps every message with its MQTT
QoS and retain flag, and decodes payloads with a protobuf reader written here from the
specification's field table (it shares nothing with the gateway's codec)."""

from __future__ import annotations

import os
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

SIGNED = {1: 8, 2: 16, 3: 32, 4: 64}


def varint(b: bytes, i: int) -> tuple[int, int]:
    n = s = 0
    while True:
        c = b[i]
        i += 1
        n |= (c & 0x7F) << s
        s += 7
        if c < 0x80:
            return n, i


def walk(b: bytes) -> list[tuple[int, int, Any]]:
    out, i = [], 0
    while i < len(b):
        k, i = varint(b, i)
        wt = k & 7
        if wt == 0:
            v, i = varint(b, i)
        elif wt == 1:
            v, i = b[i : i + 8], i + 8
        elif wt == 5:
            v, i = b[i : i + 4], i + 4
        else:
            n, i = varint(b, i)
            v, i = b[i : i + n], i + n
        out.append((k >> 3, wt, v))
    return out


def _scalar(datatype: int, no: int, raw: Any, base: int) -> Any:
    k = no - base
    if k in (0, 1):
        bits = SIGNED.get(datatype)
        if bits:
            width = 32 if bits <= 32 else 64
            raw &= (1 << width) - 1
            return raw - (1 << width) if raw >> (width - 1) else raw
        return raw
    if k == 2:
        return struct.unpack("<f", raw)[0]
    if k == 3:
        return struct.unpack("<d", raw)[0]
    if k == 4:
        return bool(raw)
    if k == 5:
        return raw.decode()
    return raw


def metric(b: bytes) -> dict[str, Any]:
    fs = walk(b)
    m: dict[str, Any] = {"fields": {no for no, _, _ in fs}}
    dt = next((v for no, _, v in fs if no == 4), None)
    m["datatype"] = dt
    for no, _, v in fs:
        if no == 1:
            m["name"] = v.decode()
        elif no == 2:
            m["alias"] = v
        elif no == 3:
            m["timestamp"] = v
        elif no == 5:
            m["is_historical"] = bool(v)
        elif no == 7:
            m["is_null"] = bool(v)
        elif no == 9:
            keys, values = [], []
            for pno, _, pv in walk(v):
                if pno == 1:
                    keys.append(pv.decode())
                else:
                    pf = walk(pv)
                    pt = next(x for n, _, x in pf if n == 1)
                    val = next((_scalar(pt, n, x, 3) for n, _, x in pf if 3 <= n <= 8), None)
                    values.append((pt, val))
            m["properties"] = dict(zip(keys, values, strict=True))
        elif 10 <= no <= 16:
            m["value"] = _scalar(dt or 0, no, v, 10)
    return m


def payload(b: bytes) -> dict[str, Any]:
    p: dict[str, Any] = {"metrics": []}
    for no, _, v in walk(b):
        if no == 1:
            p["timestamp"] = v
        elif no == 2:
            p["metrics"].append(metric(v))
        elif no == 3:
            p["seq"] = v
    return p


def encode_rebirth() -> bytes:
    """An NCMD payload: metric 'Node Control/Rebirth' = true (Boolean), written by hand."""
    name = b"Node Control/Rebirth"
    m = b"\x0a" + bytes([len(name)]) + name + b"\x20\x0b" + b"\x70\x01"  # name, datatype 11, boolean_value
    return b"\x08" + _enc(int(time.time() * 1000)) + b"\x12" + bytes([len(m)]) + m


def encode_write(name: str, datatype: int, value: float) -> bytes:
    """A DCMD payload with one metric by name; a Double value (datatype 10)."""
    n = name.encode()
    m = b"\x0a" + bytes([len(n)]) + n + b"\x20" + bytes([datatype]) + b"\x69" + struct.pack("<d", value)
    return b"\x08" + _enc(int(time.time() * 1000)) + b"\x12" + bytes([len(m)]) + m


def _enc(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


@dataclass
class Msg:
    topic: str
    qos: int
    retain: bool
    body: bytes
    at: float
    decoded: dict[str, Any] = field(default_factory=dict)

    @property
    def verb(self) -> str:
        return self.topic.split("/")[2]

    @property
    def device(self) -> str | None:
        parts = self.topic.split("/")
        return parts[4] if len(parts) > 4 else None


class Host:
    def __init__(self, port: int, topic: str = "spBv1.0/#"):
        self.port = port
        self.messages: list[Msg] = []
        self.lock = threading.Lock()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=f"test-host-{os.getpid()}-{time.monotonic_ns()}"
        )
        self.client.on_message = self._on_message
        ready = threading.Event()
        self.client.on_subscribe = lambda *a: ready.set()
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        if not ready.wait(5):
            raise AssertionError("host could not subscribe")

    def _on_message(self, _c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
        m = Msg(msg.topic, msg.qos, bool(msg.retain), bytes(msg.payload), time.monotonic())
        if not msg.topic.startswith("spBv1.0/STATE/"):
            m.decoded = payload(m.body)
        with self.lock:
            self.messages.append(m)

    def of(self, verb: str, device: str | None = None) -> list[Msg]:
        with self.lock:
            return [m for m in self.messages if m.verb == verb and (device is None or m.device == device)]

    def publish(self, topic: str, body: bytes, qos: int = 0, retain: bool = False) -> None:
        self.client.publish(topic, body, qos=qos, retain=retain).wait_for_publish(5)

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
