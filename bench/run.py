"""End-to-end throughput benchmark: Modbus TCP simulators -> edgegw (store-and-forward on) ->
Mosquitto (QoS 1) -> a subscriber that counts point values and checks per-device seq.

    .venv/bin/python bench/run.py --devices 10 --points 100 --interval 1s --seconds 30

Prints one line of figures and writes bench/results/<scenario>.json. The gateway's CPU comes
from /proc/<pid>/stat (utime+stime over the measured window) and its peak RSS from VmHWM.
Latency: poll end to the broker's acknowledgement from the gateway's histogram
(`poll_to_ack_latency` in GET /api/v1/status; bucket upper bounds), and poll end (each data
message's `ts`) to arrival at the subscriber, exact percentiles; all on one clock.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from plant import (
    EDGEGW,
    ROOT,
    Proc,
    Subscriber,
    cpu_seconds,
    delivery,
    free_port,
    gateway_status,
    percentile,
    seconds,
    start_mosquitto,
    start_simulators,
    vm,
    wait_for,
    write_config,
)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, default=10)
    ap.add_argument("--points", type=int, default=100)
    ap.add_argument("--interval", default="1s")
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--sim-processes", type=int, default=2)
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="CI: print the figures, write no result file, exit 1 if any value was lost (a seq gap)",
    )
    args = ap.parse_args()
    name = f"{args.devices}x{args.points}@{args.interval}"
    with tempfile.TemporaryDirectory(prefix="edgegw-bench-") as t:
        tmp = Path(t)
        mqtt_port = free_port()
        broker = start_mosquitto(tmp, mqtt_port)
        sim_ports = [free_port() for _ in range(args.sim_processes)]
        api_port = free_port()
        full = write_config(
            tmp, args.devices, args.points, args.interval, mqtt_port, sim_ports, api_port=api_port
        )
        sims = start_simulators(tmp, full, sim_ports)
        sub = Subscriber(mqtt_port, "edgegw/gw-bench/+/data")
        gw = Proc([*EDGEGW, "run", "-c", str(full)], tmp / "gw.log")
        try:
            wait_for(lambda: len(sub.messages) >= args.devices, 60, "first data from every device")
            time.sleep(2)  # settle
            n0 = len(sub.messages)
            c0, t0 = cpu_seconds(gw.pid), time.monotonic()
            time.sleep(args.seconds)
            n1 = len(sub.messages)
            c1, t1 = cpu_seconds(gw.pid), time.monotonic()
            with sub.lock:
                window = sub.messages[n0:n1]
                arrived = sub.arrived_wall[n0:n1]
            bodies = [json.loads(p) for _, p, _ in window]
            values = sum(len(b["points"]) for b in bodies)
            # poll end (the message's ts) to arrival at this subscriber, same clock
            to_sub = [1000 * a - b["ts"] for a, b in zip(arrived, bodies, strict=True)]
            to_ack = gateway_status(api_port)["mqtt"]["poll_to_ack_latency"]
            gaps, dups = delivery(sub)
            result = {
                "scenario": name,
                "values_per_s": round(values / (t1 - t0)),
                "messages_per_s": round((n1 - n0) / (t1 - t0), 1),
                "offered_values_per_s": round(args.devices * args.points / seconds(args.interval)),
                "gateway_cpu_pct": round(100 * (c1 - c0) / (t1 - t0), 1),
                "gateway_rss_mb": round(vm(gw.pid, "VmRSS"), 1),
                "gateway_peak_rss_mb": round(vm(gw.pid, "VmHWM"), 1),
                "poll_to_ack_p50_ms": to_ack["p50_ms"],
                "poll_to_ack_p99_ms": to_ack["p99_ms"],
                "poll_to_subscriber_p50_ms": _round(percentile(to_sub, 0.5)),
                "poll_to_subscriber_p99_ms": _round(percentile(to_sub, 0.99)),
                "seq_gaps": gaps,
                "duplicates": dups,
                "seconds": args.seconds,
            }
        finally:
            gw.stop()
            sub.stop()
            for s in sims:
                s.stop()
            broker.kill()
    if not args.smoke:
        out = ROOT / "bench" / "results"
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{name.replace('@', '_at_')}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"{name:<18} values/s {result['values_per_s']:>7} (offered {result['offered_values_per_s']})  "
        f"cpu {result['gateway_cpu_pct']:>5}%  rss {result['gateway_rss_mb']} MB "
        f"(peak {result['gateway_peak_rss_mb']})  poll->ack p50/p99 {result['poll_to_ack_p50_ms']}/"
        f"{result['poll_to_ack_p99_ms']} ms  poll->subscriber p50/p99 {result['poll_to_subscriber_p50_ms']}/"
        f"{result['poll_to_subscriber_p99_ms']} ms  seq gaps {gaps}  dups {dups}"
    )
    if args.smoke:
        _check(result)


def _check(result: dict) -> None:
    if result["seq_gaps"] or not result["values_per_s"]:
        print(f"LOSS: {result['seq_gaps']} seq gaps, {result['values_per_s']} values/s delivered")
        raise SystemExit(1)


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 1)


if __name__ == "__main__":
    main()
