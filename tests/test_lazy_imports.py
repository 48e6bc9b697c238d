"""A gateway pays only for what its config uses: a Modbus-only config with an MQTT sink validates,
starts, polls a simulated device and stops without loading the OPC UA stack (asyncua, cryptography), FastAPI,
uvicorn or influxdb-client. Checked in a fresh interpreter, through the real paths."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from harness import free_port

HEAVY = ("asyncua", "cryptography", "fastapi", "uvicorn", "influxdb_client", "starlette")

SCRIPT = textwrap.dedent(
    """
    import asyncio, json, sys
    from edgegw.gateway.config import load_config
    from edgegw.gateway import cli, runtime
    from edgegw.drivers.modbus.simulator import ModbusTcpSimulator, SimulatedDevice, SimulatedPoint

    async def main(path):
        assert cli.main(["validate", "-c", path]) == 0
        after_validate = sorted(m for m in {heavy} if m in sys.modules)
        loaded = load_config(path)
        gw = runtime.Gateway(loaded)
        await gw.start()
        await asyncio.sleep(1.5)
        polls = sum(r.group.counters.polls for r in gw.runners.values())
        states = [r.state for r in gw.runners.values()]
        await gw.stop()
        after_run = sorted(m for m in {heavy} if m in sys.modules)
        print(json.dumps({{"validate": after_validate, "run": after_run, "polls": polls, "states": states}}))

    asyncio.run(main(sys.argv[1]))
    """
).format(heavy=repr(set(HEAVY)))


def test_a_modbus_only_gateway_never_imports_opcua_http_or_influxdb(tmp_path: Path) -> None:
    port = free_port()
    cfg = tmp_path / "modbus.yaml"
    cfg.write_text(
        textwrap.dedent(
            f"""
            gateway: {{id: gw-lazy, data_dir: {tmp_path / "var"}}}
            models:
              meter:
                points:
                  - {{id: power, type: float32, unit: KWT, modbus: {{address: "ir:0"}}}}
            devices:
              - {{id: m1, protocol: modbus-tcp, model: meter, poll: {{interval: 200ms}},
                  connection: {{host: 127.0.0.1, port: {port}, timeout: 300ms}}}}
            northbound:  # no broker listens there: the sink keeps the data queued meanwhile
              mqtt: {{host: 127.0.0.1, port: {free_port()}, flush_timeout: 100ms}}
            """
        )
    )
    sim = subprocess.Popen(
        [sys.executable, "-m", "edgegw.gateway.cli", "simulate", "-c", str(cfg), "--bind", "127.0.0.1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert sim.stdout is not None
        for line in sim.stdout:
            if "simulating m1" in line:
                break
        result = subprocess.run(
            [sys.executable, "-c", SCRIPT, str(cfg)], capture_output=True, text=True, timeout=60, cwd=tmp_path
        )
    finally:
        sim.terminate()
        sim.wait(10)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["validate"] == [], report
    assert report["run"] == [], report
    assert report["polls"] >= 3 and report["states"] == ["online"], report
