"""Real peers for end-to-end tests: Mosquitto, the simulators and the gateway, as processes on
free loopback ports, stopped by PID; and an MQTT subscriber that records what arrives."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from edgegw.identifier.templates import Value
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parent.parent
EDGEGW = [sys.executable, "-m", "edgegw.gateway.cli"]


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A free loopback port, never one this process handed out before: the kernel may give a
    port just released to the next caller, and a plant that asks for several ports before any
    is bound (a Modbus simulator, the control API) would then get the same port twice."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def wait_for(cond: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def wait_port(port: int, timeout: float = 10.0) -> None:
    def up() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), 0.2):
                return True
        except OSError:
            return False

    wait_for(up, timeout, f"port {port}")


class Proc:
    """A child process with its output in a file, stopped by PID."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None, cwd: Path = ROOT):
        self.log_path = log
        self._log = open(log, "wb")  # noqa: SIM115
        self.p = subprocess.Popen(
            args, stdout=self._log, stderr=subprocess.STDOUT, cwd=cwd, env={**os.environ, **(env or {})}
        )

    @property
    def pid(self) -> int:
        return self.p.pid

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        if self.p.poll() is None:
            os.kill(self.p.pid, sig)

    def stop(self, timeout: float = 10.0) -> int:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self._log.close()
        return self.p.returncode

    def kill(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()


def mosquitto_binary() -> str:
    for candidate in (shutil.which("mosquitto"), "/usr/sbin/mosquitto"):
        if candidate and os.path.exists(candidate):
            return candidate
    raise RuntimeError("mosquitto is not installed (apt-get install -y mosquitto)")


def start_mosquitto(tmp: Path, port: int, persistent: bool = False) -> Proc:
    """A broker on loopback. `persistent` keeps sessions and queued messages across a restart,
    so a subscriber misses nothing while the broker is down and back."""
    conf = tmp / f"mosquitto-{port}.conf"
    text = f"listener {port} 127.0.0.1\nallow_anonymous true\n"
    if persistent:
        store = tmp / f"mosquitto-{port}-store"
        store.mkdir(exist_ok=True)
        text += f"persistence true\npersistence_location {store}/\nmax_queued_messages 0\n"
        if os.geteuid() == 0:
            # as root, mosquitto drops to user "mosquitto", which cannot write the test's store
            text += "user root\n"
    else:
        text += "persistence false\n"
    conf.write_text(text)
    proc = Proc([mosquitto_binary(), "-c", str(conf)], tmp / f"mosquitto-{port}-{time.monotonic_ns()}.log")
    wait_port(port)
    return proc


class Subscriber:
    """Collects every message under a topic filter, in arrival order, in its own thread.

    `persistent` uses a QoS 1 session that the broker keeps while this client is away (with a
    persistent broker, also across a broker restart); the client reconnects by itself."""

    def __init__(self, port: int, topic: str = "#", persistent: bool = False):
        self.messages: list[tuple[str, bytes, bool]] = []
        self.arrived: list[float] = []
        self.arrived_wall: list[float] = []  # time.time() of each arrival (latency against `ts`)
        self.lock = threading.Lock()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"test-sub-{os.getpid()}-{port}-{time.monotonic_ns()}",
            clean_session=not persistent,
        )
        self.client.reconnect_delay_set(0.2, 0.5)  # type: ignore[arg-type]
        self.client.on_message = self._on_message
        self._subscribed = threading.Event()
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        if not self._subscribed.wait(5):
            raise AssertionError("subscriber could not subscribe")

    def _on_message(self, _c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
        with self.lock:
            self.messages.append((msg.topic, msg.payload, bool(msg.retain)))
            self.arrived.append(time.monotonic())
            self.arrived_wall.append(time.time())

    def json(self, suffix: str) -> list[dict[str, Any]]:
        with self.lock:
            return [json.loads(p) for t, p, _ in self.messages if t.endswith(suffix) and p]

    def data(self, device: str) -> list[dict[str, Any]]:
        return self.json(f"/{device}/data")

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def seq_report(messages: list[dict[str, Any]]) -> tuple[list[int], int]:
    """(missing seq numbers, duplicates) over a device's data messages."""
    seen: dict[int, int] = defaultdict(int)
    for m in messages:
        seen[m["seq"]] += 1
    if not seen:
        return [], 0
    lo, hi = min(seen), max(seen)
    missing = [s for s in range(lo, hi + 1) if s not in seen]
    dups = sum(n - 1 for n in seen.values())
    return missing, dups


REPORT: list[str] = []  # lines printed at the end of the test run (see conftest.py)


def in_order_after_dedup(seqs: list[int]) -> bool:
    """True if, ignoring repeats of a seq already seen, the sequence only increases."""
    seen: set[int] = set()
    last = 0
    for s in seqs:
        if s in seen:
            continue
        if s < last:
            return False
        seen.add(s)
        last = s
    return True


def start_victoria_metrics(tmp: Path, port: int, store: Path | None = None) -> Proc:
    """VictoriaMetrics on loopback: it accepts the InfluxDB v2 write API (/api/v2/write) and
    answers queries, so the InfluxDB sink is tested against a real server."""
    binary = shutil.which("victoria-metrics") or "/usr/bin/victoria-metrics"
    if not os.path.exists(binary):
        raise RuntimeError("victoria-metrics is not installed (apt-get install -y victoria-metrics)")
    store = store or tmp / f"vm-{port}"
    proc = Proc(
        [
            binary,
            f"-httpListenAddr=127.0.0.1:{port}",
            f"-storageDataPath={store}",
            "-retentionPeriod=100y",
            "-search.latencyOffset=0s",
            "-search.disableCache",
            "-loggerLevel=ERROR",
        ],
        tmp / f"vm-{port}-{time.monotonic_ns()}.log",
    )
    wait_port(port, 20)
    return proc


class SimPlant:
    """`config` (YAML text, written to tmp) run for real: Mosquitto, `edgegw simulate` with its
    fault API, `edgegw run`, and a subscriber on the gateway's topics. Ready when each of
    `devices` has published a few samples."""

    def __init__(
        self, tmp: Path, config: str, gateway_id: str, devices: list[str], mqtt_port: int, control: int
    ):
        self.tmp, self.mqtt_port, self.control = tmp, mqtt_port, control
        self.config = tmp / "config.yaml"
        self.config.write_text(config)
        started: list[Proc | Subscriber] = []
        try:
            self.broker = start_mosquitto(tmp, mqtt_port)
            started.append(self.broker)
            self.sub = Subscriber(mqtt_port, f"edgegw/{gateway_id}/#")
            started.append(self.sub)
            self.sim = Proc(
                [*EDGEGW, "simulate", "-c", str(self.config), "--control", f"127.0.0.1:{control}"],
                tmp / "sim.log",
            )
            started.append(self.sim)
            wait_port(control, 20)
            self.gw = Proc([*EDGEGW, "run", "-c", str(self.config)], tmp / "gw.log")
            started.append(self.gw)
            for d in devices:
                wait_for(lambda d=d: len(self.good(d)) > 2, 20, f"{d} read")
        except BaseException:
            # a plant that never got ready leaves nothing running behind the failed test
            for p in reversed(started):
                p.stop()
            raise

    def ctl(self, method: str, path: str, body: Any = None) -> Any:
        """A call to the simulators' fault API."""
        import httpx

        r = httpx.request(method, f"http://127.0.0.1:{self.control}{path}", json=body, timeout=10)
        r.raise_for_status()
        return r.json()

    def good(self, device: str, after: int = 0) -> list[dict[str, Any]]:
        """The device's data messages from index `after` with no point bad."""
        return [
            m
            for m in self.sub.data(device)[after:]
            if m["points"] and all(p["q"] != "bad" for p in m["points"].values())
        ]

    def stop(self) -> None:
        for p in (self.gw, self.sim, self.broker):
            p.stop()
        self.sub.stop()


class Tmpfs:
    """A small tmpfs mounted on a test's directory: a real disk that fills up and that can be
    remounted read-only. Needs root (CI runs as root)."""

    def __init__(self, path: Path, size: str = "4m"):
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
        self.filler = path / "filler"

    def fill(self) -> None:
        """Take every free byte (ENOSPC for the next write)."""
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            for size in (65536, 4096, 1):
                try:
                    while True:
                        os.write(fd, b"\0" * size)
                except OSError:
                    pass
        finally:
            os.close(fd)

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)

    def readonly(self, on: bool) -> None:
        mode = "ro" if on else "rw"
        subprocess.run(["mount", "-o", f"remount,{mode}", str(self.path)], check=True)

    def unmount(self) -> None:
        subprocess.run(["umount", "-l", str(self.path)], check=False)


def can_mount() -> bool:
    return os.geteuid() == 0 and shutil.which("mount") is not None


# the enterprise prefix of the identifier tests, and a registration's values that fit the
# simulator's default template
P = "88.118.8"


GOOD = (
    Value(2000, "serial_number", "SN-1"),
    Value(2001, "model", "IM-200"),
    Value(2002, "batch", "B-1"),
    Value(2005, "produced_at", "2026-11-21T08:00:00.000Z"),
)
