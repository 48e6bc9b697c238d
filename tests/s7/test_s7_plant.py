"""An S7 machine run for real: `edgegw simulate` serves the CPU on python-snap7's server,
`edgegw run` reads it and publishes to Mosquitto. The CPU restarts (offline with the reason,
then good values again without restarting the gateway), one DB is refused (its points bad, the
rest good), and a write through the HTTP API lands in the CPU's memory."""

from __future__ import annotations

from pathlib import Path

import httpx
from harness import SimPlant, free_port, wait_for

TOKEN = "s7-test-token-0123456789"


def test_s7_machine_through_the_gateway(tmp_path: Path) -> None:
    s7_port, mqtt_port, api_port = free_port(), free_port(), free_port()
    config = f"""
gateway: {{id: gw-s7p, data_dir: {tmp_path}/data}}
devices:
  - id: press-07
    protocol: s7
    connection: {{host: 127.0.0.1, port: {s7_port}, plc: s7-1200, timeout: 500ms}}
    poll: {{interval: 200ms, backoff_max: 1s}}
    points:
      - {{id: running,  type: bool,    s7: {{address: DB10.DBX0.0}}}}
      - {{id: oil_temp, type: float32, s7: {{address: DB10.DBD4}}, unit: CEL, range: [20, 80]}}
      - {{id: recipe,   type: string,  length: 20, s7: {{address: DB10.DBB20}}}}
      - {{id: estop,    type: bool,    s7: {{address: I0.3}}}}
      - {{id: speed_sp, type: int16,   s7: {{address: MW20}}, access: rw, range: [0, 3000], scale: 0.1}}
northbound:
  mqtt: {{host: 127.0.0.1, port: {mqtt_port}}}
api: {{listen: "127.0.0.1:{api_port}", token: "{TOKEN}"}}
"""
    plant = SimPlant(tmp_path, config, "gw-s7p", ["press-07"], mqtt_port, free_port())
    try:
        # the CPU restarts: offline with the reason, then back by itself
        plant.ctl("PUT", "/devices/press-07/fault", {"mode": "restart", "delay": 2.0})
        wait_for(
            lambda: any(s["state"] == "offline" for s in plant.sub.json("/press-07/status")),
            10,
            "offline after the CPU went away",
        )
        offline = next(s for s in plant.sub.json("/press-07/status") if s["state"] == "offline")
        assert "127.0.0.1" in offline["reason"]
        seen = len(plant.sub.data("press-07"))
        wait_for(lambda: len(plant.good("press-07", seen)) > 2, 15, "good values after the restart")
        assert plant.sub.json("/press-07/status")[-1]["state"] == "online"

        # DB10 refused (as an optimized DB on an S7-1200): its points bad, I and M still good
        plant.ctl("PUT", "/devices/press-07/fault", {"mode": "refuse", "code": 10})
        seen = len(plant.sub.data("press-07"))

        def refused() -> dict[str, object] | None:
            for m in plant.sub.data("press-07")[seen:]:
                pts = m["points"]
                if pts["running"]["q"] == "bad":
                    return pts
            return None

        pts = wait_for(refused, 10, "DB10 points bad")
        assert "optimized block access on DB10" in pts["oil_temp"]["reason"]
        assert pts["estop"]["q"] != "bad" and pts["speed_sp"]["q"] != "bad"
        assert plant.sub.json("/press-07/status")[-1]["state"] == "online"
        plant.ctl("DELETE", "/devices/press-07/fault")

        # a write through the API lands in the CPU (engineering 123.4 at scale 0.1: raw 1234)
        r = httpx.put(
            f"http://127.0.0.1:{api_port}/api/v1/devices/press-07/points/speed_sp",
            json={"value": 123.4},
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=10,
        )
        assert r.status_code == 200, r.text
        held = plant.ctl("GET", "/devices/press-07/values")["speed_sp"]
        assert abs(held - 123.4) < 1e-6
        wait_for(
            lambda: any(
                abs(m["points"]["speed_sp"]["v"] - 123.4) < 1e-6 for m in plant.sub.data("press-07")[-3:]
            ),
            10,
            "the written value read back",
        )
    finally:
        plant.stop()
