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
    publish: str = "always",
    changing: float = 1.0,
    computed: int = 0,
) -> Path:
    """`changing`: the share of each device's points whose value moves; the others hold still
    (int16, scale 1, range [100, 101]: the simulator's sine stays within 100.15..100.85).
    `computed`: points per device computed from the read ones (four kinds of formula in turn)."""
    lines = [
        "gateway: {id: gw-bench, data_dir: " + str(tmp / "data") + "}",
        "models:",
        "  bench:",
        "    points:",
    ]
    moving = round(points * changing)
    for i in range(points):
        kind = "scale: 0.1, range: [0, 400]" if i < moving else "scale: 1, range: [100, 101]"
        lines.append(
            f"      - {{id: p{i:04d}, type: int16, {kind}, unit: CEL, modbus: {{address: 'hr:{i}'}}}}"
        )
    formulas = (
        "p{a} * 1.8 + 32",
        "max(p{a}, p{b}) - min(p{a}, p{b})",
        "sqrt(p{a}**2 + p{b}**2)",
        "1 if p{a} > p{b} else 0",
    )
    for c in range(computed):
        a, b = c % points, (c + 1) % points
        text = formulas[c % len(formulas)].format(a=f"{a:04d}", b=f"{b:04d}")
        lines.append(f'      - {{id: c{c:04d}, type: float64, compute: "{text}"}}')
    lines.append("devices:")
    for d in range(devices):
        port = ports[d % len(ports)]
        lines.append(
            f"  - {{id: dev-{d:04d}, model: bench, protocol: modbus-tcp, "
            f"connection: {{host: 127.0.0.1, port: {port}, unit_id: {d // len(ports) % 247 + 1}}}, "
            f"poll: {{interval: {interval}}}, publish: {publish}}}"
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


def ack_buckets(api_port: int) -> list[tuple[float, float]]:
    """Cumulative (upper bound s, count) of the gateway's poll-end -> broker-ack histogram."""
    import httpx

    text = httpx.get(f"http://127.0.0.1:{api_port}/metrics", timeout=5).text
    out = []
    for line in text.splitlines():
        if line.startswith("edgegw_mqtt_sample_latency_seconds_bucket{"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            out.append((float(le), float(line.rsplit(" ", 1)[1])))
    return out


def window_percentiles(before: list[tuple[float, float]], after: list[tuple[float, float]]) -> dict:
    """p50/p99 in ms (bucket upper bounds) of what the histogram gained between two readings."""
    diff = [(le, a - b) for (le, a), (_, b) in zip(after, before, strict=True)]
    total = diff[-1][1] if diff else 0
    result: dict = {"count": int(total)}
    for name, q in (("p50_ms", 0.5), ("p99_ms", 0.99)):
        bound = next((le for le, n in diff if total and n >= q * total), None)
        result[name] = None if bound is None else (round(bound * 1000, 1) if bound != float("inf") else "inf")
    return result


def seconds(d: str) -> float:
    from edgegw.gateway.config.types import parse_duration

    return parse_duration(d)


__all__ = [
    "EDGEGW",
    "ROOT",
    "Proc",
    "Subscriber",
    "ack_buckets",
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
    "window_percentiles",
    "write_config",
]
