"""Shared by the benchmarks: a plant of Modbus TCP simulators and Mosquitto, /proc readings, and
the run of a PLC protocol's benchmark against a bare client (bench/mc.py, bench/s7.py)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
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


def start_sources(tmp: Path, sim_ports: list[int], moving: int) -> list[Proc]:
    """bench/modbus_source.py on each port instead of `edgegw simulate` (see its docstring)."""
    script = ROOT / "bench" / "modbus_source.py"
    sims = [
        Proc([sys.executable, str(script), f"--port={port}", f"--moving={moving}"], tmp / f"source{i}.log")
        for i, port in enumerate(sim_ports)
    ]
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


# ---- a PLC protocol's benchmark: a bare client, then the gateway, on the same simulators ----


async def bare_window(
    tasks: list[asyncio.Task], counts: list[int], warm: float, stop: float, requests_per_poll: int
) -> dict:
    """What the bare clients' `tasks` count (values, requests, errors) between `warm` and `stop`
    (loop times), with this process's CPU."""
    loop = asyncio.get_running_loop()
    await asyncio.sleep(warm - loop.time())
    n0, c0, t0 = list(counts), cpu_seconds(os.getpid()), time.monotonic()
    await asyncio.sleep(stop - loop.time())
    n1, c1, t1 = list(counts), cpu_seconds(os.getpid()), time.monotonic()
    await asyncio.gather(*tasks, return_exceptions=True)
    span = t1 - t0
    return {
        "values_per_s": round((n1[0] - n0[0]) / span),
        "requests_per_s": round((n1[1] - n0[1]) / span, 1),
        "cpu_pct": round(100 * (c1 - c0) / span, 1),
        "errors": n1[2] - n0[2],
        "requests_per_poll": requests_per_poll,
    }


def gateway_window(
    tmp: Path, config: Path, mqtt: int, api: int, devices: int, window: float, what: str
) -> dict:
    """`edgegw run` publishing to Mosquitto: good point values arriving at a subscriber over
    `window` seconds once data came from every device (`what`: "PLC", "CPU"), with its CPU, RSS
    and poll-to-ack latency."""
    sub = Subscriber(mqtt, "edgegw/gw-bench/+/data")
    gw = Proc([*EDGEGW, "run", "-c", str(config)], tmp / "gw.log")
    try:
        wait_for(lambda: len({m[0] for m in list(sub.messages)}) >= devices, 60, f"data from every {what}")
        time.sleep(2)
        h0 = ack_buckets(api)
        n0, c0, t0 = len(sub.messages), cpu_seconds(gw.pid), time.monotonic()
        time.sleep(window)
        n1, c1, t1 = len(sub.messages), cpu_seconds(gw.pid), time.monotonic()
        to_ack = window_percentiles(h0, ack_buckets(api))
        rss, peak = vm(gw.pid, "VmRSS"), vm(gw.pid, "VmHWM")
    finally:
        gw.stop()
    with sub.lock:
        batch = sub.messages[n0:n1]
        arrived = sub.arrived_wall[n0:n1]
    bodies = [json.loads(p) for _, p, _ in batch]
    good = sum(sum(1 for v in b["points"].values() if v["q"] != "bad") for b in bodies)
    to_sub = [1000 * a - b["ts"] for a, b in zip(arrived, bodies, strict=True)]
    gaps, dups = delivery(sub)
    sub.stop()
    span = t1 - t0
    return {
        "values_per_s": round(good / span),
        "messages_per_s": round((n1 - n0) / span, 1),
        "cpu_pct": round(100 * (c1 - c0) / span, 1),
        "rss_mb": round(rss, 1),
        "peak_rss_mb": round(peak, 1),
        "poll_to_ack_p50_ms": to_ack["p50_ms"],
        "poll_to_ack_p99_ms": to_ack["p99_ms"],
        "poll_to_subscriber_p50_ms": round(percentile(to_sub, 0.5) or 0, 1),
        "poll_to_subscriber_p99_ms": round(percentile(to_sub, 0.99) or 0, 1),
        "seq_gaps": gaps,
        "duplicates": dups,
    }


def plc_bench(
    protocol: str,
    devices: int,
    points: int,
    interval: str,
    window: float,
    write_config: Callable[[Path, int, int, str, list[int], int, int], Path],
    bare: Callable[[Path, list[int], float, float], Awaitable[dict]],
    bare_key: str,
    bare_label: str,
    what: str,
) -> None:
    """`devices` simulated PLCs (`edgegw simulate`, one port each) x `points`: the bare client
    (`bare`), then the gateway, one after the other; prints both and the ratio and writes
    bench/results/<protocol>-<devices>x<points>_at_<interval>.json."""
    name = f"{protocol} {devices}x{points}@{interval}"
    with tempfile.TemporaryDirectory(prefix=f"edgegw-bench-{protocol}-") as t:
        tmp = Path(t)
        ports = [free_port() for _ in range(devices)]
        mqtt, api = free_port(), free_port()
        config = write_config(tmp, devices, points, interval, ports, mqtt, api)
        broker = start_mosquitto(tmp, mqtt)
        sim = Proc([*EDGEGW, "simulate", "-c", str(config)], tmp / "sim.log")
        try:
            for p in ports:
                wait_port(p, 60)
            ceiling = asyncio.run(bare(config, ports, seconds(interval), window))
            gw = gateway_window(tmp, config, mqtt, api, devices, window, what)
        finally:
            sim.stop()
            broker.kill()
    offered = round(devices * points / seconds(interval))
    result = {
        "scenario": name,
        "offered_values_per_s": offered,
        "gateway": gw,
        bare_key: ceiling,
        "ratio_to_bare": round(gw["values_per_s"] / ceiling["values_per_s"], 3)
        if ceiling["values_per_s"]
        else None,
        "seconds": window,
    }
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{protocol}-{devices}x{points}_at_{interval}.json").write_text(
        json.dumps(result, indent=2) + "\n"
    )
    print(
        f"{name:<24} gateway {gw['values_per_s']:>7} values/s (offered {offered}) cpu {gw['cpu_pct']}% "
        f"rss {gw['peak_rss_mb']} MB  poll->ack p50/p99 {gw['poll_to_ack_p50_ms']}/{gw['poll_to_ack_p99_ms']} ms  "
        f"gaps {gw['seq_gaps']}\n{'':<24} {bare_label} {ceiling['values_per_s']:>7} values/s "
        f"cpu {ceiling['cpu_pct']}% ({ceiling['requests_per_poll']} requests/poll, errors {ceiling['errors']})  "
        f"ratio {result['ratio_to_bare']}",
        flush=True,
    )


__all__ = [
    "EDGEGW",
    "ROOT",
    "Proc",
    "Subscriber",
    "ack_buckets",
    "bare_window",
    "cpu_seconds",
    "delivery",
    "free_port",
    "gateway_status",
    "gateway_window",
    "percentile",
    "plc_bench",
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
