"""Sparkplug B under outages, with real processes: the broker stopped and the gateway killed with
SIGKILL while it is away, and a primary host going offline and back. Nothing polled in between
is lost: it arrives after the next births, flagged historical, with its original timestamps."""

from __future__ import annotations

import itertools
import json
import signal
import time
from pathlib import Path

from harness import EDGEGW, ROOT, Proc, free_port, start_mosquitto, wait_for, wait_port
from host import Host, Msg

GROUP, NODE = "plant-jinan", "gw-spb"
NS = f"spBv1.0/{GROUP}"
INTERVAL = 0.2


def config(tmp: Path, mqtt: int, sim: int, extra: str = "") -> str:
    return f"""
include: {ROOT}/configs/models/*.yaml
gateway: {{id: {NODE}, data_dir: {tmp}/data}}
devices:
  - id: em-1
    model: energy-meter-3ph
    protocol: modbus-tcp
    connection: {{host: 127.0.0.1, port: {sim}, unit_id: 1, timeout: 300ms}}
    poll: {{interval: {INTERVAL}s}}
northbound:
  sparkplug: {{host: 127.0.0.1, port: {mqtt}, group_id: {GROUP}, reconnect_min: 200ms, reconnect_max: 500ms{extra}}}
"""


def sample_times(host: Host) -> dict[int, bool]:
    """Each DDATA sample's time (its first metric's timestamp) -> whether it came historical."""
    out: dict[int, bool] = {}
    for m in host.of("DDATA", "em-1"):
        first = m.decoded["metrics"][0]
        out[first["timestamp"]] = out.get(first["timestamp"], False) or bool(first.get("is_historical"))
    return out


def test_kill_9_during_a_broker_outage_loses_nothing(tmp_path: Path) -> None:
    """DESIGN 5a: data from a broker outage and a crash goes out after the births, in order, with is_historical and its original timestamps; the next NBIRTH carries the next bdSeq."""
    mqtt, sim = free_port(), free_port()
    cfg = tmp_path / "c.yaml"
    cfg.write_text(config(tmp_path, mqtt, sim))
    broker = start_mosquitto(tmp_path, mqtt)
    simulator = Proc([*EDGEGW, "simulate", "-c", str(cfg)], tmp_path / "sim.log")
    wait_port(sim, 20)
    host = Host(mqtt)
    gw = Proc([*EDGEGW, "run", "-c", str(cfg)], tmp_path / "gw.log")
    try:
        wait_for(lambda: len(host.of("DDATA", "em-1")) >= 5, 20, "DDATA")
        bdseq_before = [p for p in host.of("NBIRTH")][-1].decoded["metrics"][0]["value"]
        broker.kill()
        outage_from = time.time() * 1000
        time.sleep(3.0)  # ~15 polls wait on disk
        gw.signal(signal.SIGKILL)
        gw.stop()
        outage_to = time.time() * 1000
        broker = start_mosquitto(tmp_path, mqtt)
        wait_for(lambda: host.client.is_connected(), 10, "host back on the broker")
        time.sleep(0.5)
        n_births = len(host.of("NBIRTH"))
        gw = Proc([*EDGEGW, "run", "-c", str(cfg)], tmp_path / "gw2.log")
        wait_for(lambda: len(host.of("NBIRTH")) > n_births, 20, "NBIRTH after the restart")
        birth = host.of("NBIRTH")[-1]
        wait_for(lambda: any(sample_times(host).values()), 10, "historical data after the restart")
        time.sleep(1.5)
        times = sample_times(host)
        during = sorted(t for t in times if outage_from - 1000 < t < outage_to)
        assert len(during) >= 10, during
        # every poll while the broker was away arrived, flagged historical
        gaps = [b - a for a, b in itertools.pairwise(during)]
        assert max(gaps) <= 3 * INTERVAL * 1000, gaps
        for t in during:
            if t > outage_from + 100:
                assert times[t], f"{t} not historical"
        # after the births, in order
        hist = [
            m
            for m in host.of("DDATA", "em-1")
            if m.at > birth.at and m.decoded["metrics"][0].get("is_historical")
        ]
        ts = [m.decoded["metrics"][0]["timestamp"] for m in hist]
        assert ts == sorted(ts)
        assert birth.decoded["metrics"][0]["value"] == (bdseq_before + 1) % 256
    finally:
        gw.stop()
        simulator.stop()
        host.stop()
        broker.kill()


def test_primary_host_state_gates_the_session(tmp_path: Path) -> None:
    """[tck-id-message-flow-edge-node-birth-publish-phid-wait-online]: with a primary host, no NBIRTH before its STATE says online; [tck-id-operational-behavior-edge-node-termination-host-offline]: an offline STATE not older than the online one ends the session (NDEATH), and the next session has the next bdSeq; an older offline STATE is ignored; data polled meanwhile arrives historical after the births."""
    mqtt, sim = free_port(), free_port()
    cfg = tmp_path / "c.yaml"
    cfg.write_text(config(tmp_path, mqtt, sim, ", primary_host_id: scada-1"))
    broker = start_mosquitto(tmp_path, mqtt)
    simulator = Proc([*EDGEGW, "simulate", "-c", str(cfg)], tmp_path / "sim.log")
    wait_port(sim, 20)
    host = Host(mqtt)
    gw = Proc([*EDGEGW, "run", "-c", str(cfg)], tmp_path / "gw.log")
    state = "spBv1.0/STATE/scada-1"

    def say(online: bool, ts: int) -> None:
        host.publish(state, json.dumps({"online": online, "timestamp": ts}).encode(), qos=1, retain=True)

    try:
        time.sleep(2.5)
        assert not host.of("NBIRTH") and not host.of("DDATA"), "born before the primary host is online"
        t1 = int(time.time() * 1000)
        say(True, t1)
        wait_for(lambda: host.of("NBIRTH"), 10, "NBIRTH once the host is online")
        first = host.of("NBIRTH")[0]
        # queued while waiting for the host: after the births, historical
        early = [m for m in host.of("DDATA", "em-1") if m.decoded["metrics"][0].get("is_historical")]
        wait_for(
            lambda: [m for m in host.of("DDATA", "em-1") if m.decoded["metrics"][0].get("is_historical")],
            5,
            "held data",
        )
        early = [m for m in host.of("DDATA", "em-1") if m.decoded["metrics"][0].get("is_historical")]
        assert all(m.decoded["metrics"][0]["timestamp"] < first.decoded["timestamp"] for m in early)
        # an offline STATE older than the online one: ignored
        say(False, t1 - 1000)
        time.sleep(1.0)
        assert not [m for m in host.of("NDEATH")]
        # a current one: NDEATH with this session's bdSeq, then nothing until online again
        say(False, t1 + 1)
        wait_for(lambda: host.of("NDEATH"), 10, "NDEATH on the host going offline")
        (death,) = host.of("NDEATH")
        assert death.decoded["metrics"][0]["value"] == first.decoded["metrics"][0]["value"]
        n = len(host.of("NBIRTH"))
        time.sleep(1.5)
        assert len(host.of("NBIRTH")) == n
        say(True, int(time.time() * 1000))
        wait_for(lambda: len(host.of("NBIRTH")) > n, 10, "NBIRTH after the host is back")
        again: Msg = host.of("NBIRTH")[-1]
        assert again.decoded["metrics"][0]["value"] == (first.decoded["metrics"][0]["value"] + 1) % 256
    finally:
        gw.stop()
        simulator.stop()
        host.stop()
        broker.kill()


def test_reload_adds_and_removes_devices_and_renews_the_session(tmp_path: Path) -> None:
    """DESIGN 5a with reloads: a device added by a reload gets its DBIRTH, a removed one its DDEATH; new Sparkplug settings end the session with NDEATH and start the next with the next bdSeq."""
    import subprocess

    mqtt, sim = free_port(), free_port()
    cfg = tmp_path / "c.yaml"
    second = f"""  - id: em-2
    model: energy-meter-3ph
    protocol: modbus-tcp
    connection: {{host: 127.0.0.1, port: {sim}, unit_id: 2, timeout: 300ms}}
    poll: {{interval: {INTERVAL}s}}
"""
    base = config(tmp_path, mqtt, sim)
    both = base.replace("northbound:", second + "northbound:")
    (tmp_path / "sim.yaml").write_text(both)
    cfg.write_text(base)
    broker = start_mosquitto(tmp_path, mqtt)
    simulator = Proc([*EDGEGW, "simulate", "-c", str(tmp_path / "sim.yaml")], tmp_path / "sim.log")
    wait_port(sim, 20)
    host = Host(mqtt)
    gw = Proc([*EDGEGW, "run", "-c", str(cfg)], tmp_path / "gw.log")

    def reload() -> None:
        done = subprocess.run(
            [*EDGEGW, "reload", "-c", str(cfg)], cwd=ROOT, capture_output=True, text=True, timeout=30
        )
        assert done.returncode == 0, done.stderr

    try:
        wait_for(lambda: len(host.of("DDATA", "em-1")) >= 3, 20, "DDATA")
        cfg.write_text(both)
        reload()
        wait_for(
            lambda: host.of("DBIRTH", "em-2") and host.of("DDATA", "em-2"), 10, "em-2 born and publishing"
        )
        assert host.of("DBIRTH", "em-2")[0].at < host.of("DDATA", "em-2")[0].at
        cfg.write_text(base)
        reload()
        wait_for(lambda: host.of("DDEATH", "em-2"), 10, "DDEATH of the removed device")
        first = host.of("NBIRTH")[-1]
        cfg.write_text(base.replace("reconnect_max: 500ms", "reconnect_max: 600ms"))
        reload()
        wait_for(lambda: host.of("NDEATH") and len(host.of("NBIRTH")) >= 2, 10, "a new session")
        death, again = host.of("NDEATH")[0], host.of("NBIRTH")[-1]
        bd = first.decoded["metrics"][0]["value"]
        assert death.decoded["metrics"][0]["value"] == bd
        assert again.decoded["metrics"][0]["value"] == (bd + 1) % 256
        wait_for(
            lambda: [m for m in host.of("DDATA", "em-1") if m.at > again.at], 10, "data in the new session"
        )
    finally:
        gw.stop()
        simulator.stop()
        host.stop()
        broker.kill()


def test_beside_the_json_sink(tmp_path: Path) -> None:
    """DESIGN 5a: Sparkplug beside the JSON contract on one durable queue: both get every poll, and a device going offline gets its DDEATH at once although the JSON sink's rows share the queue."""
    import httpx
    from harness import Subscriber

    mqtt, sim, control = free_port(), free_port(), free_port()
    cfg = tmp_path / "c.yaml"
    text = config(tmp_path, mqtt, sim).replace(
        "northbound:\n", f"northbound:\n  mqtt: {{host: 127.0.0.1, port: {mqtt}}}\n"
    )
    cfg.write_text(text)
    broker = start_mosquitto(tmp_path, mqtt)
    simulator = Proc(
        [*EDGEGW, "simulate", "-c", str(cfg), "--control", f"127.0.0.1:{control}"], tmp_path / "sim.log"
    )
    wait_port(control, 20)
    host = Host(mqtt)
    sub = Subscriber(mqtt, f"edgegw/{NODE}/#")
    gw = Proc([*EDGEGW, "run", "-c", str(cfg)], tmp_path / "gw.log")
    try:
        wait_for(
            lambda: len(host.of("DDATA", "em-1")) >= 5 and len(sub.data("em-1")) >= 5,
            20,
            "both sinks publishing",
        )
        httpx.put(
            f"http://127.0.0.1:{control}/devices/em-1/fault", json={"mode": "drop"}, timeout=10
        ).raise_for_status()
        t = time.monotonic()
        wait_for(lambda: host.of("DDEATH", "em-1"), 10, "DDEATH")
        assert host.of("DDEATH", "em-1")[0].at - t < 5
        wait_for(
            lambda: any(s["state"] == "offline" for s in sub.json("/em-1/status")), 10, "JSON status offline"
        )
    finally:
        gw.stop()
        simulator.stop()
        host.stop()
        sub.stop()
        broker.kill()
