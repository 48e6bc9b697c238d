"""Alarms run for real: `edgegw simulate` serves a Modbus TCP meter whose values the test holds,
`edgegw run` evaluates an alarm with `for` and hysteresis, publishes its events to Mosquitto
and serves it on the HTTP API. A spike shorter than `for` raises nothing; the alarm clears only
below `clear`; an operator acknowledges it with the token; a gateway restart while it is active
does not raise it a second time."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
from harness import EDGEGW, Proc, SimPlant, free_port, wait_for

TOKEN = "alarm-test-token-0123456789"


def test_alarm_for_hysteresis_ack_and_restart(tmp_path: Path) -> None:
    sim, mqtt, control, api = free_port(), free_port(), free_port(), free_port()
    config = f"""
gateway: {{id: gw-alarm, data_dir: {tmp_path}/data}}
models:
  meter:
    points:
      - {{id: current_l1, type: float32, unit: AMP, modbus: {{address: 40001}}}}
      - {{id: running, type: bool, modbus: {{address: "co:0"}}}}
    alarms:
      - id: overcurrent
        when: "current_l1 > 80"
        for: 600ms
        clear: "current_l1 < 75"
        severity: high
        message: {{en: Phase L1 over-current, zh: L1相过流}}
devices:
  - id: em-1
    model: meter
    protocol: modbus-tcp
    connection: {{host: 127.0.0.1, port: {sim}, unit_id: 1, timeout: 300ms}}
    poll: {{interval: 100ms}}
    alarms:
      - {{id: stopped, when: "not running", severity: low}}
northbound:
  mqtt: {{host: 127.0.0.1, port: {mqtt}}}
api: {{listen: "127.0.0.1:{api}", token: "{TOKEN}"}}
"""
    plant = SimPlant(tmp_path, config, "gw-alarm", ["em-1"], mqtt, control)
    base = f"http://127.0.0.1:{api}/api/v1"
    auth = {"Authorization": f"Bearer {TOKEN}"}

    def hold(value: float) -> None:
        plant.ctl("PUT", "/devices/em-1/points/current_l1", {"value": value})

    def events(alarm: str) -> list[dict[str, object]]:
        return [e for e in plant.sub.json("/em-1/alarm") if e["id"] == alarm]

    try:
        plant.ctl("PUT", "/devices/em-1/points/running", {"value": True})
        hold(50.0)
        wait_for(
            lambda: any(m["points"]["current_l1"]["v"] == 50.0 for m in plant.sub.data("em-1")), 10, "50 A"
        )
        # a spike shorter than `for`: nothing
        hold(90.0)
        time.sleep(0.3)
        hold(50.0)
        time.sleep(1.0)
        assert events("overcurrent") == []

        held_at = time.time() * 1000
        hold(90.0)
        active = wait_for(lambda: events("overcurrent"), 10, "overcurrent raised")
        assert len(active) == 1
        a = active[0]
        assert a["state"] == "active" and a["severity"] == "high" and a["acked"] is False
        assert a["message"] == {"en": "Phase L1 over-current", "zh": "L1相过流"}
        assert a["value"] == 90.0
        assert a["ts"] >= held_at + 600 - 150  # held for `for` (less one poll of slack)
        retained = wait_for(lambda: [x for x in plant.sub.json("/em-1/alarms") if x], 10, "retained alarms")
        assert [x["id"] for x in retained[-1]] == ["overcurrent"]
        listed = httpx.get(f"{base}/alarms", timeout=5).json()
        assert [(x["device"], x["id"]) for x in listed] == [("em-1", "overcurrent")]

        # hysteresis: below `when` but not below `clear` stays active
        hold(78.0)
        time.sleep(0.8)
        assert [e["state"] for e in events("overcurrent")] == ["active"]

        # acknowledge: the token is required
        assert httpx.post(f"{base}/alarms/em-1/overcurrent/ack", timeout=5).status_code == 401
        r = httpx.post(f"{base}/alarms/em-1/overcurrent/ack", headers=auth, timeout=5)
        assert r.status_code == 200, r.text
        assert r.json()["acked"] is True and r.json()["acked_at"] >= a["ts"]
        assert httpx.post(f"{base}/alarms/em-1/nope/ack", headers=auth, timeout=5).status_code == 404
        assert httpx.post(f"{base}/alarms/em-1/stopped/ack", headers=auth, timeout=5).status_code == 409
        wait_for(
            lambda: [e["state"] for e in events("overcurrent")] == ["active", "acked"], 10, "acked event"
        )

        # a restart while it is active: not raised again, still acknowledged
        hold(90.0)
        assert plant.gw.stop() == 0
        plant.gw = Proc([*EDGEGW, "run", "-c", str(plant.config)], tmp_path / "gw2.log")
        seen = len(plant.sub.data("em-1"))
        wait_for(lambda: len(plant.sub.data("em-1")) > seen + 10, 15, "polling again after the restart")
        assert [e["state"] for e in events("overcurrent")] == ["active", "acked"]
        listed = wait_for(lambda: httpx.get(f"{base}/alarms", timeout=5).json(), 10, "alarms listed")
        assert listed[0]["id"] == "overcurrent" and listed[0]["acked"] is True and listed[0]["ts"] == a["ts"]

        # cleared below `clear`, at once (clearing is not delayed)
        hold(70.0)
        wait_for(
            lambda: [e["state"] for e in events("overcurrent")] == ["active", "acked", "cleared"],
            10,
            "cleared",
        )
        wait_for(lambda: plant.sub.json("/em-1/alarms")[-1] == [], 10, "the retained set empty")
        assert httpx.get(f"{base}/alarms", timeout=5).json() == []
        metrics = httpx.get(f"http://127.0.0.1:{api}/metrics", timeout=5).text
        assert "edgegw_alarms_active 0.0" in metrics and "edgegw_alarms_cleared_total 1.0" in metrics

        # the device's own alarm: a coil going false
        plant.ctl("PUT", "/devices/em-1/points/running", {"value": False})
        stopped = wait_for(lambda: events("stopped"), 10, "stopped raised")
        assert stopped[0]["severity"] == "low" and stopped[0]["message"] is None
    finally:
        plant.stop()
