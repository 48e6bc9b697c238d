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
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from plant import (
    EDGEGW,
    ROOT,
    Proc,
    Subscriber,
    ack_buckets,
    cpu_seconds,
    delivery,
    free_port,
    gateway_status,
    percentile,
    seconds,
    start_mosquitto,
    start_simulators,
    start_sources,
    vm,
    wait_for,
    window_percentiles,
    write_config,
)

SCENARIOS = [
    # (devices, points, interval, publish, share of values changing, server processes, servers)
    (10, 100, "1s", "always", 1.0, 1, "simulate"),
    (200, 100, "1s", "always", 1.0, 2, "simulate"),
    (1000, 100, "1s", "always", 1.0, 4, "simulate"),
    (200, 100, "200ms", "always", 1.0, 3, "simulate"),
    (200, 100, "100ms", "always", 1.0, 4, "simulate"),
    (200, 100, "100ms", "always", 1.0, 2, "source"),
    (200, 100, "1s", "on_change", 0.1, 2, "simulate"),
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--all", action="store_true", help="run every scenario, then print the table")
    ap.add_argument("--devices", type=int, default=10)
    ap.add_argument("--points", type=int, default=100)
    ap.add_argument("--interval", default="1s")
    ap.add_argument("--publish", choices=["always", "on_change"], default="always")
    ap.add_argument("--changing", type=float, default=1.0, help="share of the values that change")
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--computed", type=int, default=0, help="computed points per device (besides --points)")
    ap.add_argument("--sim-processes", type=int, default=2)
    ap.add_argument(
        "--server",
        choices=["simulate", "source"],
        default="simulate",
        help="the Modbus servers: edgegw simulate, or bench/modbus_source.py (cheap: shows the gateway's own limit)",
    )
    ap.add_argument("--no-ceiling", action="store_true", help="skip the bare pymodbus client run")
    ap.add_argument(
        "--profile",
        metavar="FILE",
        help="record the gateway with py-spy over the measured window (collapsed stacks; FILE.svg too)",
    )
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="CI: print the figures, no ceiling, no result file; exit 1 if any value was lost (a seq gap)",
    )
    args = ap.parse_args()
    if args.all:
        results = [
            scenario(d, p, i, pub, ch, sims, args.seconds, ceiling=not args.no_ceiling, server=srv)
            for d, p, i, pub, ch, sims, srv in SCENARIOS
        ]
        for r in results:
            save(r)
        table(results)
        return
    result = scenario(
        args.devices,
        args.points,
        args.interval,
        args.publish,
        args.changing,
        args.sim_processes,
        args.seconds,
        ceiling=not (args.no_ceiling or args.smoke),
        computed=args.computed,
        profile=args.profile,
        server=args.server,
    )
    if args.smoke:
        _check(result)
    else:
        save(result)


def scenario(
    devices: int,
    points: int,
    interval: str,
    publish: str,
    changing: float,
    sim_processes: int,
    window: float,
    ceiling: bool,
    computed: int = 0,
    profile: str | None = None,
    server: str = "simulate",
) -> dict:
    name = f"{devices}x{points}@{interval}" + (f"-on_change-{changing:.0%}" if publish == "on_change" else "")
    name += f"+{computed}computed" if computed else ""
    name += "-source" if server == "source" else ""
    with tempfile.TemporaryDirectory(prefix="edgegw-bench-") as t:
        tmp = Path(t)
        mqtt_port = free_port()
        broker = start_mosquitto(tmp, mqtt_port)
        sim_ports = [free_port() for _ in range(sim_processes)]
        api_port = free_port()
        full = write_config(
            tmp,
            devices,
            points,
            interval,
            mqtt_port,
            sim_ports,
            api_port=api_port,
            publish=publish,
            changing=changing,
            computed=computed,
        )
        t_validate = time.monotonic()
        subprocess.run([*EDGEGW, "validate", "-c", str(full)], check=True, capture_output=True)
        validate_s = time.monotonic() - t_validate
        if server == "source":
            sims = start_sources(tmp, sim_ports, round(points * changing))
        else:
            sims = start_simulators(tmp, full, sim_ports)
        sub = Subscriber(mqtt_port, "edgegw/gw-bench/+/data")
        try:
            t_spawn = time.monotonic()
            gw = Proc([*EDGEGW, "run", "-c", str(full)], tmp / "gw.log")
            try:
                wait_for(lambda: len(sub.messages) >= 1, 60, "first data message")
                first_s = time.monotonic() - t_spawn
                wait_for(
                    lambda: len({m[0] for m in list(sub.messages)}) >= devices, 60, "data from every device"
                )
                every_s = time.monotonic() - t_spawn
                time.sleep(2)  # settle
                h0, (s0, st0) = ack_buckets(api_port), samples(api_port)
                spy = start_profile(gw.pid, window, profile) if profile else None
                others = {
                    "simulators": [s.pid for s in sims],
                    "broker": [broker.pid],
                    "subscriber": [os.getpid()],
                }
                o0 = {k: sum(map(cpu_seconds, pids)) for k, pids in others.items()}
                n0, c0, t0 = len(sub.messages), cpu_seconds(gw.pid), time.monotonic()
                time.sleep(window)
                n1, c1, t1 = len(sub.messages), cpu_seconds(gw.pid), time.monotonic()
                o1 = {k: sum(map(cpu_seconds, pids)) for k, pids in others.items()}
                s1, st1 = samples(api_port)
                to_ack = window_percentiles(h0, ack_buckets(api_port))
                rss, peak = vm(gw.pid, "VmRSS"), vm(gw.pid, "VmHWM")
                if spy:
                    spy.wait(timeout=60)
            finally:
                gw.stop()
            with sub.lock:
                batch = sub.messages[n0:n1]
                arrived = sub.arrived_wall[n0:n1]
            bodies = [json.loads(p) for _, p, _ in batch]
            values = sum(len(b["points"]) for b in bodies)
            # poll end (the message's ts) to arrival at this subscriber, same clock
            to_sub = [1000 * a - b["ts"] for a, b in zip(arrived, bodies, strict=True)]
            gaps, dups = delivery(sub)
            span = t1 - t0
            result = {
                "scenario": name,
                "devices": devices,
                "points": points,
                "interval": interval,
                "publish": publish,
                "offered_values_per_s": round(devices * points / seconds(interval)),
                # every poll is a sample of all the device's points, published or not (on_change)
                "polled_values_per_s": round((s1 - s0) * points / (st1 - st0)),
                "values_per_s": round(values / span),
                "messages_per_s": round((n1 - n0) / span, 1),
                "gateway_cpu_pct": round(100 * (c1 - c0) / span, 1),
                # the rest of the box over the same window: on 2 cores, what the gateway leaves
                # for the simulators decides how fast they answer when overloaded
                "others_cpu_pct": {k: round(100 * (o1[k] - o0[k]) / span, 1) for k in others},
                "gateway_rss_mb": round(rss, 1),
                "gateway_peak_rss_mb": round(peak, 1),
                "rss_kb_per_point": round(1024 * peak / (devices * points), 2),
                "poll_to_ack_p50_ms": to_ack["p50_ms"],
                "poll_to_ack_p99_ms": to_ack["p99_ms"],
                "poll_to_subscriber_p50_ms": _round(percentile(to_sub, 0.5)),
                "poll_to_subscriber_p99_ms": _round(percentile(to_sub, 0.99)),
                "seq_gaps": gaps,
                "duplicates": dups,
                "validate_s": round(validate_s, 2),
                "first_publish_s": round(first_s, 2),
                "every_device_published_s": round(every_s, 2),
                "simulator_processes": sim_processes,
                "server": server,
                "seconds": window,
            }
            if ceiling:
                bare = bare_client(devices, points, interval, sim_ports, window)
                result["ceiling"] = bare
                result["ratio_to_ceiling"] = (
                    round(result["polled_values_per_s"] / bare["values_per_s"], 2)
                    if bare["values_per_s"]
                    else None
                )
        finally:
            sub.stop()
            for s in sims:
                s.stop()
            broker.kill()
    print(line(result), flush=True)
    return result


def start_profile(pid: int, window: float, out: str) -> subprocess.Popen:
    """py-spy, sampling without pausing the gateway (--nonblocking), so the CPU figure stays
    the gateway's own; collapsed stacks, one line per stack with its sample count."""
    spy = Path(sys.executable).with_name("py-spy")
    extra = os.environ.get("EDGEGW_PYSPY", "").split()  # e.g. --gil: only samples holding the GIL
    return subprocess.Popen(
        [
            str(spy),
            "record",
            "--nonblocking",
            "--pid",
            str(pid),
            "--duration",
            str(int(window)),
            "--rate",
            "200",
            "--format",
            "raw",
            *extra,
            "--output",
            out,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def samples(api_port: int) -> tuple[int, float]:
    """The gateway's sample count, and when it was read (the middle of the request)."""
    before = time.monotonic()
    n = gateway_status(api_port)["samples"]
    return n, (before + time.monotonic()) / 2


def bare_client(devices: int, points: int, interval: str, ports: list[int], window: float) -> dict:
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "ceiling.py"),
            f"--devices={devices}",
            f"--points={points}",
            f"--interval={interval}",
            "--ports=" + ",".join(map(str, ports)),
            f"--seconds={window}",
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def line(r: dict) -> str:
    ceiling = r.get("ceiling")
    tail = (
        f"  ceiling {ceiling['values_per_s']} values/s at {ceiling['cpu_pct']}% cpu  ratio {r['ratio_to_ceiling']}"
        if ceiling
        else ""
    )
    return (
        f"{r['scenario']:<26} values/s {r['values_per_s']:>7} (polled {r['polled_values_per_s']}, "
        f"offered {r['offered_values_per_s']})  cpu {r['gateway_cpu_pct']:>5}%  rss {r['gateway_rss_mb']} MB "
        f"(peak {r['gateway_peak_rss_mb']}, {r['rss_kb_per_point']} kB/point)  "
        f"poll->ack p50/p99 {r['poll_to_ack_p50_ms']}/{r['poll_to_ack_p99_ms']} ms  "
        f"poll->subscriber p50/p99 {r['poll_to_subscriber_p50_ms']}/{r['poll_to_subscriber_p99_ms']} ms  "
        f"seq gaps {r['seq_gaps']}  dups {r['duplicates']}  validate {r['validate_s']} s  "
        f"first publish {r['first_publish_s']} s  others cpu {r.get('others_cpu_pct')}{tail}"
    )


def save(result: dict) -> None:
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    name = result["scenario"].replace("@", "_at_").replace("%", "pct")
    (out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")


def table(results: list[dict]) -> None:
    """The README's table, in Markdown."""
    print()
    print(
        "| scenario | values/s delivered | polled | ceiling (bare pymodbus) | ratio | gateway CPU |"
        " CPU per 1,000 values/s | servers' CPU | peak RSS | poll→ack p50/p99 | poll→subscriber p50/p99 | seq gaps |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        c = r.get("ceiling", {})
        per = 1000 * r["gateway_cpu_pct"] / r["polled_values_per_s"] if r["polled_values_per_s"] else 0
        print(
            f"| {r['scenario']} | {r['values_per_s']:,} | {r['polled_values_per_s']:,} | "
            f"{c.get('values_per_s', 0):,} ({c.get('cpu_pct', '-')} % CPU) | {r.get('ratio_to_ceiling')} | "
            f"{r['gateway_cpu_pct']} % | {per:.2f} % | {r['others_cpu_pct']['simulators']} % | "
            f"{r['gateway_peak_rss_mb']} MB | "
            f"≤{r['poll_to_ack_p50_ms']}/≤{r['poll_to_ack_p99_ms']} ms | "
            f"{r['poll_to_subscriber_p50_ms']}/{r['poll_to_subscriber_p99_ms']} ms | {r['seq_gaps']} |"
        )
    small = next((r for r in results if r["devices"] * r["points"] == 1000), None)
    big = max(results, key=lambda r: r["devices"] * r["points"])
    if small and big is not small:
        extra = big["devices"] * big["points"] - small["devices"] * small["points"]
        per = 1024 * (big["gateway_peak_rss_mb"] - small["gateway_peak_rss_mb"]) / extra
        print(
            f"\nmemory per configured point: {per:.2f} kB ({small['scenario']} -> {big['scenario']}); "
            f"{big['scenario']}: validate {big['validate_s']} s, first publish {big['first_publish_s']} s, "
            f"every device published {big['every_device_published_s']} s"
        )


def _check(result: dict) -> None:
    if result["seq_gaps"] or not result["values_per_s"]:
        print(f"LOSS: {result['seq_gaps']} seq gaps, {result['values_per_s']} values/s delivered")
        raise SystemExit(1)


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 1)


if __name__ == "__main__":
    main()
