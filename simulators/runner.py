"""`edgegw simulate`: a simulator for every device of a config, and a control API for faults."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

from pydantic import BaseModel, Field

from gateway.config import LoadedConfig
from gateway.config.schema import ModbusTcpDevice
from gateway.wiring import register_points

from .modbus_tcp import FAULTS, Fault, ModbusTcpSimulator, SimulatedDevice, SimulatedPoint
from .values import ValueGenerator

log = logging.getLogger("edgegw.simulate")


class FaultBody(BaseModel):
    mode: str = Field(description=" | ".join(FAULTS))
    code: int = Field(4, ge=1, le=255, description="exception code for mode: exception")
    delay: float = Field(2.0, ge=0, le=3600, description="seconds, for mode: slow")


def build_simulators(loaded: LoadedConfig, bind: str, period: float = 60.0) -> list[ModbusTcpSimulator]:
    by_port: dict[int, list[SimulatedDevice]] = {}
    for resolved in loaded.devices:
        dev = loaded.config.devices[resolved.index]
        if not isinstance(dev, ModbusTcpDevice) or not dev.enabled:
            continue
        regs = register_points(dev, resolved)
        points = [
            SimulatedPoint(r, e, ValueGenerator(dev.id, e, period))
            for r, e in zip(regs, resolved.points, strict=True)
        ]
        by_port.setdefault(dev.connection.port, []).append(
            SimulatedDevice(dev.id, dev.connection.unit_id, points)
        )
    return [ModbusTcpSimulator(bind, port, devs) for port, devs in sorted(by_port.items())]


def control_app(sims: list[ModbusTcpSimulator]) -> Any:
    from fastapi import FastAPI, HTTPException

    app = FastAPI(title="edgegw simulator control")
    devices = {d.id: (s, d) for s in sims for d in s.devices.values()}

    def get(device_id: str) -> tuple[ModbusTcpSimulator, SimulatedDevice]:
        if device_id not in devices:
            raise HTTPException(404, f"no simulated device '{device_id}'")
        return devices[device_id]

    @app.get("/devices")
    def list_devices() -> dict[str, Any]:
        return {
            i: {"port": s.port, "unit_id": d.unit_id, "fault": d.fault.mode, "requests": d.requests}
            for i, (s, d) in devices.items()
        }

    @app.get("/devices/{device_id}/values")
    def values(device_id: str) -> dict[str, Any]:
        return get(device_id)[1].values()

    @app.put("/devices/{device_id}/fault")
    def set_fault(device_id: str, body: FaultBody) -> dict[str, Any]:
        if body.mode not in FAULTS:
            raise HTTPException(422, f"mode must be one of {', '.join(FAULTS)}")
        _, d = get(device_id)
        d.set_fault(Fault(body.mode, body.code, body.delay))
        log.info("fault device=%s mode=%s", device_id, body.mode)
        return {"device": device_id, "fault": body.mode}

    @app.delete("/devices/{device_id}/fault")
    def clear_fault(device_id: str) -> dict[str, Any]:
        _, d = get(device_id)
        d.set_fault(Fault())
        return {"device": device_id, "fault": "none"}

    return app


async def run(loaded: LoadedConfig, bind: str, control: str | None, period: float) -> int:
    sims = build_simulators(loaded, bind, period)
    if not sims:
        log.error("the config has no modbus-tcp device to simulate")
        return 2
    for s in sims:
        try:
            await s.start()
        except OSError as exc:
            log.error("cannot listen on %s:%d: %s", bind, s.port, exc)
            return 1
        for d in s.devices.values():
            print(
                f"simulating {d.id}: modbus-tcp {bind}:{s.port} unit {d.unit_id}, {len(d.points)} points",
                flush=True,
            )
    server = None
    control_task: asyncio.Task[None] | None = None
    if control:
        import uvicorn

        host, _, port = control.rpartition(":")
        cfg = uvicorn.Config(control_app(sims), host=host or "127.0.0.1", port=int(port), log_level="warning")
        server = uvicorn.Server(cfg)
        server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        control_task = asyncio.create_task(server.serve())
        print(f"control API on http://{host or '127.0.0.1'}:{port}", flush=True)
    print("simulators ready", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    if server is not None:
        server.should_exit = True
        if control_task is not None:
            await asyncio.wait([control_task], timeout=2)
    for s in sims:
        await s.stop()
    return 0
