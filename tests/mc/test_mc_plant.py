"""MELSEC PLCs run for real: `edgegw simulate` serves two PLCs (a Q CPU in binary, an iQ-F in
ASCII) over TCP, `edgegw run` reads them and publishes to Mosquitto. Every device kind and type
arrives exactly as held on the simulator; a write through the HTTP API lands in the PLC's
memory; a refused range makes only its points bad (the device stays online); a restart makes
the PLC offline with the reason, then good again without restarting the gateway."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from harness import SimPlant, free_port, wait_for

TOKEN = "mc-test-token-0123456789"

EXACT: dict[str, Any] = {
    "temp": -3,
    "word": 65535,
    "counter": -2_000_000_000,
    "dword": 4_000_000_000,
    "real": 63.25,
    "big": 2**53 + 1,
    "lreal": 123456.789012345,
    "flag": True,
    "low": 200,
    "name": "Mould A",
    "run": True,
    "latch": True,
    "alarm": True,
    "link": True,
    "always": True,
    "input": True,
    "lamp": True,
    "lw": -32768,
    "file": -0.5,
    "zfile": 4242,
    "special": 7,
    "timer": 150,
    "count": 9,
}


def test_mc_plcs_through_the_gateway(tmp_path: Path) -> None:
    q_port, f_port, mqtt_port, api_port = free_port(), free_port(), free_port(), free_port()
    config = f"""
gateway: {{id: gw-mcp, data_dir: {tmp_path}/data}}
devices:
  - id: q-01
    protocol: mc
    connection: {{host: 127.0.0.1, port: {q_port}, plc: Q, timeout: 500ms}}
    poll: {{interval: 200ms, backoff_max: 1s}}
    points:
      - {{id: temp,    type: int16,   mc: {{address: D100}}}}
      - {{id: word,    type: uint16,  mc: {{address: D101}}}}
      - {{id: counter, type: int32,   mc: {{address: D200}}}}
      - {{id: dword,   type: uint32,  mc: {{address: D202}}}}
      - {{id: real,    type: float32, mc: {{address: D204}}}}
      - {{id: big,     type: uint64,  mc: {{address: D210}}}}
      - {{id: lreal,   type: float64, mc: {{address: D218}}}}
      - {{id: flag,    type: bool,    mc: {{address: D300.3}}}}
      - {{id: low,     type: uint8,   mc: {{address: D301}}}}
      - {{id: name,    type: string,  length: 7, mc: {{address: D400}}}}
      - {{id: run,     type: bool,    mc: {{address: M10}}}}
      - {{id: latch,   type: bool,    mc: {{address: L5}}}}
      - {{id: alarm,   type: bool,    mc: {{address: F3}}}}
      - {{id: link,    type: bool,    mc: {{address: B1A}}}}
      - {{id: always,  type: bool,    mc: {{address: SM400}}}}
      - {{id: input,   type: bool,    mc: {{address: X1F}}}}
      - {{id: lamp,    type: bool,    mc: {{address: Y20}}}}
      - {{id: lw,      type: int16,   mc: {{address: W1A}}}}
      - {{id: file,    type: float32, mc: {{address: R10}}}}
      - {{id: zfile,   type: uint16,  mc: {{address: ZR1000}}}}
      - {{id: special, type: uint16,  mc: {{address: SD203}}}}
      - {{id: timer,   type: uint16,  mc: {{address: TN5}}}}
      - {{id: count,   type: uint16,  mc: {{address: CN3}}}}
  - id: fx5-01
    protocol: mc
    connection: {{host: 127.0.0.1, port: {f_port}, plc: iQ-F, code: ascii, timeout: 500ms}}
    poll: {{interval: 200ms, backoff_max: 1s}}
    points:
      - {{id: x17,      type: bool,  mc: {{address: X17}}}}
      - {{id: speed_sp, type: int16, mc: {{address: D500}}, access: rw, scale: 0.1}}
      - {{id: start,    type: bool,  mc: {{address: M100}}, access: rw}}
northbound:
  mqtt: {{host: 127.0.0.1, port: {mqtt_port}}}
api: {{listen: "127.0.0.1:{api_port}", token: "{TOKEN}"}}
"""
    plant = SimPlant(tmp_path, config, "gw-mcp", ["q-01", "fx5-01"], mqtt_port, free_port())
    try:
        for k, v in EXACT.items():
            plant.ctl("PUT", f"/devices/q-01/points/{k}", {"value": v})
        seen = len(plant.sub.data("q-01"))

        def exact() -> dict[str, Any] | None:
            for m in plant.sub.data("q-01")[seen:]:
                got = {k: p["v"] for k, p in m["points"].items()}
                if got == EXACT:
                    return got
            return None

        wait_for(exact, 10, "every device kind and type exactly as held")

        # a write through the API lands in the iQ-F's memory (engineering 12.3 at scale 0.1: 123)
        for point, value in (("speed_sp", 12.3), ("start", True)):
            r = httpx.put(
                f"http://127.0.0.1:{api_port}/api/v1/devices/fx5-01/points/{point}",
                json={"value": value},
                headers={"Authorization": f"Bearer {TOKEN}"},
                timeout=10,
            )
            assert r.status_code == 200, r.text
        held = plant.ctl("GET", "/devices/fx5-01/values")
        assert abs(held["speed_sp"] - 12.3) < 1e-9 and held["start"] is True

        # device numbers from 250 up refused: those points bad with the end code, the rest good
        plant.ctl("PUT", "/devices/q-01/fault", {"mode": "refuse", "code": 250})
        seen = len(plant.sub.data("q-01"))

        def refused() -> dict[str, Any] | None:
            for m in plant.sub.data("q-01")[seen:]:
                if m["points"]["name"]["q"] == "bad":
                    return dict(m["points"])
            return None

        pts = wait_for(refused, 10, "the refused points bad")
        for k in ("flag", "low", "name", "always", "zfile"):
            assert pts[k]["q"] == "bad" and pts[k]["reason"] == "C056: request exceeds the maximum address"
        for k in ("temp", "counter", "run", "input", "lamp", "lw", "file", "timer"):
            assert pts[k]["q"] != "bad", (k, pts[k])
        assert plant.sub.json("/q-01/status")[-1]["state"] == "online"
        plant.ctl("DELETE", "/devices/q-01/fault")

        # the PLC restarts: offline with the reason, then back by itself; the other stays online
        plant.ctl("PUT", "/devices/q-01/fault", {"mode": "restart", "delay": 1.5})
        wait_for(
            lambda: any(s["state"] == "offline" for s in plant.sub.json("/q-01/status")),
            10,
            "offline after the PLC went away",
        )
        offline = next(s for s in plant.sub.json("/q-01/status") if s["state"] == "offline")
        assert "127.0.0.1" in offline["reason"]
        seen = len(plant.sub.data("q-01"))
        wait_for(lambda: len(plant.good("q-01", seen)) > 1, 15, "good values after the restart")
        assert plant.sub.json("/q-01/status")[-1]["state"] == "online"
        states = [s["state"] for s in plant.sub.json("/fx5-01/status")]
        assert "offline" not in states and states[-1] == "online", states
    finally:
        plant.stop()
