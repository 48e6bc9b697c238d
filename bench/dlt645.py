"""DL/T 645 throughput on one RS-485 bus: M simulated meters x P points, read through the
gateway, against the line's theoretical rate.

    .venv/bin/python bench/dlt645.py --meters 4 --points 8 --baud 9600 --seconds 20

`edgegw simulate` serves every meter on one pty pair, paced like the line: before each reply it
waits the wire time of the request and the reply at the configured baud rate (1 start bit, 8
data bits, a parity bit unless N, the stop bits per byte) plus the meter's turnaround
(`--turnaround`, 20 ms by default as real meters; 0 measures the pure line rate). A pty cannot
honour parity, so the line is 8N1 (10 bits per byte) unless `--parity E` is given; the 8E1
figure of a real line (11 bits per byte) is printed beside it.

The theoretical rate is what a master that never pauses could get from that line: the sum over
one round of every point's request and reply bytes (with the FE preambles both ways) at the
line's bits per byte, plus one turnaround per request. The gateway (`edgegw run`, every meter
polled as fast as the bus allows, values published to Mosquitto) is measured as good point
values arriving at a subscriber (one value is one request), with the driver's request counters
and round-trip histogram from /metrics, its CPU and RSS.

Prints values/s, requests/s, the theoretical rate, their ratio, CPU, RSS and request latency
percentiles, and writes bench/results/dlt645-<meters>x<points>_at_<baud>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from plant import EDGEGW, ROOT, Proc, Subscriber, cpu_seconds, free_port, start_mosquitto, vm, wait_for

# the DIs a meter's points cycle through (value bytes on the wire): energies 4, voltage 2,
# current 3, powers 3, power factor 2, frequency 2
DIS = [
    ("00000000", 4),
    ("00010000", 4),
    ("02010100", 2),
    ("02020100", 3),
    ("02030000", 3),
    ("02040000", 3),
    ("02060000", 2),
    ("02800002", 2),
    ("00020000", 4),
    ("02010200", 2),
    ("02020200", 3),
    ("02030100", 3),
]
REQUEST = 4 + 12 + 4  # FE preamble, header and trailer, the DI
REPLY = 4 + 12 + 4  # FE preamble, header and trailer, the DI; plus the value


def write_config(tmp: Path, meters: int, points: int, baud: int, parity: str, mqtt: int, api: int) -> Path:
    lines = [
        "gateway: {id: gw-bench, data_dir: " + str(tmp / "data") + "}",
        "devices:",
    ]
    for m in range(meters):
        lines += [
            f"  - id: meter-{m:02d}",
            "    protocol: dlt645",
            f"    connection: {{port: {tmp}/tty/bus, baudrate: {baud}, parity: {parity}, "
            f'address: "{m + 1:012d}", timeout: 1s}}',
            "    poll: {interval: 50ms}",  # as fast as the bus allows: the bus is the limit
            "    points:",
        ]
        for i in range(points):
            di, _ = DIS[i % len(DIS)]
            lines.append(f'      - {{id: p{i:02d}, type: float64, dlt645: {{di: "{di}"}}}}')
    lines += [
        "northbound:",
        f"  mqtt: {{host: 127.0.0.1, port: {mqtt}}}",
        f'api: {{listen: "127.0.0.1:{api}"}}',
    ]
    path = tmp / "dlt645.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def theoretical(points: int, baud: int, bits: float, turnaround: float) -> float:
    """Requests per second a never-pausing master gets from the line for these points."""
    round_bytes = [REQUEST + REPLY + DIS[i % len(DIS)][1] for i in range(points)]
    seconds = sum(b * bits / baud + turnaround for b in round_bytes)
    return points / seconds


def metrics(api: int) -> tuple[float, list[tuple[float, float]]]:
    """Requests made (all dlt645 devices) and the request round-trip histogram (cumulative,
    with the sum of round trips as a last pseudo-bucket)."""
    import httpx

    text = httpx.get(f"http://127.0.0.1:{api}/metrics", timeout=5).text
    requests = 0.0
    buckets = []
    total = 0.0
    for line in text.splitlines():
        if line.startswith("edgegw_request_duration_seconds_sum{") and 'protocol="dlt645"' in line:
            total = float(line.rsplit(" ", 1)[1])
        if line.startswith("edgegw_device_requests_total{") and 'protocol="dlt645"' in line:
            requests += float(line.rsplit(" ", 1)[1])
        if line.startswith("edgegw_request_duration_seconds_bucket{") and 'protocol="dlt645"' in line:
            le = line.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((float(le), float(line.rsplit(" ", 1)[1])))
    return requests, [*buckets, (-1.0, total)]


def quantiles(before: list[tuple[float, float]], after: list[tuple[float, float]]) -> dict:
    """p50/p99 (the upper bounds of the histogram's buckets) and the exact mean, in ms."""
    diff = [(le, a - b) for (le, a), (_, b) in zip(after, before, strict=True)]
    seconds = diff.pop()[1] if diff else 0.0
    total = diff[-1][1] if diff else 0
    out: dict = {"mean_ms": round(1000 * seconds / total, 1) if total else None}
    for name, q in (("p50_ms", 0.5), ("p99_ms", 0.99)):
        bound = next((le for le, n in diff if total and n >= q * total), None)
        out[name] = None if bound is None else (round(bound * 1000, 1) if bound != float("inf") else "inf")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--meters", type=int, default=4)
    ap.add_argument("--points", type=int, default=8)
    ap.add_argument("--baud", type=int, default=9600)
    ap.add_argument("--parity", default="N", choices=["N", "E"])
    ap.add_argument("--turnaround", type=float, default=0.02, help="the meters' reply delay, seconds")
    ap.add_argument("--seconds", type=float, default=20)
    args = ap.parse_args()
    bits = 10 if args.parity == "N" else 11
    name = f"dlt645 {args.meters}x{args.points}@{args.baud} 8{args.parity}1"
    ceiling = theoretical(args.points, args.baud, bits, args.turnaround)
    ceiling_8e1 = theoretical(args.points, args.baud, 11, args.turnaround)
    with tempfile.TemporaryDirectory(prefix="edgegw-bench-dlt645-") as t:
        tmp = Path(t)
        mqtt, api = free_port(), free_port()
        config = write_config(tmp, args.meters, args.points, args.baud, args.parity, mqtt, api)
        broker = start_mosquitto(tmp, mqtt)
        env = {**os.environ, "EDGEGW_DLT645_TURNAROUND": str(args.turnaround)}
        sim = Proc([*EDGEGW, "simulate", "-c", str(config)], tmp / "sim.log", env=env)
        sub = Subscriber(mqtt, "edgegw/gw-bench/+/data")
        gw = None
        try:
            wait_for(lambda: os.path.exists(tmp / "tty" / "bus"), 30, "the simulated bus")
            gw = Proc([*EDGEGW, "run", "-c", str(config)], tmp / "gw.log")
            wait_for(
                lambda: len({m[0] for m in list(sub.messages)}) >= args.meters, 60, "data from every meter"
            )
            time.sleep(2)
            r0, h0 = metrics(api)
            n0, c0, t0 = len(sub.messages), cpu_seconds(gw.pid), time.monotonic()
            time.sleep(args.seconds)
            n1, c1, t1 = len(sub.messages), cpu_seconds(gw.pid), time.monotonic()
            r1, h1 = metrics(api)
            rss, peak = vm(gw.pid, "VmRSS"), vm(gw.pid, "VmHWM")
        finally:
            if gw is not None:
                gw.stop()
            sim.stop()
            broker.kill()
        with sub.lock:
            batch = sub.messages[n0:n1]
        sub.stop()
    bodies = [json.loads(p) for _, p, _ in batch]
    good = sum(sum(1 for v in b["points"].values() if v["q"] != "bad") for b in bodies)
    bad = sum(sum(1 for v in b["points"].values() if v["q"] == "bad") for b in bodies)
    span = t1 - t0
    requests_per_s = (r1 - r0) / span
    result = {
        "scenario": name,
        "line": f"{args.baud} 8{args.parity}1 ({bits} bits per byte)",
        "meter_turnaround_ms": args.turnaround * 1000,
        "gateway": {
            "values_per_s": round(good / span, 2),
            "bad_values": bad,
            "requests_per_s": round(requests_per_s, 2),
            "cpu_pct": round(100 * (c1 - c0) / span, 1),
            "rss_mb": round(rss, 1),
            "peak_rss_mb": round(peak, 1),
            "request_round_trip": quantiles(h0, h1),
        },
        "theoretical_requests_per_s": round(ceiling, 2),
        "theoretical_requests_per_s_8E1": round(ceiling_8e1, 2),
        "ratio": round(requests_per_s / ceiling, 3),
        "seconds": args.seconds,
    }
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    tail = f"_turnaround{round(args.turnaround * 1000)}ms"
    (out / f"dlt645-{args.meters}x{args.points}_at_{args.baud}-8{args.parity}1{tail}.json").write_text(
        json.dumps(result, indent=2) + "\n"
    )
    g = result["gateway"]
    print(
        f"{name:<28} {g['values_per_s']} values/s, {g['requests_per_s']} requests/s "
        f"(theoretical {result['theoretical_requests_per_s']}/s at {result['line']} + "
        f"{args.turnaround * 1000:g} ms turnaround; 8E1 line: {result['theoretical_requests_per_s_8E1']}/s) "
        f"ratio {result['ratio']}  cpu {g['cpu_pct']}% rss {g['peak_rss_mb']} MB  "
        f"round trip mean {g['request_round_trip']['mean_ms']} ms, p50/p99 <= "
        f"{g['request_round_trip']['p50_ms']}/{g['request_round_trip']['p99_ms']} ms  "
        f"bad {bad}",
        flush=True,
    )


if __name__ == "__main__":
    main()
