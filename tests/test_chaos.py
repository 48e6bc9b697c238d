"""Chaos: the broker goes away, the gateway is killed, a device hangs. Nothing may be lost.

Five simulated devices poll at 200 ms through a real gateway process into a real Mosquitto.
Every assertion is made from the MQTT side: per-device `seq` must have no gap, duplicates are
counted and reported (at-least-once; they are bounded by the in-flight window).
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from harness import (
    EDGEGW,
    REPORT,
    ROOT,
    Proc,
    Subscriber,
    free_port,
    in_order_after_dedup,
    seq_report,
    start_mosquitto,
    wait_for,
    wait_port,
)

DEVICES = ("im-1", "im-2", "im-3", "im-4", "em-5")
INTERVAL = 0.2
INFLIGHT = 32


class Line:
    """A production line: simulators, a persistent Mosquitto, a subscriber and the gateway."""

    def __init__(
        self, tmp: Path, replay: str = "interleaved", replay_rate: int = 100, keepalive: str = "30s"
    ):
        self.tmp = tmp
        self.mqtt_port = free_port()
        self.ports = (free_port(), free_port())
        self.control = free_port()
        self.config = tmp / "line.yaml"
        devices = "".join(
            f"""
  - id: {d}
    model: {"energy-meter-3ph" if d.startswith("em") else "injection-molder"}
    protocol: modbus-tcp
    connection: {{host: 127.0.0.1, port: {self.ports[d == "em-5"]}, unit_id: {n + 1}, timeout: 500ms}}
    poll: {{interval: {int(INTERVAL * 1000)}ms, backoff_max: 1s}}"""
            for n, d in enumerate(DEVICES)
        )
        self.config.write_text(
            f"""
include: {ROOT}/configs/models/*.yaml
gateway: {{id: gw-chaos, data_dir: {tmp}/data}}
devices:{devices}
northbound:
  mqtt:
    host: 127.0.0.1
    port: {self.mqtt_port}
    reconnect_min: 200ms
    reconnect_max: 2s
    keepalive: {keepalive}
    buffer: {{inflight: {INFLIGHT}, replay: {replay}, replay_rate: {replay_rate}}}
"""
        )
        self.broker = start_mosquitto(tmp, self.mqtt_port, persistent=True)
        self.sub = Subscriber(self.mqtt_port, "edgegw/gw-chaos/#", persistent=True)
        self.sim = Proc(
            [*EDGEGW, "simulate", "-c", str(self.config), "--control", f"127.0.0.1:{self.control}"],
            tmp / "sim.log",
        )
        for port in (*self.ports, self.control):
            wait_port(port, 15)
        self.gws: list[Proc] = []
        self.start_gateway()

    @property
    def gw(self) -> Proc:
        return self.gws[-1]

    def start_gateway(self) -> None:
        self.gws.append(Proc([*EDGEGW, "run", "-c", str(self.config)], self.tmp / f"gw-{len(self.gws)}.log"))

    def gateway_log(self) -> str:
        return "".join(p.output() for p in self.gws)

    def replays(self) -> int:
        """How many backlog replays the gateway has finished (the first connect may make one)."""
        return self.gateway_log().count("backlog replayed")

    def restart_broker(self) -> None:
        self.broker = start_mosquitto(self.tmp, self.mqtt_port, persistent=True)

    def data(self, device: str) -> list[dict[str, Any]]:
        return self.sub.data(device)

    def wait_flowing(self, at_least: int = 5, timeout: float = 20) -> None:
        wait_for(
            lambda: all(len(self.data(d)) >= at_least for d in DEVICES), timeout, "data from every device"
        )

    def state(self, name: str) -> str | None:
        """The last status of a device, or of the gateway itself."""
        topic = f"edgegw/gw-chaos/{name}/status" if name != "gateway" else "edgegw/gw-chaos/status"
        states = [json.loads(p)["state"] for t, p, _ in self.sub.messages if t == topic and p]
        return states[-1] if states else None

    def top(self, device: str) -> int:
        return max((m["seq"] for m in self.data(device)), default=0)

    def fault(self, device: str, mode: str | None) -> None:
        url = f"http://127.0.0.1:{self.control}/devices/{device}/fault"
        r = httpx.put(url, json={"mode": mode}) if mode else httpx.delete(url)
        r.raise_for_status()

    def check_no_gap(self, what: str) -> dict[str, tuple[int, int]]:
        """Assert every device's seq runs from 1 without a gap; report and return (count, dups)."""
        out = {}
        for d in DEVICES:
            msgs = self.data(d)
            missing, dups = seq_report(msgs)
            assert msgs and min(m["seq"] for m in msgs) == 1, (d, "seq does not start at 1")
            assert missing == [], (what, d, f"{len(missing)} missing", missing[:20])
            out[d] = (len({m["seq"] for m in msgs}), dups)
        total = sum(n for n, _ in out.values())
        dups = sum(k for _, k in out.values())
        REPORT.append(f"{what}: {len(DEVICES)} devices, {total} messages, 0 missing, {dups} duplicates")
        return out

    def close(self) -> None:
        for p in self.gws:
            p.kill()
        self.sim.kill()
        self.sub.stop()
        self.broker.kill()


@pytest.fixture
def line(tmp_path: Path) -> Iterator[Line]:
    ln = Line(tmp_path)
    try:
        yield ln
    finally:
        ln.close()


def test_broker_down_8s_then_back_loses_nothing_and_replays_beside_live_data(line: Line) -> None:
    line.wait_flowing()
    before = {d: line.top(d) for d in DEVICES}
    replays = line.replays()
    assert line.broker.stop() == 0
    down_at = time.time() * 1000
    time.sleep(8)
    line.restart_broker()
    up_at = time.time() * 1000
    up_index = len(line.sub.messages)

    # the gateway reconnects by itself (backoff capped at 2 s) and says it is online again
    def birth() -> int | None:
        for t, p, _ in line.sub.messages[up_index:]:
            if t == "edgegw/gw-chaos/status" and json.loads(p)["state"] == "online":
                return int(json.loads(p)["ts"])
        return None

    connected_at = wait_for(birth, 15, "birth after reconnect")
    wait_for(lambda: line.replays() > replays, 30, "the backlog replayed")
    line.wait_flowing(at_least=1)
    time.sleep(1)
    assert line.gw.stop() == 0
    log = line.gateway_log()
    assert "lost the broker; buffering on disk" in log
    assert "replaying the backlog" in log
    result = line.check_no_gap("broker stopped 8 s")
    for d in DEVICES:
        # the outage's samples were buffered and delivered: one per 200 ms, with slack for backoff
        during = [m for m in line.data(d) if down_at <= m["ts"] <= up_at - 1000]
        assert len(during) >= 0.9 * (up_at - 1000 - down_at) / 1000 / INTERVAL, (d, len(during))
        assert result[d][0] > before[d]
    # interleaving: fresh values arrived while the backlog was still being replayed
    arrivals = [json.loads(p) for t, p, _ in line.sub.messages[up_index:] if t == "edgegw/gw-chaos/im-1/data"]
    # the backlog is what was queued before the reconnect; the birth carries the reconnect time
    backlog = [i for i, m in enumerate(arrivals) if m["ts"] < connected_at]
    live = [i for i, m in enumerate(arrivals) if m["ts"] > connected_at + 200]
    assert backlog and live
    assert live[0] < backlog[-1], "live data waited behind the whole backlog"
    # each lane keeps the device's seq order
    assert in_order_after_dedup([arrivals[i]["seq"] for i in backlog])
    assert in_order_after_dedup([arrivals[i]["seq"] for i in live])
    replay = re.findall(r"backlog replayed\S* messages=(\d+) seconds=([\d.]+) per_second=(\d+)", log)[-1]
    REPORT.append(f"  backlog after 8 s: {replay[0]} messages replayed in {replay[1]} s ({replay[2]}/s)")


def test_a_frozen_broker_is_taken_for_lost_by_keep_alive_and_nothing_is_lost(tmp_path: Path) -> None:
    """SIGSTOP: the broker's connections stay open and it answers nothing (as behind a dead
    route). The gateway's keep-alive, run by the event loop, must notice, buffer and reconnect."""
    line = Line(tmp_path, keepalive="1s")
    try:
        line.wait_flowing()
        os.kill(line.broker.pid, signal.SIGSTOP)
        try:
            wait_for(lambda: "lost the broker" in line.gateway_log(), 10, "keep-alive noticing the broker")
        finally:
            os.kill(line.broker.pid, signal.SIGCONT)
        resumed = {d: line.top(d) for d in DEVICES}
        wait_for(
            lambda: all(line.top(d) > resumed[d] + 5 for d in DEVICES), 30, "data after the broker resumed"
        )
        assert line.gw.stop() == 0
        line.check_no_gap("broker frozen (SIGSTOP) until keep-alive noticed")
    finally:
        line.close()


def test_gateway_killed_twice_loses_nothing_and_duplicates_stay_within_the_window(line: Line) -> None:
    line.wait_flowing()
    rng = random.Random()
    for _ in range(2):
        time.sleep(rng.uniform(1.0, 3.0))
        line.gw.kill()  # SIGKILL: no flush, no offline status; the broker publishes the will
        wait_for(lambda: line.state("gateway") == "offline", 10, "the will")
        tops = {d: line.top(d) for d in DEVICES}
        line.start_gateway()
        wait_for(lambda: all(line.top(d) > tops[d] + 3 for d in DEVICES), 20, "data after restart")  # noqa: B023
    time.sleep(1)
    assert line.gw.stop() == 0
    assert "Traceback" not in line.gateway_log()
    result = line.check_no_gap("gateway SIGKILLed twice")
    dups = sum(k for _, k in result.values())
    assert dups <= 2 * INFLIGHT, f"{dups} duplicates for 2 kills with an in-flight window of {INFLIGHT}"


def test_one_hanging_device_leaves_the_other_four_at_full_rate(line: Line) -> None:
    line.wait_flowing()
    counts = {d: len(line.data(d)) for d in DEVICES}
    line.fault("em-5", "partial")  # answers half a frame, then nothing
    started = time.monotonic()
    wait_for(lambda: line.state("em-5") == "offline", 10, "em-5 offline")
    time.sleep(max(0.0, 5.0 - (time.monotonic() - started)))
    elapsed = time.monotonic() - started
    for d in DEVICES[:4]:
        got = line.data(d)[counts[d] :]
        assert len(got) >= 0.95 * elapsed / INTERVAL - 1, (d, len(got), elapsed / INTERVAL)
        assert all(m["points"]["barrel_temp_1"]["q"] == "good" for m in got), d
    last = line.data("em-5")[-1]["points"]["voltage_l1"]
    assert last["q"] == "bad" and "no response" in last["reason"], last
    line.fault("em-5", None)
    wait_for(lambda: line.data("em-5")[-1]["points"]["voltage_l1"]["q"] == "good", 15, "em-5 recovers")
    assert line.gw.stop() == 0
    line.check_no_gap("one of five devices hanging mid-response for 5 s")


def test_ordered_replay_delivers_each_device_in_seq_order(tmp_path: Path) -> None:
    ln = Line(tmp_path, replay="ordered", replay_rate=200)
    try:
        ln.wait_flowing()
        before = {d: ln.top(d) for d in DEVICES}
        replays = ln.replays()
        assert ln.broker.stop() == 0
        time.sleep(4)
        ln.restart_broker()
        wait_for(lambda: ln.replays() > replays, 30, "the backlog replayed")
        # the 4 s backlog (20 polls per device) and live data after it have arrived
        wait_for(lambda: all(ln.top(d) > before[d] + 25 for d in DEVICES), 15, "backlog and live data")
        assert ln.gw.stop() == 0
        ln.check_no_gap("broker stopped 4 s, ordered replay")
        for d in DEVICES:
            assert in_order_after_dedup([m["seq"] for m in ln.data(d)]), d
    finally:
        ln.close()


def test_gateway_killed_during_replay_loses_nothing_and_reuses_no_seq(tmp_path: Path) -> None:
    ln = Line(tmp_path, replay_rate=40)  # slow replay: the kill lands in the middle of it
    try:
        ln.wait_flowing()
        assert ln.broker.stop() == 0
        time.sleep(3)  # ~15 polls per device queued
        ln.restart_broker()
        wait_for(lambda: "replaying the backlog" in ln.gateway_log(), 20, "the replay to start")
        time.sleep(0.5)
        assert "backlog replayed" not in ln.gw.output()  # still replaying when killed
        ln.gw.kill()
        ln.start_gateway()
        wait_for(lambda: "backlog replayed" in ln.gws[-1].output(), 30, "the replay after the restart")
        tops = {d: ln.top(d) for d in DEVICES}
        wait_for(lambda: all(ln.top(d) > tops[d] + 3 for d in DEVICES), 20, "live data")
        assert ln.gw.stop() == 0
        ln.check_no_gap("gateway SIGKILLed during a replay")
        # every repeat of a seq is a resend of the same message, never new data under an old number
        for d in DEVICES:
            bodies: dict[int, set[bytes]] = {}
            with ln.sub.lock:
                for topic, payload, _ in ln.sub.messages:
                    if topic.endswith(f"/{d}/data") and payload:
                        bodies.setdefault(json.loads(payload)["seq"], set()).add(payload)
            assert all(len(b) == 1 for b in bodies.values()), d
    finally:
        ln.close()
