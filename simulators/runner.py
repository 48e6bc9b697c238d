"""`edgegw simulate`: a simulator for every device of a config, and a control API for faults."""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from edgegw.drivers.plugin import Simulator
from edgegw.drivers.registry import plugin_for, plugins
from edgegw.gateway.config import LoadedConfig
from pydantic import BaseModel, Field

from .faults import Fault, OnPty

# a Modbus TCP port, an RTU bus or a line-protocol instrument

log = logging.getLogger("edgegw.simulate")


class FaultBody(BaseModel):
    mode: str = Field(
        description="a fault mode of the device's protocol (GET /devices lists each device's modes)"
    )
    code: int = Field(4, ge=1, le=255, description="exception code for mode: exception")
    delay: float = Field(2.0, ge=0, le=3600, description="seconds, for mode: slow")


class HoldBody(BaseModel):
    value: bool | int | float | str = Field(description="engineering value the point holds")


def build_simulators(loaded: LoadedConfig, bind: str, period: float = 60.0) -> list[Simulator]:
    """The simulators of every enabled device, made by each device's protocol plugin (one
    Modbus TCP server per port, one RTU bus per serial port, one pty pair per line-protocol
    instrument, one OPC UA server per endpoint port). Raises ValueError for a device a
    simulator cannot be made for."""
    by_plugin: dict[str, list[tuple[Any, list[Any], object]]] = {}
    for resolved in loaded.devices:
        dev = loaded.config.devices[resolved.index]
        if dev.enabled:
            by_plugin.setdefault(plugin_for(dev.protocol).name, []).append(
                (dev, resolved.read_points, resolved.plan)
            )
    sims: list[Simulator] = []
    for plugin in plugins():
        if plugin.name in by_plugin:
            sims += plugin.simulators(loaded, by_plugin[plugin.name], bind, period)
    return sims


def control_app(sims: list[Simulator]) -> Any:
    from fastapi import FastAPI, HTTPException

    app = FastAPI(title="edgegw simulator control")
    devices = {d.id: (s, d) for s in sims for d in s.devices.values()}

    def get(device_id: str) -> tuple[Any, Any]:
        if device_id not in devices:
            raise HTTPException(404, f"no simulated device '{device_id}'")
        return devices[device_id]

    @app.get("/devices")
    def list_devices() -> dict[str, Any]:
        return {
            i: {
                "port": s.path if isinstance(s, OnPty) else getattr(s, "port", None),
                "unit_id": d.unit_id,
                "fault": d.fault.mode,
                "faults": list(d.faults),
                "requests": d.requests,
            }
            for i, (s, d) in devices.items()
        }

    @app.get("/devices/{device_id}/values")
    def values(device_id: str) -> dict[str, Any]:
        return get(device_id)[1].values()

    @app.put("/devices/{device_id}/fault")
    def set_fault(device_id: str, body: FaultBody) -> dict[str, Any]:
        _, d = get(device_id)
        faults = d.faults
        if body.mode not in faults:
            raise HTTPException(422, f"mode must be one of {', '.join(faults)} for '{device_id}'")
        d.set_fault(Fault(body.mode, body.code, body.delay))
        log.info("fault device=%s mode=%s", device_id, body.mode)
        return {"device": device_id, "fault": body.mode}

    @app.put("/devices/{device_id}/points/{point_id}")
    def hold(device_id: str, point_id: str, body: HoldBody) -> dict[str, Any]:
        _, d = get(device_id)
        if not d.hold(point_id, body.value):
            raise HTTPException(404, f"device '{device_id}' has no point '{point_id}'")
        return {"device": device_id, "point": point_id, "value": body.value}

    @app.delete("/devices/{device_id}/points/{point_id}")
    def release(device_id: str, point_id: str) -> dict[str, Any]:
        _, d = get(device_id)
        if not d.hold(point_id, None):
            raise HTTPException(404, f"device '{device_id}' has no point '{point_id}'")
        return {"device": device_id, "point": point_id, "value": None}

    async def _adapter(device_id: str, plugged: bool) -> dict[str, Any]:
        s, _ = get(device_id)
        if not isinstance(s, OnPty):
            raise HTTPException(422, f"'{device_id}' is not on a serial port")
        await (s.plug() if plugged else s.unplug())
        return {"port": s.path, "plugged": plugged}

    @app.delete("/devices/{device_id}/port")
    async def unplug(device_id: str) -> dict[str, Any]:
        """Pull the serial adapter of an RTU bus or an instrument: its port path disappears."""
        return await _adapter(device_id, False)

    @app.put("/devices/{device_id}/port")
    async def plug(device_id: str) -> dict[str, Any]:
        """Plug the adapter back in: the port path comes back."""
        return await _adapter(device_id, True)

    @app.delete("/devices/{device_id}/fault")
    def clear_fault(device_id: str) -> dict[str, Any]:
        _, d = get(device_id)
        d.set_fault(Fault())
        return {"device": device_id, "fault": "none"}

    return app


@dataclass
class IdNodeSpec:
    host: str
    port: int
    users: dict[str, tuple[str, tuple[str, ...]]]
    templates: Path
    token_ttl: float = 24 * 3600.0
    apps: dict[str, Path] = field(default_factory=dict)  # IDHub app handle -> its key's PEM file


DEFAULT_TEMPLATES = Path(__file__).resolve().parent.parent / "configs" / "identifier" / "templates.yaml"


def idnode_from_config(loaded: LoadedConfig, templates: Path | None, bind: str) -> IdNodeSpec | None:
    ident = loaded.config.identifier
    if ident is None:
        return None
    node = ident.node
    url = urlsplit(node.url)
    port = url.port or (443 if url.scheme == "https" else 80)
    password = node.password.get_secret_value() if node.password else ""
    user = node.username or "edgegw"
    apps: dict[str, Path] = {}
    if node.kind == "idhub" and node.app_handle and node.private_key:
        apps[node.app_handle] = loaded.relative(node.private_key)
    return IdNodeSpec(
        bind, port, {user: (password, (node.prefix,))}, templates or DEFAULT_TEMPLATES, apps=apps
    )


async def _serve_http(app: Any, host: str, port: int) -> tuple[Any, asyncio.Task[None]]:
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    server.install_signal_handlers = lambda: None  # type: ignore[attr-defined]  # uvicorn < 0.29 calls it
    task = asyncio.create_task(server.serve())
    for _ in range(200):
        if server.started:
            return server, task
        if task.done():
            raise OSError(f"cannot listen on {host}:{port}")
        await asyncio.sleep(0.02)
    raise OSError(f"cannot listen on {host}:{port}")


async def run(
    loaded: LoadedConfig | None,
    bind: str,
    control: str | None,
    period: float,
    idnode: IdNodeSpec | None = None,
) -> int:
    from . import idnode as idnode_sim

    try:
        sims = build_simulators(loaded, bind, period) if loaded is not None else []
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    if not sims and idnode is None:
        log.error("the config has no device or identifier node to simulate")
        return 2
    servers: list[tuple[Any, asyncio.Task[None]]] = []
    try:
        for s in sims:
            await s.start()
            for line in s.describe():
                print(f"simulating {line}", flush=True)
        if idnode is not None:
            prefixes = tuple(sorted({p for _, ps in idnode.users.values() for p in ps}))
            app = idnode_sim.build(
                idnode.users,
                idnode_sim.load_templates(idnode.templates, prefixes),
                token_ttl=idnode.token_ttl,
                apps={h: (k.read_bytes(), prefixes) for h, k in idnode.apps.items()},
            )
            servers.append(await _serve_http(app, idnode.host, idnode.port))
            print(
                f"simulating the identifier node: snms, handle and idhub APIs on http://{idnode.host}:{idnode.port}"
                f" (prefixes {', '.join(prefixes)})",
                flush=True,
            )
        if control:
            host, _, port = control.rpartition(":")
            servers.append(await _serve_http(control_app(sims), host or "127.0.0.1", int(port)))
            print(f"control API on http://{host or '127.0.0.1'}:{port}", flush=True)
    except OSError as exc:
        log.error("%s", exc)
        for s in sims:
            await s.stop()
        return 1
    print("simulators ready", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for server, task in servers:
        server.should_exit = True
        await asyncio.wait([task], timeout=2)
    for s in sims:
        await s.stop()
    return 0
