"""Reload (SIGHUP / `edgegw reload`): changed devices restart, the others are untouched, nothing
queued is lost, and a config with errors is refused while the running one stays."""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import time
from pathlib import Path

from harness import (
    EDGEGW,
    ROOT,
    Proc,
    Subscriber,
    free_port,
    seq_report,
    start_mosquitto,
    wait_for,
    wait_port,
)

PREFIX = "edgegw/gw-reload"


def device(name: str, port: int, unit: int, interval: str = "200ms") -> str:
    return f"""
  - id: {name}
    model: injection-molder
    protocol: modbus-tcp
    connection: {{host: 127.0.0.1, port: {port}, unit_id: {unit}, timeout: 500ms}}
    poll: {{interval: {interval}}}"""


def config(tmp: Path, mqtt_port: int, devices: str) -> str:
    return f"""
include: {ROOT}/configs/models/*.yaml
gateway: {{id: gw-reload, data_dir: {tmp}/data}}
devices:{devices}
northbound:
  mqtt: {{host: 127.0.0.1, port: {mqtt_port}}}
"""


def reload_cli(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*EDGEGW, "reload", "-c", str(path)], cwd=ROOT, capture_output=True, text=True, timeout=30
    )


def test_reload_restarts_only_what_changed_and_refuses_a_bad_config(tmp_path: Path) -> None:
    mqtt_port, sim_port = free_port(), free_port()
    everything = tmp_path / "sim.yaml"
    everything.write_text(
        config(tmp_path, mqtt_port, "".join(device(n, sim_port, u) for u, n in enumerate("abcd", 1)))
    )
    cfg = tmp_path / "gw.yaml"
    cfg.write_text(
        config(
            tmp_path,
            mqtt_port,
            device("a", sim_port, 1) + device("b", sim_port, 2) + device("c", sim_port, 3),
        )
    )
    assert reload_cli(cfg).returncode == 1  # nothing running yet: said plainly
    broker = start_mosquitto(tmp_path, mqtt_port)
    sub = Subscriber(mqtt_port, f"{PREFIX}/#")
    sim = Proc([*EDGEGW, "simulate", "-c", str(everything)], tmp_path / "sim.log")
    wait_port(sim_port, 15)
    gw = Proc([*EDGEGW, "run", "-c", str(cfg)], tmp_path / "gw.log")
    try:
        wait_for(lambda: all(len(sub.data(d)) >= 5 for d in "abc"), 20, "data from a, b, c")

        # v2: c removed, d added, b polled at 500 ms, a unchanged
        cfg.write_text(
            config(
                tmp_path,
                mqtt_port,
                device("a", sim_port, 1) + device("b", sim_port, 2, "500ms") + device("d", sim_port, 4),
            )
        )
        done = reload_cli(cfg)
        assert done.returncode == 0, done.stderr
        assert "reload requested" in done.stdout
        wait_for(lambda: "config reloaded" in gw.output(), 10, "reload applied")
        line = next(ln for ln in gw.output().splitlines() if "config reloaded" in ln)
        assert (
            "added=d" in line and "removed=c" in line and "restarted=b" in line and "untouched=1" in line
        ), line
        reloaded_wall_ms = time.time() * 1000
        wait_for(lambda: len(sub.data("d")) >= 3, 10, "data from the added device")
        statuses = [json.loads(p) for t, p, _ in sub.messages if t == f"{PREFIX}/c/status"]
        assert (
            statuses[-1]["state"] == "offline" and statuses[-1]["reason"] == "removed from the configuration"
        )
        assert [p for t, p, r in sub.messages if t == f"{PREFIX}/c/meta"][-1] == b""  # retained meta cleared
        # b's polls by their own time (`ts`), not by when the broker handed them over: a busy
        # machine may deliver a backlog in one burst
        time.sleep(3)
        lo, hi = reloaded_wall_ms + 500, time.time() * 1000 - 500
        polls = [m["ts"] for m in sub.data("b") if lo <= m["ts"] <= hi]
        b_rate = len(polls) / ((hi - lo) / 1000)
        assert 1.5 <= b_rate <= 2.6, b_rate  # 500 ms now (1 s before the reload)

        # the untouched device never paused: no gap in seq, no silence longer than a few polls
        a_times = [
            at for (t, _, _), at in zip(sub.messages, sub.arrived, strict=True) if t == f"{PREFIX}/a/data"
        ]
        assert max(b2 - b1 for b1, b2 in itertools.pairwise(a_times)) < 0.8

        # a config with errors: the CLI refuses it with FILE:LINE, and a SIGHUP leaves the gateway as is
        cfg.write_text(
            config(tmp_path, mqtt_port, device("a", sim_port, 1) + device("b", sim_port, 2, "fast"))
        )
        bad = reload_cli(cfg)
        assert bad.returncode == 2
        assert f"{cfg}:" in bad.stderr and "devices[1].poll.interval" in bad.stderr, bad.stderr
        gw.signal(signal.SIGHUP)
        wait_for(lambda: "reload refused" in gw.output(), 10, "reload refused")
        a_count = len(sub.data("a"))
        d_count = len(sub.data("d"))
        time.sleep(1)
        assert len(sub.data("a")) >= a_count + 3 and len(sub.data("d")) >= d_count + 3  # still the v2 config
        assert gw.stop() == 0
        assert "Traceback" not in gw.output()
        for d in "abcd":
            missing, dups = seq_report(sub.data(d))
            assert missing == [] and dups == 0, (d, missing, dups)
        assert min(m["seq"] for m in sub.data("b")) == 1  # b's seq continued across its restart
    finally:
        gw.kill()
        sim.kill()
        sub.stop()
        broker.kill()


def test_reload_with_mqtt_settings_that_cannot_be_used_keeps_the_running_sink(tmp_path: Path) -> None:
    """A reload whose broker settings fail only when the client is made (a CA file that is not
    there): the running MQTT sink stays connected and nothing is lost."""
    mqtt_port, sim_port = free_port(), free_port()
    cfg = tmp_path / "gw.yaml"
    cfg.write_text(config(tmp_path, mqtt_port, device("a", sim_port, 1)))
    broker = start_mosquitto(tmp_path, mqtt_port)
    sub = Subscriber(mqtt_port, f"{PREFIX}/#")
    sim = Proc([*EDGEGW, "simulate", "-c", str(cfg)], tmp_path / "sim.log")
    wait_port(sim_port, 15)
    gw = Proc([*EDGEGW, "run", "-c", str(cfg)], tmp_path / "gw.log")
    try:
        wait_for(lambda: len(sub.data("a")) >= 3, 20, "data from a")
        broken = config(tmp_path, mqtt_port, device("a", sim_port, 1)).replace(
            f"port: {mqtt_port}}}", f"port: {mqtt_port}, tls: {{ca: {tmp_path}/no-such-ca.pem}}}}"
        )
        assert "no-such-ca.pem" in broken
        cfg.write_text(broken)
        gw.signal(signal.SIGHUP)
        wait_for(lambda: "cannot be used; the running sink stays" in gw.output(), 10, "the refusal logged")
        count = len(sub.data("a"))
        wait_for(lambda: len(sub.data("a")) >= count + 5, 10, "data still flowing")
        assert gw.stop() == 0
        assert "Traceback" not in gw.output()
        missing, dups = seq_report(sub.data("a"))
        assert missing == [] and dups == 0
    finally:
        gw.kill()
        sim.kill()
        sub.stop()
        broker.kill()
