"""`edgegw doctor` on an S7 device: the session opened, the CPU's identity read, every planned
read tried, and each refusal given its fix (PUT/GET, optimized DB, wrong rack/slot)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from edgegw.drivers.s7.simulator import S7Simulator
from edgegw.gateway import doctor
from edgegw.gateway.config import load_config
from edgegw.simulators.faults import Fault
from edgegw.simulators.runner import build_simulators
from harness import free_port


def run_doctor(path: Path) -> tuple[int, str]:
    lines: list[str] = []
    rc = doctor.run(str(path), lines.append, timeout=1.0)
    return rc, "\n".join(lines)


def test_doctor_reads_the_cpu_identity_and_names_fixes(tmp_path: Path) -> None:
    port = free_port()
    path = tmp_path / "c.yaml"
    path.write_text(
        f"""
gateway: {{id: gw-doc, data_dir: {tmp_path}/data}}
devices:
  - id: press-07
    protocol: s7
    connection: {{host: 127.0.0.1, port: {port}, plc: s7-1200, timeout: 500ms}}
    points:
      - {{id: running, type: bool, s7: {{address: DB10.DBX0.0}}}}
      - {{id: speed, type: int16, s7: {{address: MW20}}}}
"""
    )
    (sim,) = build_simulators(load_config(str(path)), "127.0.0.1", 60.0)
    assert isinstance(sim, S7Simulator)
    asyncio.run(sim.start())
    try:
        rc, out = run_doctor(path)
        assert "ok    device press-07" in out and "CPU 315-2 PN/DP" in out, out
        assert "read all 2 points in 1 request(s)" in out
        assert rc == 0, out

        sim.plc.set_fault(Fault("refuse", code=10))
        rc, out = run_doctor(path)
        assert rc == 1
        assert "FAIL  device press-07" in out and "1 point(s) refused (running)" in out
        assert "fix: make the DB standard-access" in out

        sim.plc.set_fault(Fault("putget"))
        rc, out = run_doctor(path)
        assert rc == 1 and "fix: enable PUT/GET access" in out, out
    finally:
        asyncio.run(sim.stop())

    # nothing listens any more: the TCP check fails and no probe runs
    rc, out = run_doctor(path)
    assert rc == 1 and "FAIL  device press-07" in out and "S7 session" not in out
