"""Computed points run for real: `edgegw simulate` serves two Modbus TCP meters, `edgegw run`
computes points from their values and publishes them to Mosquitto like any other point. The
values equal their formulas over the values held on the simulator; a meter that stops
answering makes the points computed from it bad, naming the input."""

from __future__ import annotations

import math
from pathlib import Path

from harness import SimPlant, free_port, wait_for

MODEL = """
models:
  meter:
    points:
      - {id: p, type: float32, unit: KWT, modbus: {address: 40001}}
      - {id: q, type: float32, modbus: {address: 40003}}
      - {id: i_raw, type: int16, scale: 0.1, modbus: {address: 40005}}
      - {id: s, type: float64, unit: KVA, compute: "sqrt(p**2 + q**2)"}
      - {id: pf, type: float64, range: [0, 1], compute: "p / s if s > 0 else 1"}
      - {id: heavy, type: bool, compute: "p > 10 and not i_raw < 5"}
      - {id: tenths, type: int32, compute: "round(i_raw * 10)"}
      - {id: inv, type: float64, compute: "1 / (p - 12)"}
"""


def test_computed_points_equal_their_formulas_and_name_a_bad_input(tmp_path: Path) -> None:
    sim, mqtt, control = free_port(), free_port(), free_port()
    config = f"""
gateway: {{id: gw-calc, data_dir: {tmp_path}/data}}
{MODEL}
devices:
  - id: em-1
    model: meter
    protocol: modbus-tcp
    connection: {{host: 127.0.0.1, port: {sim}, unit_id: 1, timeout: 300ms}}
    poll: {{interval: 200ms, backoff_max: 1s}}
  - id: em-2
    model: meter
    protocol: modbus-tcp
    connection: {{host: 127.0.0.1, port: {sim}, unit_id: 2, timeout: 300ms}}
    poll: {{interval: 200ms, backoff_max: 1s}}
  - id: line
    protocol: modbus-tcp
    connection: {{host: 127.0.0.1, port: {sim}, unit_id: 3, timeout: 300ms}}
    poll: {{interval: 200ms, backoff_max: 1s}}
    points:
      - {{id: setpoint, type: float32, modbus: {{address: 40001}}}}
      - {{id: total, type: float64, unit: KWT, compute: "em-1.p + em-2.p"}}
      - {{id: deviation, type: float64, compute: "abs(em-1.p + em-2.p - setpoint)"}}
northbound:
  mqtt: {{host: 127.0.0.1, port: {mqtt}}}
"""
    plant = SimPlant(tmp_path, config, "gw-calc", ["em-1", "em-2"], mqtt, control)
    try:
        held = {"em-1": (12.5, -3.25, 7.3), "em-2": (4.0, 3.0, 2.0)}
        for dev, (p, q, i) in held.items():
            for pid, v in (("p", p), ("q", q), ("i_raw", i)):
                plant.ctl("PUT", f"/devices/{dev}/points/{pid}", {"value": v})
        plant.ctl("PUT", "/devices/line/points/setpoint", {"value": 20.0})

        def latest(dev: str, want: dict[str, object]) -> dict[str, dict[str, object]] | None:
            for m in reversed(plant.sub.data(dev)):
                pts = m["points"]
                if all(pts.get(k, {}).get("v") == v for k, v in want.items()):
                    return pts
            return None

        one = wait_for(lambda: latest("em-1", {"p": 12.5, "q": -3.25, "i_raw": 7.3}), 10, "em-1 held values")
        assert one["s"]["v"] == math.sqrt(12.5**2 + 3.25**2) and one["s"]["q"] == "good"
        assert one["pf"]["v"] == 12.5 / math.sqrt(12.5**2 + 3.25**2) and one["pf"]["q"] == "good"
        assert one["heavy"]["v"] is True
        assert one["tenths"]["v"] == 73
        assert one["inv"]["q"] == "good" and one["inv"]["v"] == 1 / (12.5 - 12)
        two = wait_for(lambda: latest("em-2", {"p": 4.0, "q": 3.0, "i_raw": 2.0}), 10, "em-2 held values")
        assert two["s"]["v"] == 5.0 and two["pf"]["v"] == 0.8
        assert two["heavy"]["v"] is False
        assert two["tenths"]["v"] == 20
        # a value the expression cannot have: bad with the reason, the others good
        plant.ctl("PUT", "/devices/em-2/points/p", {"value": 12.0})
        two = wait_for(lambda: latest("em-2", {"p": 12.0}), 10, "em-2 at p = 12")
        assert two["inv"]["q"] == "bad" and two["inv"]["reason"] == "division by zero"
        assert two["s"]["q"] == "good"
        # another device's points
        line = wait_for(lambda: latest("line", {"total": 24.5}), 10, "line total over em-1 and em-2")
        assert line["deviation"]["v"] == 4.5 and line["deviation"]["q"] == "good"

        # em-2 stops answering: the line's computed points that read it go bad, naming it
        seen = len(plant.sub.data("line"))
        plant.ctl("PUT", "/devices/em-2/fault", {"mode": "silent"})

        def bad_total() -> dict[str, object] | None:
            for m in plant.sub.data("line")[seen:]:
                t = m["points"].get("total")
                if t is not None and t["q"] == "bad":
                    return m["points"]
            return None

        pts = wait_for(bad_total, 10, "line.total bad once em-2 is silent")
        assert pts["total"]["reason"].startswith("input em-2.p is bad: ")
        assert pts["setpoint"]["q"] == "good"
        plant.ctl("PUT", "/devices/em-2/fault", {"mode": "none"})
        wait_for(lambda: latest("line", {"total": 24.5}), 15, "line total good again")
    finally:
        plant.stop()
