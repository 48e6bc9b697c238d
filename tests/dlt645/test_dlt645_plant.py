"""Two DL/T 645 meters on one simulated RS-485 bus (a socat pty pair), read for real: `edgegw
simulate` serves both addresses on one pty, `edgegw run` reads them and publishes to Mosquitto.
Every built-in format decodes exactly (held values), an abnormal reply makes only its point bad
with the meaning of its ERR bits, a bad checksum makes the points bad with that reason, and a
silent meter goes offline while the other keeps its good values."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from harness import SimPlant, free_port, wait_for

HELD: dict[str, Any] = {
    "energy_combined": -1234.56,
    "energy_forward": 123456.78,
    "energy_reverse": 0.01,
    "voltage_a": 231.4,
    "current_a": -12.345,
    "power_total": -3.1416,
    "reactive_total": 1.2345,
    "apparent_total": 79.9999,
    "pf_total": -0.987,
    "frequency": 49.98,
    "date": "2026-11-29",
    "time": "12:34:56",
}
DIS = {
    "energy_combined": "00000000",
    "energy_forward": "00010000",
    "energy_reverse": "00020000",
    "voltage_a": "02010100",
    "current_a": "02020100",
    "power_total": "02030000",
    "reactive_total": "02040000",
    "apparent_total": "02050000",
    "pf_total": "02060000",
    "frequency": "02800002",
    "date": "04000101",
    "time": "04000102",
}


def test_two_meters_on_one_bus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEGW_DLT645_TURNAROUND", "0.002")  # the simulated meters answer quickly
    mqtt_port = free_port()
    points = "\n".join(
        f"      - {{id: {pid}, type: {'string' if pid in ('date', 'time') else 'float64'}, "
        f'dlt645: {{di: "{di}"}}}}'
        for pid, di in DIS.items()
    )
    line = f"port: {tmp_path}/tty/meters, baudrate: 115200, parity: N, timeout: 300ms"
    config = f"""
gateway: {{id: gw-d6, data_dir: {tmp_path}/data}}
devices:
  - id: meter-a
    protocol: dlt645
    connection: {{{line}, address: "000000001234"}}
    poll: {{interval: 200ms, backoff_max: 500ms}}
    points:
{points}
  - id: meter-b
    protocol: dlt645
    connection: {{{line}, address: "201900000042"}}
    poll: {{interval: 200ms, backoff_max: 500ms}}
    points:
      - {{id: energy_forward, type: float64, unit: KWH, dlt645: {{di: "00010000"}}}}
      - {{id: voltage_a, type: float64, unit: VLT, dlt645: {{di: "02010100"}}}}
northbound:
  mqtt: {{host: 127.0.0.1, port: {mqtt_port}}}
"""
    plant = SimPlant(tmp_path, config, "gw-d6", ["meter-a", "meter-b"], mqtt_port, free_port())
    try:
        for pid, v in HELD.items():
            plant.ctl("PUT", f"/devices/meter-a/points/{pid}", {"value": v})
        seen = len(plant.sub.data("meter-a"))

        def exact() -> dict[str, Any] | None:
            for m in plant.sub.data("meter-a")[seen:]:
                if all(m["points"][k]["v"] == v for k, v in HELD.items()):
                    return m["points"]  # type: ignore[no-any-return]
            return None

        pts = wait_for(exact, 10, "every held value read back exactly")
        assert all(p["q"] == "good" for p in pts.values())

        # an abnormal reply to one DI: only that point bad, with the ERR bits' meaning
        plant.ctl("PUT", "/devices/meter-a/fault", {"mode": "error:frequency", "code": 2})
        seen = len(plant.sub.data("meter-a"))

        def refused() -> dict[str, Any] | None:
            for m in plant.sub.data("meter-a")[seen:]:
                if m["points"]["frequency"]["q"] == "bad":
                    return m["points"]  # type: ignore[no-any-return]
            return None

        pts = wait_for(refused, 10, "frequency refused")
        assert pts["frequency"]["reason"] == "meter answered ERR 0x02: no requested data (DI 02800002)"
        assert all(p["q"] == "good" for k, p in pts.items() if k != "frequency")

        # a damaged reply: the points bad with the checksum named, the meter still online
        plant.ctl("PUT", "/devices/meter-a/fault", {"mode": "checksum"})
        seen = len(plant.sub.data("meter-a"))
        pts = wait_for(
            lambda: next(
                (
                    m["points"]
                    for m in plant.sub.data("meter-a")[seen:]
                    if m["points"]["voltage_a"]["q"] == "bad"
                ),
                None,
            ),
            10,
            "checksum errors",
        )
        reason = pts["voltage_a"]["reason"]
        assert reason.startswith("checksum error (got ") and reason.endswith(
            "in the reply from meter 000000001234 (DI 02010100)"
        ), reason
        assert plant.sub.json("/meter-a/status")[-1]["state"] == "online"

        # line noise (with a stray 0x68) before every reply: skipped, the values good
        plant.ctl("PUT", "/devices/meter-a/fault", {"mode": "garbage"})
        seen = len(plant.sub.data("meter-a"))
        wait_for(lambda: len(plant.good("meter-a", seen)) >= 2, 10, "good values through the noise")
        plant.ctl("DELETE", "/devices/meter-a/fault")

        # meter-b falls silent: offline with the reason; meter-a keeps being read
        plant.ctl("PUT", "/devices/meter-b/fault", {"mode": "silent"})
        wait_for(
            lambda: any(s["state"] == "offline" for s in plant.sub.json("/meter-b/status")),
            10,
            "meter-b offline",
        )
        offline = next(s for s in plant.sub.json("/meter-b/status") if s["state"] == "offline")
        assert offline["reason"] == "no response from meter 201900000042 within 0.3s"
        seen = len(plant.sub.data("meter-a"))
        wait_for(lambda: len(plant.good("meter-a", seen)) >= 3, 10, "meter-a good while meter-b is silent")
        assert plant.sub.json("/meter-a/status")[-1]["state"] == "online"

        # meter-b answers again: back online by itself
        plant.ctl("DELETE", "/devices/meter-b/fault")
        seen = len(plant.sub.data("meter-b"))
        wait_for(lambda: len(plant.good("meter-b", seen)) >= 1, 10, "meter-b back")

        # the adapter is pulled: both meters offline with the port named; plugged back, both read
        plant.ctl("DELETE", "/devices/meter-a/port")
        for d in ("meter-a", "meter-b"):
            wait_for(
                lambda d=d: any(
                    s["state"] == "offline" and "not found" in s.get("reason", "")
                    for s in plant.sub.json(f"/{d}/status")
                ),
                10,
                f"{d} offline without its port",
            )
        plant.ctl("PUT", "/devices/meter-a/port")
        seen_a, seen_b = len(plant.sub.data("meter-a")), len(plant.sub.data("meter-b"))
        wait_for(lambda: len(plant.good("meter-a", seen_a)) >= 1, 10, "meter-a back on the port")
        wait_for(lambda: len(plant.good("meter-b", seen_b)) >= 1, 10, "meter-b back on the port")
    finally:
        plant.stop()
