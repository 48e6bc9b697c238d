"""S7 throughput: N simulated CPUs x P points, the gateway against a bare python-snap7 client on
the same servers, same areas, same schedule.

    .venv/bin/python bench/s7.py --cpus 20 --points 200 --interval 200ms --seconds 20

`edgegw simulate` serves every CPU on python-snap7's server (one process, one port per CPU).
Each CPU's points are REALs in DB1, INTs in DB2 and bools in M: 80/10/10, the layout of a
typical machine DB with its status bits. In the same run, one after the other so that they
never share the CPU:

- bare: one python-snap7 `AsyncISOTCPConnection` per CPU (TSAPs, PDU negotiation), sending the
  very multi-variable reads the gateway's planner makes (`S7Protocol.build_multi_read_request`,
  replies parsed by the library's `extract_multi_read_data`) every `interval`, late cycles
  skipped as the gateway's scheduler does, and counting the points answered: no decoding,
  normalisation, queue or MQTT;
- gateway: `edgegw run` (store-and-forward on) publishing to Mosquitto at QoS 1, counted as
  good point values arriving at a subscriber, with its CPU, RSS and poll-to-ack latency.

Prints both and the ratio, and writes bench/results/s7-<cpus>x<points>_at_<interval>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
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
    percentile,
    seconds,
    start_mosquitto,
    vm,
    wait_for,
    wait_port,
    window_percentiles,
)


def write_config(
    tmp: Path, cpus: int, points: int, interval: str, ports: list[int], mqtt: int, api: int
) -> Path:
    lines = [
        "gateway: {id: gw-bench, data_dir: " + str(tmp / "data") + "}",
        "models:",
        "  bench:",
        "    points:",
    ]
    for i in range(points):
        if i % 10 == 8:
            addr, kind = f"DB2.DBW{2 * (i // 10)}", "int16, range: [0, 1000]"
        elif i % 10 == 9:
            addr, kind = f"M{i // 80}.{i // 10 % 8}", "bool"
        else:
            addr, kind = f"DB1.DBD{4 * i}", "float32, range: [0, 400], unit: CEL"
        lines.append(f"      - {{id: p{i:04d}, type: {kind}, s7: {{address: {addr}}}}}")
    lines.append("devices:")
    for d, port in enumerate(ports[:cpus]):
        lines.append(
            f"  - {{id: cpu-{d:03d}, model: bench, protocol: s7, "
            f"connection: {{host: 127.0.0.1, port: {port}, plc: s7-1500, timeout: 2s}}, "
            f"poll: {{interval: {interval}}}}}"
        )
    lines += [
        "northbound:",
        f"  mqtt: {{host: 127.0.0.1, port: {mqtt}}}",
        f'api: {{listen: "127.0.0.1:{api}"}}',
    ]
    path = tmp / "s7.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


async def bare_cpu(
    port: int,
    requests: list[list[tuple[int, int, int, int]]],
    counts: list[int],
    points_per_request: list[int],
    interval: float,
    warm: float,
    stop: float,
) -> None:
    from snap7.async_client import AsyncISOTCPConnection
    from snap7.s7protocol import S7Protocol

    proto = S7Protocol()
    conn = AsyncISOTCPConnection("127.0.0.1", port, 0x0100, 0x0101)
    await conn.connect(5.0)
    await conn.send_data(proto.build_setup_communication_request(1, 1, 480))
    await conn.receive_data()
    loop = asyncio.get_running_loop()
    due = loop.time()
    try:
        while loop.time() < stop:
            for items, n in zip(requests, points_per_request, strict=True):
                try:
                    await conn.send_data(proto.build_multi_read_request(items))
                    reply = proto.parse_response(await conn.receive_data())
                    proto.extract_multi_read_data(reply, len(items))
                except Exception:
                    counts[2] += 1
                    continue
                counts[1] += 1
                counts[0] += n
            due += interval
            now = loop.time()
            if due < now:  # late: skip the missed cycles, as the gateway's scheduler does
                due += ((now - due) // interval + 1) * interval
            await asyncio.sleep(due - now)
    finally:
        await conn.disconnect()


async def bare(config: Path, ports: list[int], interval: float, window: float) -> dict:
    from edgegw.gateway.config import load_config

    loaded = load_config(str(config))
    plan = loaded.devices[0].plan  # every CPU has the same model: the same plan
    requests = [
        [(plan.ranges[i.range].area, plan.ranges[i.range].db, i.start, i.size) for i in r.items]  # type: ignore[attr-defined]
        for r in plan.requests  # type: ignore[attr-defined]
    ]
    # the points each request completes (a range split across requests counts where it ends)
    last: dict[int, int] = {}
    for n, r in enumerate(plan.requests):  # type: ignore[attr-defined]
        for i in r.items:
            last[i.range] = n
    per_request = [0] * len(requests)
    for k, r in enumerate(plan.ranges):  # type: ignore[attr-defined]
        per_request[last[k]] += len(r.points)
    counts = [0, 0, 0]  # values, requests, errors
    loop = asyncio.get_running_loop()
    warm = loop.time() + 3
    stop = warm + window
    tasks = [
        asyncio.create_task(bare_cpu(p, requests, counts, per_request, interval, warm, stop)) for p in ports
    ]
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
        "requests_per_poll": len(requests),
    }


def gateway(tmp: Path, config: Path, mqtt: int, api: int, cpus: int, window: float) -> dict:
    sub = Subscriber(mqtt, "edgegw/gw-bench/+/data")
    gw = Proc([*EDGEGW, "run", "-c", str(config)], tmp / "gw.log")
    try:
        wait_for(lambda: len({m[0] for m in list(sub.messages)}) >= cpus, 60, "data from every CPU")
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cpus", type=int, default=20)
    ap.add_argument("--points", type=int, default=200)
    ap.add_argument("--interval", default="200ms")
    ap.add_argument("--seconds", type=float, default=20)
    args = ap.parse_args()
    name = f"s7 {args.cpus}x{args.points}@{args.interval}"
    with tempfile.TemporaryDirectory(prefix="edgegw-bench-s7-") as t:
        tmp = Path(t)
        ports = [free_port() for _ in range(args.cpus)]
        mqtt, api = free_port(), free_port()
        config = write_config(tmp, args.cpus, args.points, args.interval, ports, mqtt, api)
        broker = start_mosquitto(tmp, mqtt)
        sim = Proc([*EDGEGW, "simulate", "-c", str(config)], tmp / "sim.log")
        try:
            for p in ports:
                wait_port(p, 60)
            ceiling = asyncio.run(bare(config, ports, seconds(args.interval), args.seconds))
            gw = gateway(tmp, config, mqtt, api, args.cpus, args.seconds)
        finally:
            sim.stop()
            broker.kill()
    offered = round(args.cpus * args.points / seconds(args.interval))
    result = {
        "scenario": name,
        "offered_values_per_s": offered,
        "gateway": gw,
        "bare_python_snap7": ceiling,
        "ratio_to_bare": round(gw["values_per_s"] / ceiling["values_per_s"], 3)
        if ceiling["values_per_s"]
        else None,
        "seconds": args.seconds,
    }
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"s7-{args.cpus}x{args.points}_at_{args.interval}.json").write_text(
        json.dumps(result, indent=2) + "\n"
    )
    print(
        f"{name:<24} gateway {gw['values_per_s']:>7} values/s (offered {offered}) cpu {gw['cpu_pct']}% "
        f"rss {gw['peak_rss_mb']} MB  poll->ack p50/p99 {gw['poll_to_ack_p50_ms']}/{gw['poll_to_ack_p99_ms']} ms  "
        f"gaps {gw['seq_gaps']}\n{'':<24} bare python-snap7 {ceiling['values_per_s']:>7} values/s "
        f"cpu {ceiling['cpu_pct']}% ({ceiling['requests_per_poll']} requests/poll, errors {ceiling['errors']})  "
        f"ratio {result['ratio_to_bare']}",
        flush=True,
    )


if __name__ == "__main__":
    main()
