"""Shared by the benchmarks: a plant of Modbus TCP simulators and Mosquitto, and /proc readings."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from harness import EDGEGW, Proc, Subscriber, free_port, seq_report, start_mosquitto, wait_for, wait_port  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def vm(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def write_config(
    tmp: Path,
    devices: int,
    points: int,
    interval: str,
    mqtt_port: int,
    ports: list[int],
    mqtt_extra: str = "",
    api_port: int | None = None,
) -> Path:
    lines = [
        "gateway: {id: gw-bench, data_dir: " + str(tmp / "data") + "}",
        "models:",
        "  bench:",
        "    points:",
    ]
    for i in range(points):
        lines.append(
            f"      - {{id: p{i:04d}, type: int16, scale: 0.1, unit: CEL, range: [0, 400], modbus: {{address: 'hr:{i}'}}}}"
        )
    lines.append("devices:")
    for d in range(devices):
        port = ports[d % len(ports)]
        lines.append(
            f"  - {{id: dev-{d:04d}, model: bench, protocol: modbus-tcp, "
            f"connection: {{host: 127.0.0.1, port: {port}, unit_id: {d // len(ports) % 247 + 1}}}, "
            f"poll: {{interval: {interval}}}}}"
        )
    lines += [
        "northbound:",
        f"  mqtt: {{host: 127.0.0.1, port: {mqtt_port}{', ' + mqtt_extra if mqtt_extra else ''}}}",
    ]
    if api_port is not None:
        lines.append(f'api: {{listen: "127.0.0.1:{api_port}"}}')
    path = tmp / "bench.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def start_simulators(tmp: Path, full: Path, sim_ports: list[int]) -> list[Proc]:
    """One simulator process per port, each serving its share of the devices."""
    sims = []
    for i, port in enumerate(sim_ports):
        sub_dir = tmp / f"sim{i}"
        sub_dir.mkdir()
        text = full.read_text().splitlines()
        keep = [ln for ln in text if not ln.startswith("  - {id: dev-") or f"port: {port}," in ln]
        p = sub_dir / "sim.yaml"
        p.write_text("\n".join(keep) + "\n")
        sims.append(Proc([*EDGEGW, "simulate", "-c", str(p)], tmp / f"sim{i}.log"))
    for port in sim_ports:
        wait_port(port, 60)
    return sims


def delivery(sub: Subscriber) -> tuple[int, int]:
    """(seq gaps, duplicates) over every device's data messages the subscriber received."""
    import json

    with sub.lock:
        msgs = list(sub.messages)
    by_device: dict[str, list[dict]] = {}
    for topic, payload, _ in msgs:
        by_device.setdefault(topic, []).append(json.loads(payload))
    reports = [seq_report(m) for m in by_device.values()]
    return sum(len(missing) for missing, _ in reports), sum(d for _, d in reports)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def gateway_status(api_port: int) -> dict:
    import httpx

    return httpx.get(f"http://127.0.0.1:{api_port}/api/v1/status", timeout=5).json()


def seconds(d: str) -> float:
    from gateway.config.types import parse_duration

    return parse_duration(d)


__all__ = [
    "EDGEGW",
    "ROOT",
    "Proc",
    "Subscriber",
    "cpu_seconds",
    "delivery",
    "free_port",
    "gateway_status",
    "percentile",
    "seconds",
    "seq_report",
    "start_mosquitto",
    "start_simulators",
    "vm",
    "wait_for",
    "wait_port",
    "write_config",
]
