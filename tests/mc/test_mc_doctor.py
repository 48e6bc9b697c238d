"""`edgegw doctor` on an MC device: the CPU model read (command 0101), every planned read
tried and each refusal given its fix; a binary client of an ASCII connection, and a port that
accepts TCP but does not speak MC, each named."""

from __future__ import annotations

import asyncio
import socket
import threading
from pathlib import Path

from edgegw.drivers.mc.simulator import McSimulator
from edgegw.gateway import doctor
from edgegw.gateway.config import load_config
from edgegw.simulators.faults import Fault
from edgegw.simulators.runner import build_simulators
from harness import free_port


def run_doctor(path: Path) -> tuple[int, str]:
    lines: list[str] = []
    rc = doctor.run(str(path), lines.append, timeout=1.0)
    return rc, "\n".join(lines)


def write(path: Path, port: int, code: str) -> Path:
    path.write_text(
        f"""
gateway: {{id: gw-doc}}
devices:
  - id: fx5-01
    protocol: mc
    connection: {{host: 127.0.0.1, port: {port}, plc: iQ-F, code: {code}, timeout: 300ms}}
    points:
      - {{id: run, type: bool, mc: {{address: M10}}}}
      - {{id: temp, type: int16, mc: {{address: D300}}}}
"""
    )
    return path


def test_doctor_reads_the_cpu_model_and_names_fixes(tmp_path: Path) -> None:
    port = free_port()
    path = write(tmp_path / "c.yaml", port, "ascii")
    (sim,) = build_simulators(load_config(str(path)), "127.0.0.1", 60.0)
    assert isinstance(sim, McSimulator)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(sim.start(), loop).result(5)
    try:
        rc, out = run_doctor(path)
        assert "ok    device fx5-01" in out and "CPU FX5U-32MR/ES" in out, out
        assert "read all 2 points in 1 request(s)" in out
        assert rc == 0, out

        sim.plc.set_fault(Fault("refuse", code=250))
        rc, out = run_doctor(path)
        assert rc == 1
        assert "1 point(s) refused (temp): C056: request exceeds the maximum address" in out, out
        assert "fix: the address is beyond the device range" in out
        sim.plc.set_fault(Fault())

        # the connection is ASCII, the config says binary: the PLC answers ASCII-coded
        rc, out = run_doctor(write(tmp_path / "b.yaml", port, "binary"))
        assert rc == 1 and "fix: set code: ascii" in out, out
    finally:
        asyncio.run_coroutine_threadsafe(sim.stop(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)


def test_doctor_names_a_port_that_is_not_an_mc_connection(tmp_path: Path) -> None:
    # a listener that accepts and never answers (a MELSOFT or UDP-only port, a wrong service)
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    port = srv.getsockname()[1]
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        srv.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(srv.accept()[0])
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        rc, out = run_doctor(write(tmp_path / "c.yaml", port, "binary"))
        assert rc == 1, out
        assert "no MC reply within 0.3s in binary or ASCII" in out, out
        assert "not an MC protocol connection" in out and "open/external device configuration" in out
    finally:
        stop.set()
        t.join(2)
        for s in held:
            s.close()
        srv.close()
