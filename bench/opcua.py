"""OPC UA throughput: 1 device x N nodes, gateway against a bare asyncua client, same server.

    .venv/bin/python bench/opcua.py --nodes 1000 --seconds 15
    .venv/bin/python bench/opcua.py --server source --nodes 5000 --step 0.1 --modes subscribe

The server, in its own process: `edgegw simulate` (`--server simulate`, N Double variables
changing every `--step` seconds; asyncua's write path keeps it near 6,000 changes/s) or
bench/opcua_source.py (`--server source`: every node changes every `--step`, 50,000 changes/s
at 5,000 nodes and 100 ms; it reports its changes and the notifications it puts in Publish
responses, printed for each window). In the same run, one after the other so they never
share the CPU:

- subscribe: a bare asyncua client with one subscription with the gateway's settings (same
  publishing and sampling interval, queue size 1, asyncua's event queue read with
  next_event) counting data-change events, then `edgegw run` with `mode: subscribe`,
  counted as point values arriving at Mosquitto (QoS 1, store-and-forward on);
- poll: a bare asyncua client calling Read on all N nodes back to back (one Read of N nodes,
  then Reads of 250 nodes sent together, as the gateway sends them), then `edgegw run` with
  `mode: poll` at `--poll-interval` (overruns are skipped, so it reads as fast as it can),
  counted the same way.

Prints values/s of each, the gateway/bare ratio, the CPU of the bare client and of the
gateway and the gateway's RSS, and writes bench/results/opcua-1x<N>[-source].json.
`--profile FILE` records the gateway with py-spy (raw format) during the subscribe window.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from asyncua import Client, ua
from plant import (
    EDGEGW,
    ROOT,
    Proc,
    Subscriber,
    cpu_seconds,
    free_port,
    start_mosquitto,
    vm,
    wait_for,
    wait_port,
)


def write_config(
    tmp: Path, nodes: int, opc: int, mqtt: int, mode: str, interval: str, sampling: str, digits: int = 4
) -> Path:
    lines = [
        "gateway: {id: gw-bench, data_dir: " + str(tmp / f"data-{mode}") + "}",
        "models:",
        "  bench:",
        "    points:",
    ]
    for i in range(nodes):
        lines.append(
            f"      - {{id: p{i:05d}, type: float64, range: [0, 1000], opcua: {{node: 'ns=2;s=P{i:0{digits}d}'}}}}"
        )
    lines += [
        "devices:",
        f"  - {{id: opc-1, model: bench, protocol: opcua, mode: {mode}, "
        f"connection: {{endpoint: 'opc.tcp://127.0.0.1:{opc}', timeout: 10s}}, "
        f"poll: {{interval: {interval}}}, subscription: {{sampling_interval: {sampling}}}}}",
        "northbound:",
        f"  mqtt: {{host: 127.0.0.1, port: {mqtt}}}",
    ]
    path = tmp / f"{mode}.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


async def bare_subscribe(
    endpoint: str,
    nodes: int,
    interval_ms: float,
    sampling_ms: float,
    seconds: float,
    digits: int = 4,
    stats: Path | None = None,
) -> dict[str, float]:
    """One subscription with the gateway's settings (publishing and sampling interval, queue
    size 1 on the server, asyncua's event queue of 100,000 read with next_event), counting
    data-change events; with `stats`, the server's changes and published notifications over
    the same window."""
    count = 0
    async with Client(endpoint, timeout=10) as client:
        sub = await client.create_subscription(interval_ms, None, queue_maxsize=100_000)
        ids = [client.get_node(f"ns=2;s=P{i:0{digits}d}") for i in range(nodes)]
        await sub.subscribe_data_change(ids, sampling_interval=sampling_ms, queuesize=1)

        async def drain() -> None:
            nonlocal count
            while True:
                await sub.next_event()
                count += 1

        task = asyncio.create_task(drain())
        await asyncio.sleep(2)  # initial values and settle
        s0, c0, p0, t0 = server_stats(stats), count, time.process_time(), time.monotonic()
        await asyncio.sleep(seconds)
        s1, c1, p1, t1 = server_stats(stats), count, time.process_time(), time.monotonic()
        task.cancel()
        await sub.delete()
    return {
        "values_per_s": (c1 - c0) / (t1 - t0),
        "cpu_pct": 100 * (p1 - p0) / (t1 - t0),
        **server_rates(s0, s1),
    }


def server_stats(stats: Path | None) -> dict[str, float] | None:
    return json.loads(stats.read_text()) if stats is not None else None


def server_rates(s0: dict[str, float] | None, s1: dict[str, float] | None) -> dict[str, float]:
    """The bench server's changes/s and published notifications/s between two readings."""
    if s0 is None or s1 is None or s1["t"] <= s0["t"]:
        return {}
    dt = s1["t"] - s0["t"]
    return {
        "server_changes_per_s": (s1["changes"] - s0["changes"]) / dt,
        "server_published_per_s": (s1["published"] - s0["published"]) / dt,
    }


async def bare_poll(endpoint: str, nodes: int, seconds: float, batch: int, digits: int = 4) -> float:
    """Read all nodes back to back: one Read of every node (batch = nodes), or Reads of
    `batch` nodes sent together, as the gateway does."""
    async with Client(endpoint, timeout=10) as client:
        ids = [ua.NodeId(f"P{i:0{digits}d}", 2) for i in range(nodes)]
        chunks = [ids[k : k + batch] for k in range(0, nodes, batch)]
        values = 0
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds:
            answers = await asyncio.gather(
                *(client.uaclient.read_attributes(c, ua.AttributeIds.Value) for c in chunks)
            )
            values += sum(len(a) for a in answers)
        return values / (time.monotonic() - t0)


def gateway_run(
    tmp: Path,
    config: Path,
    mqtt: int,
    seconds: float,
    stats: Path | None = None,
    profile: Path | None = None,
) -> dict[str, float]:
    sub = Subscriber(mqtt, "edgegw/gw-bench/+/data")
    gw = Proc([*EDGEGW, "run", "-c", str(config)], tmp / f"{config.stem}-gw.log")
    spy = None
    try:
        wait_for(lambda: len(sub.messages) >= 2, 60, "first data")
        time.sleep(2)
        n0 = len(sub.messages)
        s0, c0, t0 = server_stats(stats), cpu_seconds(gw.pid), time.monotonic()
        if profile is not None:
            spy = subprocess.Popen(
                [
                    *(str(Path(sys.executable).parent / "py-spy"), "record", "--nonblocking"),
                    *("--pid", str(gw.pid), "--duration", str(int(min(15, seconds))), "--rate", "200"),
                    *("--format", "raw", "-o", str(profile)),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        time.sleep(seconds)
        n1 = len(sub.messages)
        s1, c1, t1 = server_stats(stats), cpu_seconds(gw.pid), time.monotonic()
        with sub.lock:
            window = sub.messages[n0:n1]
        values = sum(
            sum(1 for p in json.loads(payload)["points"].values() if p["q"] == "good")
            for _, payload, _ in window
        )
        return {
            "values_per_s": values / (t1 - t0),
            "messages_per_s": (n1 - n0) / (t1 - t0),
            "cpu_pct": 100 * (c1 - c0) / (t1 - t0),
            "rss_mb": vm(gw.pid, "VmRSS"),
            **server_rates(s0, s1),
        }
    finally:
        if spy is not None:
            spy.wait(30)
        gw.stop()
        sub.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=15)
    ap.add_argument("--step", type=float, default=0.1, help="seconds between value changes on the server")
    ap.add_argument("--interval", default="100ms", help="publishing interval in subscribe mode")
    ap.add_argument(
        "--poll-interval", default="1ms", help="gateway poll interval in poll mode (1ms: as fast as it can)"
    )
    ap.add_argument(
        "--server",
        choices=("simulate", "source"),
        default="simulate",
        help="simulate: `edgegw simulate`; source: bench/opcua_source.py, every node changing every --step",
    )
    ap.add_argument("--modes", default="subscribe,poll", help="comma-separated: subscribe, poll")
    ap.add_argument("--profile", type=Path, help="py-spy raw profile of the gateway in subscribe mode")
    args = ap.parse_args()
    from edgegw.gateway.config.types import parse_duration

    modes = [m for m in args.modes.split(",") if m]
    interval_ms = parse_duration(args.interval) * 1000
    digits = 5 if args.server == "source" else 4
    result: dict[str, object] = {
        "scenario": f"opcua 1x{args.nodes}",
        "server": args.server,
        "server_changes_per_s_asked": round(args.nodes / args.step),
        "seconds": args.seconds,
    }
    with tempfile.TemporaryDirectory(prefix="edgegw-bench-opcua-") as t:
        tmp = Path(t)
        opc, mqtt = free_port(), free_port()
        endpoint = f"opc.tcp://127.0.0.1:{opc}"
        sub_cfg = write_config(tmp, args.nodes, opc, mqtt, "subscribe", args.interval, args.interval, digits)
        poll_cfg = write_config(tmp, args.nodes, opc, mqtt, "poll", args.poll_interval, args.interval, digits)
        broker = start_mosquitto(tmp, mqtt)
        stats: Path | None = None
        if args.server == "source":
            stats = tmp / "source-stats.json"
            sim = Proc(
                [
                    *(sys.executable, str(ROOT / "bench" / "opcua_source.py"), "--port", str(opc)),
                    *("--nodes", str(args.nodes), "--step", str(args.step), "--stats", str(stats)),
                ],
                tmp / "source.log",
            )
        else:
            # --period sets the simulator's step (period / 100)
            sim = Proc(
                [*EDGEGW, "simulate", "-c", str(sub_cfg), "--period", str(args.step * 100)], tmp / "sim.log"
            )
        try:
            wait_port(opc, 120)
            time.sleep(1)
            if "subscribe" in modes:
                bare = asyncio.run(
                    bare_subscribe(
                        endpoint, args.nodes, interval_ms, interval_ms, args.seconds, digits, stats
                    )
                )
                gw = gateway_run(tmp, sub_cfg, mqtt, args.seconds, stats, args.profile)
                result["subscribe"] = {
                    "bare_asyncua_values_per_s": round(bare["values_per_s"]),
                    "bare_asyncua_cpu_pct": round(bare["cpu_pct"], 1),
                    "gateway_values_per_s": round(gw["values_per_s"]),
                    "ratio": round(gw["values_per_s"] / bare["values_per_s"], 3)
                    if bare["values_per_s"]
                    else None,
                    "gateway_cpu_pct": round(gw["cpu_pct"], 1),
                    "gateway_rss_mb": round(gw["rss_mb"], 1),
                    "publishing_interval": args.interval,
                    **{f"{k}_bare_window": round(v) for k, v in bare.items() if k.startswith("server_")},
                    **{f"{k}_gateway_window": round(v) for k, v in gw.items() if k.startswith("server_")},
                }
            if "poll" in modes:
                bare_read = asyncio.run(bare_poll(endpoint, args.nodes, args.seconds, args.nodes, digits))
                bare_pipelined = asyncio.run(bare_poll(endpoint, args.nodes, args.seconds, 250, digits))
                gw_poll = gateway_run(tmp, poll_cfg, mqtt, args.seconds)
                result["poll"] = {
                    "bare_asyncua_values_per_s": round(bare_read),
                    "gateway_values_per_s": round(gw_poll["values_per_s"]),
                    "ratio": round(gw_poll["values_per_s"] / bare_read, 3) if bare_read else None,
                    "bare_asyncua_pipelined_values_per_s": round(bare_pipelined),
                    "ratio_to_pipelined": round(gw_poll["values_per_s"] / bare_pipelined, 3)
                    if bare_pipelined
                    else None,
                    "gateway_cpu_pct": round(gw_poll["cpu_pct"], 1),
                    "gateway_rss_mb": round(gw_poll["rss_mb"], 1),
                    "poll_interval": args.poll_interval,
                }
            result["server_cpu_seconds"] = round(cpu_seconds(sim.pid), 1)
        finally:
            sim.stop()
            broker.kill()
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    suffix = "-source" if args.server == "source" else ""
    (out / f"opcua-1x{args.nodes}{suffix}.json").write_text(json.dumps(result, indent=2) + "\n")
    name = f"opcua 1x{args.nodes}{suffix}"
    sub = result.get("subscribe")
    if isinstance(sub, dict):
        if "server_changes_per_s_bare_window" in sub:
            print(
                f"{name} server     changes {sub['server_changes_per_s_bare_window']}/s, published "
                f"{sub['server_published_per_s_bare_window']}/s (bare window); changes "
                f"{sub['server_changes_per_s_gateway_window']}/s, published "
                f"{sub['server_published_per_s_gateway_window']}/s (gateway window)"
            )
        print(
            f"{name} subscribe gateway {sub['gateway_values_per_s']:>7} values/s  "
            f"bare asyncua {sub['bare_asyncua_values_per_s']:>7} ({sub['bare_asyncua_cpu_pct']}% cpu)  "
            f"ratio {sub['ratio']}  "
            f"cpu {sub['gateway_cpu_pct']}%  rss {sub['gateway_rss_mb']} MB"
        )
    poll = result.get("poll")
    if isinstance(poll, dict):
        print(
            f"{name} poll      bare asyncua with the gateway's pipelined Reads "
            f"{poll['bare_asyncua_pipelined_values_per_s']} values/s, gateway ratio to it {poll['ratio_to_pipelined']}"
        )
        print(
            f"{name} poll      gateway {poll['gateway_values_per_s']:>7} values/s  "
            f"bare asyncua {poll['bare_asyncua_values_per_s']:>7}  ratio {poll['ratio']}  "
            f"cpu {poll['gateway_cpu_pct']}%  rss {poll['gateway_rss_mb']} MB"
        )


if __name__ == "__main__":
    main()
