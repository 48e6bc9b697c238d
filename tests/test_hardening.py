"""The running gateway under real faults: `data_dir` on a tmpfs that fills up while the broker
is away, a device whose values a sink cannot take, a reload that changes the MQTT settings,
write requests that are not what they should be. Nothing is lost, no `seq` is reused, no task
dies, every request gets an answer."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
from pathlib import Path

import httpx
import paho.mqtt.client as paho
import pytest
from harness import (
    EDGEGW,
    ROOT,
    Proc,
    Subscriber,
    can_mount,
    free_port,
    start_mosquitto,
    start_victoria_metrics,
    wait_for,
    wait_port,
)
from paho.mqtt.enums import CallbackAPIVersion


def _config(data_dir: Path, sim_port: int, mqtt_port: int, api_port: int, extra: str = "") -> str:
    return f"""
include: {ROOT}/configs/models/*.yaml
gateway: {{id: gw-hard, data_dir: {data_dir}}}
devices:
  - id: im-1
    model: injection-molder
    protocol: modbus-tcp
    connection: {{host: 127.0.0.1, port: {sim_port}, unit_id: 1, timeout: 500ms}}
    poll: {{interval: 100ms}}
northbound:
  mqtt:
    host: 127.0.0.1
    port: {mqtt_port}
    reconnect_min: 200ms
    reconnect_max: 500ms
    commands: true
    buffer: {{max_bytes: 64MiB}}
{extra}
api: {{listen: 127.0.0.1:{api_port}, token: t0ken}}
"""


def _ready(api_port: int) -> tuple[int, dict]:  # type: ignore[type-arg]
    r = httpx.get(f"http://127.0.0.1:{api_port}/readyz", timeout=5)
    return r.status_code, r.json()


def _by_seq(sub: Subscriber, device: str) -> dict[int, list[bytes]]:
    out: dict[int, list[bytes]] = {}
    with sub.lock:
        for topic, payload, _ in sub.messages:
            if topic.endswith(f"/{device}/data") and payload:
                out.setdefault(json.loads(payload)["seq"], []).append(payload)
    return out


@pytest.mark.skipif(not can_mount(), reason="mounting a tmpfs needs root")
def test_full_disk_while_the_broker_is_away_loses_nothing_and_resumes(tmp_path: Path, tmpfs) -> None:  # type: ignore[no-untyped-def]
    sim_port, mqtt_port, api_port = free_port(), free_port(), free_port()
    cfg = tmp_path / "gw.yaml"
    cfg.write_text(_config(tmpfs.path / "data", sim_port, mqtt_port, api_port))
    sim = Proc([*EDGEGW, "simulate", "-c", str(cfg)], tmp_path / "sim.log")
    wait_port(sim_port, 20)
    gw = Proc([*EDGEGW, "run", "-c", str(cfg)], tmp_path / "gw.log")
    broker = None
    try:
        wait_port(api_port, 20)
        wait_for(lambda: "MQTT broker not connected" in str(_ready(api_port)[1]), 10, "broker missing")
        # the broker is away: data goes to disk, then the disk fills up
        wait_for(
            lambda: (
                httpx.get(f"http://127.0.0.1:{api_port}/api/v1/status", timeout=5).json()["queues"]["mqtt"][
                    "messages"
                ]
                > 20
            ),
            20,
            "a backlog on disk",
        )
        tmpfs.fill()
        wait_for(
            lambda: (s := _ready(api_port))[0] == 503 and "queue file cannot be written" in str(s[1]) and s,
            20,
            "readyz to report the failing queue",
        )
        metrics = httpx.get(f"http://127.0.0.1:{api_port}/metrics", timeout=5).text
        failures = [ln for ln in metrics.splitlines() if ln.startswith("edgegw_queue_commit_failures_total ")]
        assert failures and float(failures[0].split()[1]) >= 1
        assert gw.p.poll() is None  # still running
        # space and broker return: everything kept is written and published, no restart
        tmpfs.free()
        # the gateway is held while the broker starts, so the subscriber is there before the
        # backlog: a non-persistent broker drops what nobody has subscribed to yet
        os.kill(gw.pid, signal.SIGSTOP)
        try:
            broker = start_mosquitto(tmp_path, mqtt_port)
            sub = Subscriber(mqtt_port, "edgegw/gw-hard/#")
        finally:
            os.kill(gw.pid, signal.SIGCONT)
        wait_for(lambda: _ready(api_port)[0] == 200, 30, "ready again")
        wait_for(lambda: len(_by_seq(sub, "im-1")) > 60, 30, "the backlog and live data")
        seqs = _by_seq(sub, "im-1")

        def settled() -> bool:
            st = httpx.get(f"http://127.0.0.1:{api_port}/api/v1/status", timeout=5).json()
            return st["queues"]["mqtt"]["messages"] < 5

        wait_for(settled, 30, "the backlog drained")
        seqs = _by_seq(sub, "im-1")
        # one content per seq: repeats are at-least-once resends of the same message
        assert all(len(set(bodies)) == 1 for bodies in seqs.values())
        lo, hi = min(seqs), max(seqs)
        assert lo == 1
        missing = [s for s in range(lo, hi + 1) if s not in seqs]
        assert not missing, f"{len(missing)} seq missing, first {missing[:5]}"
        sub.stop()
        gw_log = gw.output()
        assert "queue commit failed" in gw_log and "queue writes resumed" in gw_log
        assert "Traceback" not in gw_log
    finally:
        gw.stop()
        sim.stop()
        if broker is not None:
            broker.stop()


class ArrayServer:
    """A plain asyncua server with a scalar and an array variable (an OPC UA array point is
    not a scalar a line-protocol field can hold)."""

    def __init__(self, port: int):
        self.port = port
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()
        assert self.ready.wait(20)

    def _run(self) -> None:
        from asyncua import Server, ua

        async def start() -> None:
            s = Server()
            await s.init()
            s.set_endpoint(f"opc.tcp://127.0.0.1:{self.port}")
            idx = await s.register_namespace("urn:test:arrays")
            obj = await s.nodes.objects.add_object(idx, "Line")
            await obj.add_variable(ua.NodeId("Speed", idx), "Speed", 12.5, ua.VariantType.Double)
            await obj.add_variable(
                ua.NodeId("Profile", idx), "Profile", [1.0, 2.0, 3.0], ua.VariantType.Double
            )
            await s.start()
            self.server = s

        self.loop.run_until_complete(start())
        self.ready.set()
        self.loop.run_forever()

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)


def test_a_value_a_sink_cannot_take_does_not_stop_the_device(tmp_path: Path) -> None:
    opc_port, mqtt_port, vm_port = free_port(), free_port(), free_port()
    server = ArrayServer(opc_port)
    vm = start_victoria_metrics(tmp_path, vm_port)
    broker = start_mosquitto(tmp_path, mqtt_port)
    sub = Subscriber(mqtt_port, "edgegw/gw-arr/#")
    cfg = tmp_path / "gw.yaml"
    cfg.write_text(f"""
gateway: {{id: gw-arr, data_dir: {tmp_path}/data}}
devices:
  - id: line-1
    protocol: opcua
    connection: {{endpoint: "opc.tcp://127.0.0.1:{opc_port}", timeout: 2s}}
    mode: poll
    poll: {{interval: 200ms}}
    points:
      - {{id: speed, type: float64, opcua: {{node: "ns=2;s=Speed"}}}}
      - {{id: profile, type: float64, opcua: {{node: "ns=2;s=Profile"}}}}
northbound:
  mqtt: {{host: 127.0.0.1, port: {mqtt_port}}}
  influxdb: {{url: "http://127.0.0.1:{vm_port}", org: acme, bucket: plant, flush_interval: 200ms}}
""")
    gw = Proc([*EDGEGW, "run", "-c", str(cfg)], tmp_path / "gw.log")
    try:
        wait_for(lambda: len(sub.data("line-1")) > 15, 30, "samples keep coming")
        status = sub.json("/line-1/status")[-1]
        assert status["state"] == "online"

        def stored() -> list[dict]:  # type: ignore[type-arg]
            r = httpx.get(
                f"http://127.0.0.1:{vm_port}/api/v1/export",
                params={"match[]": '{__name__=~"line-1_speed"}'},
                timeout=10,
            )
            return [json.loads(x) for x in r.text.splitlines() if x.strip()]

        wait_for(lambda: stored() and len(stored()[0]["values"]) > 3, 20, "the scalar stored")
        assert stored()[0]["values"][-1] == 12.5
        out = gw.output()
        assert "task failed" not in out and "Traceback" not in out
    finally:
        gw.stop()
        sub.stop()
        broker.stop()
        vm.stop()
        server.stop()


def test_reload_of_mqtt_settings_keeps_write_back_and_odd_requests_get_answers(tmp_path: Path) -> None:
    sim_port, mqtt_port, api_port = free_port(), free_port(), free_port()
    cfg = tmp_path / "gw.yaml"
    cfg.write_text(_config(tmp_path / "data", sim_port, mqtt_port, api_port))
    broker = start_mosquitto(tmp_path, mqtt_port)
    sim = Proc([*EDGEGW, "simulate", "-c", str(cfg)], tmp_path / "sim.log")
    wait_port(sim_port, 20)
    gw = Proc([*EDGEGW, "run", "-c", str(cfg)], tmp_path / "gw.log")
    sub = Subscriber(mqtt_port, "edgegw/gw-hard/#")
    pub = paho.Client(CallbackAPIVersion.VERSION2)
    pub.connect("127.0.0.1", mqtt_port)
    pub.loop_start()
    try:
        wait_for(lambda: len(sub.data("im-1")) > 3, 20, "data")
        # MQTT settings change: the sink is replaced; write-back must still answer
        cfg.write_text(cfg.read_text().replace("reconnect_max: 500ms", "reconnect_max: 1s"))
        gw.signal(1)  # SIGHUP
        wait_for(lambda: "config reloaded" in gw.output(), 20, "the reload")
        wait_for(lambda: len(sub.data("im-1")) > 10, 20, "data after the reload")
        topic = "edgegw/gw-hard/im-1/set"
        requests = {
            "ok": json.dumps({"id": "ok", "points": {"barrel_setpoint_1": 215.5}}),
            "huge": '{"id": "huge", "points": {"barrel_setpoint_1": 1' + "0" * 400 + "}}",
            "deep": '{"id": "deep", "points": {"barrel_setpoint_1": ' + "[" * 5000 + "]" * 5000 + "}}",
            "nan": '{"id": "nan", "points": {"barrel_setpoint_1": NaN}}',
            "obj": '{"id": "obj", "points": {"barrel_setpoint_1": {"a": 1}}}',
        }
        for body in requests.values():
            pub.publish(topic, body, qos=1).wait_for_publish(5)
        pub.publish(topic, "[" * 100_000, qos=1).wait_for_publish(5)  # no id can be read

        def results() -> dict[object, dict]:  # type: ignore[type-arg]
            return {r.get("id"): r for r in sub.json("/im-1/set/result")}

        wait_for(lambda: len(sub.json("/im-1/set/result")) >= 6, 20, "an answer to every request")
        got = results()
        assert got["ok"]["ok"] is True
        for rid in ("huge", "nan", "obj"):
            assert got[rid]["ok"] is False and got[rid]["error"], got[rid]
        # nested too deeply to read even its id: answered without one
        unnamed = [r for r in sub.json("/im-1/set/result") if r.get("id") is None]
        assert len(unnamed) == 2 and all(not r["ok"] and "bad request" in r["error"] for r in unnamed)
        out = gw.output()
        assert "Traceback" not in out and "task failed" not in out
    finally:
        pub.loop_stop()
        sub.stop()
        gw.stop()
        sim.stop()
        broker.stop()
