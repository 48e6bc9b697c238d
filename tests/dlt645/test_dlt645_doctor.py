"""`edgegw doctor` on a DL/T 645 meter: the configured meter answers a planned read; a meter
whose nameplate address differs from the config is found through the wildcard read of the
address; with no meter on the line the wiring and line-setting fix is named."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from edgegw.gateway import doctor
from edgegw.gateway.config import load_config
from edgegw.simulators.runner import build_simulators

CONFIG = """
gateway: {{id: gw-doc, data_dir: {tmp}/data}}
devices:
  - id: meter-12
    protocol: dlt645
    connection: {{port: {tmp}/tty/m, baudrate: 115200, parity: N, address: "{address}", timeout: 300ms}}
    points:
      - {{id: voltage_a, type: float64, unit: VLT, range: [200, 240], dlt645: {{di: "02010100"}}}}
"""


class Running:
    """The simulators of a config served on a loop of their own (doctor runs its own loop)."""

    def __init__(self, path: Path):
        self.sims = build_simulators(load_config(str(path)), "127.0.0.1", 60.0)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        for s in self.sims:
            asyncio.run_coroutine_threadsafe(s.start(), self.loop).result(10)

    def stop(self) -> None:
        for s in self.sims:
            asyncio.run_coroutine_threadsafe(s.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture
def meter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Running]:
    monkeypatch.setenv("EDGEGW_DLT645_TURNAROUND", "0.002")
    sim_config = tmp_path / "sim.yaml"
    sim_config.write_text(CONFIG.format(tmp=tmp_path, address="000000001235"))
    running = Running(sim_config)
    yield running
    running.stop()


def run_doctor(path: Path) -> tuple[int, str]:
    lines: list[str] = []
    rc = doctor.run(str(path), lines.append, timeout=1.0)
    return rc, "\n".join(lines)


def test_doctor_reads_the_meter_and_finds_a_wrong_address(tmp_path: Path, meter: Running) -> None:
    right = tmp_path / "right.yaml"
    right.write_text(CONFIG.format(tmp=tmp_path, address="000000001235"))
    rc, out = run_doctor(right)
    assert rc == 0, out
    assert "meter 000000001235 answers at 115200 8N1: 'voltage_a' (DI 02010100) = " in out, out

    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(CONFIG.format(tmp=tmp_path, address="000000001234"))
    rc, out = run_doctor(wrong)
    assert rc == 1, out
    assert "a meter answered as 000000001235 — the nameplate address in the config is 000000001234" in out
    assert 'fix: set connection.address: "000000001235"' in out

    (sim,) = meter.sims
    sim.devices["meter-12"].fault.mode = "silent"
    rc, out = run_doctor(right)
    assert rc == 1, out
    assert "no meter answered at 115200 8N1, as 000000001235 or to the wildcard address" in out
    assert "swapped A/B" in out
