"""OPC UA throughput: 1 device x N nodes, gateway against a bare asyncua client, same server.

    .venv/bin/python bench/opcua.py --nodes 1000 --seconds 15

`edgegw simulate` serves N Double variables changing every `--step` seconds (its own
process). In the same run, one after the other so they never share the CPU:

- subscribe: a bare asyncua client with one subscription (same publishing and sampling
  interval) counting data-change notifications, then `edgegw run` with `mode: subscribe`,
  counted as point values arriving at Mosquitto (QoS 1, store-and-forward on);
- poll: a bare asyncua client calling Read on all N nodes back to back (one Read of N nodes,
  then Reads of 250 nodes sent together, as the gateway sends them), then `edgegw run` with
  `mode: poll` at `--poll-interval` (overruns are skipped, so it reads as fast as it can),
  counted the same way.

Prints values/s of each, the gateway/bare ratio, the gateway's CPU and RSS, and writes
bench/results/opcua-1x<N>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
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


def write_config(tmp: Path, nodes: int, opc: int, mqtt: int, mode: str, interval: str, sampling: str) -> Path:
    lines = [
        "gateway: {id: gw-bench, data_dir: " + str(tmp / f"data-{mode}") + "}",
        "models:",
        "  bench:",
        "    points:",
    ]
    for i in range(nodes):
        lines.append(
            f"      - {{id: p{i:04d}, type: float64, range: [0, 1000], opcua: {{node: 'ns=2;s=P{i:04d}'}}}}"
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
    endpoint: str, nodes: int, interval_ms: float, sampling_ms: float, seconds: float
) -> float:
    count = 0

    class Handler:
        def datachange_notification(self, node: object, val: object, data: object) -> None:
            nonlocal count
            count += 1

    async with Client(endpoint, timeout=10) as client:
        sub = await client.create_subscription(interval_ms, Handler())
        ids = [client.get_node(f"ns=2;s=P{i:04d}") for i in range(nodes)]
        await sub.subscribe_data_change(ids, sampling_interval=sampling_ms)
        await asyncio.sleep(2)  # initial values and settle
        c0, t0 = count, time.monotonic()
        await asyncio.sleep(seconds)
        c1, t1 = count, time.monotonic()
        await sub.delete()
    return (c1 - c0) / (t1 - t0)


async def bare_poll(endpoint: str, nodes: int, seconds: float, batch: int) -> float:
    """Read all nodes back to back: one Read of every node (batch = nodes), or Reads of
    `batch` nodes sent together, as the gateway does."""
    async with Client(endpoint, timeout=10) as client:
        ids = [ua.NodeId(f"P{i:04d}", 2) for i in range(nodes)]
        chunks = [ids[k : k + batch] for k in range(0, nodes, batch)]
        values = 0
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds:
            answers = await asyncio.gather(
                *(client.uaclient.read_attributes(c, ua.AttributeIds.Value) for c in chunks)
            )
            values += sum(len(a) for a in answers)
        return values / (time.monotonic() - t0)


def gateway_run(tmp: Path, config: Path, mqtt: int, seconds: float) -> dict[str, float]:
    sub = Subscriber(mqtt, "edgegw/gw-bench/+/data")
    gw = Proc([*EDGEGW, "run", "-c", str(config)], tmp / f"{config.stem}-gw.log")
    try:
        wait_for(lambda: len(sub.messages) >= 2, 60, "first data")
        time.sleep(2)
        n0 = len(sub.messages)
        c0, t0 = cpu_seconds(gw.pid), time.monotonic()
        time.sleep(seconds)
        n1 = len(sub.messages)
        c1, t1 = cpu_seconds(gw.pid), time.monotonic()
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
        }
    finally:
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
    args = ap.parse_args()
    from edgegw.gateway.config.types import parse_duration

    interval_ms = parse_duration(args.interval) * 1000
    with tempfile.TemporaryDirectory(prefix="edgegw-bench-opcua-") as t:
        tmp = Path(t)
        opc, mqtt = free_port(), free_port()
        endpoint = f"opc.tcp://127.0.0.1:{opc}"
        sub_cfg = write_config(tmp, args.nodes, opc, mqtt, "subscribe", args.interval, args.interval)
        poll_cfg = write_config(tmp, args.nodes, opc, mqtt, "poll", args.poll_interval, args.interval)
        broker = start_mosquitto(tmp, mqtt)
        # --period sets the simulator's step (period / 100)
        sim = Proc(
            [*EDGEGW, "simulate", "-c", str(sub_cfg), "--period", str(args.step * 100)], tmp / "sim.log"
        )
        try:
            wait_port(opc, 60)
            time.sleep(1)
            bare_sub = asyncio.run(
                bare_subscribe(endpoint, args.nodes, interval_ms, interval_ms, args.seconds)
            )
            gw_sub = gateway_run(tmp, sub_cfg, mqtt, args.seconds)
            bare_read = asyncio.run(bare_poll(endpoint, args.nodes, args.seconds, args.nodes))
            bare_pipelined = asyncio.run(bare_poll(endpoint, args.nodes, args.seconds, 250))
            gw_poll = gateway_run(tmp, poll_cfg, mqtt, args.seconds)
            sim_cpu = cpu_seconds(sim.pid)
        finally:
            sim.stop()
            broker.kill()
    result = {
        "scenario": f"opcua 1x{args.nodes}",
        "server_changes_per_s": round(args.nodes / args.step),
        "subscribe": {
            "bare_asyncua_values_per_s": round(bare_sub),
            "gateway_values_per_s": round(gw_sub["values_per_s"]),
            "ratio": round(gw_sub["values_per_s"] / bare_sub, 3) if bare_sub else None,
            "gateway_cpu_pct": round(gw_sub["cpu_pct"], 1),
            "gateway_rss_mb": round(gw_sub["rss_mb"], 1),
            "publishing_interval": args.interval,
        },
        "poll": {
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
        },
        "simulator_cpu_seconds": round(sim_cpu, 1),
        "seconds": args.seconds,
    }
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"opcua-1x{args.nodes}.json").write_text(json.dumps(result, indent=2) + "\n")
    for mode in ("subscribe", "poll"):
        r = result[mode]
        if mode == "poll":
            print(
                f"opcua 1x{args.nodes} poll      bare asyncua with the gateway's pipelined Reads "
                f"{r['bare_asyncua_pipelined_values_per_s']} values/s, gateway ratio to it {r['ratio_to_pipelined']}"  # type: ignore[index]
            )
        print(
            f"opcua 1x{args.nodes} {mode:<9} gateway {r['gateway_values_per_s']:>7} values/s  "  # type: ignore[index]
            f"bare asyncua {r['bare_asyncua_values_per_s']:>7}  ratio {r['ratio']}  "  # type: ignore[index]
            f"cpu {r['gateway_cpu_pct']}%  rss {r['gateway_rss_mb']} MB"  # type: ignore[index]
        )


if __name__ == "__main__":
    main()
