"""A plant for the HTTP API, write-back, metrics, InfluxDB and status page tests: Mosquitto,
VictoriaMetrics (as InfluxDB), `edgegw simulate` (Modbus devices and the secondary node) and
`edgegw run` with the API on, all real processes on free loopback ports."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
from harness import (
    EDGEGW,
    ROOT,
    Proc,
    Subscriber,
    free_port,
    start_mosquitto,
    start_victoria_metrics,
    wait_for,
    wait_port,
)

TOKEN = "t0ken-for-tests"
PREFIX = "88.118.8"
TOPIC = "edgegw/gw-api"


class ApiPlant:
    def __init__(self, tmp: Path):
        self.tmp = tmp
        (
            self.mqtt_port,
            self.modbus_port,
            self.meter_port,
            self.node_port,
            self.control,
            self.api_port,
            self.vm_port,
        ) = (free_port() for _ in range(7))
        self.config = tmp / "plant.yaml"
        self.write_config()
        self.broker = start_mosquitto(tmp, self.mqtt_port)
        self.vm_store = tmp / "vm"
        self.vm = start_victoria_metrics(tmp, self.vm_port, self.vm_store)
        self.sub = Subscriber(self.mqtt_port, f"{TOPIC}/#")
        self.sim = Proc(
            [*EDGEGW, "simulate", "-c", str(self.config), "--control", f"127.0.0.1:{self.control}"],
            tmp / "sim.log",
        )
        for port in (self.modbus_port, self.meter_port, self.node_port, self.control):
            wait_port(port, 20)
        self.gw = Proc([*EDGEGW, "run", "-c", str(self.config)], tmp / "gw.log")
        wait_port(self.api_port, 20)
        wait_for(lambda: len(self.sub.data("im-a")) > 2, 20, "the gateway polling")
        self.base = f"http://127.0.0.1:{self.api_port}"

    def write_config(self, api_extra: str = "") -> None:
        self.config.write_text(
            f"""
include: {ROOT}/configs/models/*.yaml
gateway: {{id: gw-api, data_dir: {self.tmp}/data, location: {{site: jinan, line: line-1}}}}
devices:
  - id: im-a
    model: injection-molder
    protocol: modbus-tcp
    connection: {{host: 127.0.0.1, port: {self.modbus_port}, unit_id: 1, timeout: 500ms}}
    poll: {{interval: 200ms, backoff_max: 1s}}
  - id: em-c
    model: energy-meter-3ph
    protocol: modbus-tcp
    connection: {{host: 127.0.0.1, port: {self.meter_port}, unit_id: 7, timeout: 500ms}}
    poll: {{interval: 500ms, backoff_max: 1s}}
northbound:
  mqtt: {{host: 127.0.0.1, port: {self.mqtt_port}, commands: true, max_classification: important}}
  influxdb:
    url: http://127.0.0.1:{self.vm_port}
    org: acme
    bucket: plant
    token: influx-secret-token
    flush_interval: 500ms
    retry_max: 1s
identifier:
  node: {{kind: snms, url: "http://127.0.0.1:{self.node_port}", username: line-1, password: s3cret, prefix: "{PREFIX}", timeout: 2s}}
  rules:
    - name: molded-part
      trigger: {{device: im-a, point: product_serial}}
      template: "1.0"
      values:
        - {{index: 2000, type: serial_number, value: "{{value}}"}}
        - {{index: 2001, type: model, value: IM-200}}
        - {{index: 2002, type: batch, value: "B-{{im-a.shot_count}}"}}
        - {{index: 2005, type: produced_at, value: "{{ts}}"}}
api:
  listen: 127.0.0.1:{self.api_port}
  token: {TOKEN}
{api_extra}"""
        )

    def reload(self, api_extra: str = "") -> None:
        self.write_config(api_extra)
        before = self.gw.output().count("config reloaded")
        os.kill(self.gw.pid, signal.SIGHUP)
        wait_for(lambda: self.gw.output().count("config reloaded") > before, 10, "the reload")

    # ---- helpers ----

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return httpx.get(self.base + path, timeout=10, **kw)

    def put(self, path: str, body: Any, token: str | None = TOKEN) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        return httpx.put(self.base + path, json=body, headers=headers, timeout=10)

    def sim_values(self, device: str) -> dict[str, Any]:
        r = httpx.get(f"http://127.0.0.1:{self.control}/devices/{device}/values", timeout=5)
        r.raise_for_status()
        return r.json()

    def fault(self, device: str, mode: str | None, **kw: Any) -> None:
        url = f"http://127.0.0.1:{self.control}/devices/{device}/fault"
        r = httpx.delete(url) if mode is None else httpx.put(url, json={"mode": mode, **kw})
        r.raise_for_status()

    def hold(self, device: str, point: str, value: Any) -> None:
        r = httpx.put(
            f"http://127.0.0.1:{self.control}/devices/{device}/points/{point}", json={"value": value}
        )
        r.raise_for_status()

    def vm_export(self, metric: str) -> list[dict[str, Any]]:
        import json

        r = httpx.get(
            f"http://127.0.0.1:{self.vm_port}/api/v1/export",
            params={"match[]": f'{{__name__="{metric}"}}'},
            timeout=10,
        )
        r.raise_for_status()
        return [json.loads(line) for line in r.text.splitlines() if line.strip()]

    def restart_vm(self, down: float) -> tuple[float, float]:
        """Stop VictoriaMetrics for `down` seconds; returns the outage window (epoch seconds)."""
        started = time.time()
        self.vm.stop()
        time.sleep(down)
        self.vm = start_victoria_metrics(self.tmp, self.vm_port, self.vm_store)
        return started, time.time()

    def stop(self) -> None:
        for p in (self.gw, self.sim, self.vm, self.broker):
            p.stop()
        self.sub.stop()
