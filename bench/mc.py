"""MC protocol throughput: N simulated MELSEC PLCs x P points, the gateway against a bare
asyncio client on the same simulators, with the same codec and the same planned requests.

    .venv/bin/python bench/mc.py --plcs 20 --points 200 --interval 200ms --seconds 20

`edgegw simulate` serves every PLC (one process, one port per PLC, 3E binary, Q CPU). Each
PLC's points are float32 in D (80 %), int16 in W (10 %) and bools in M (10 %), the layout of a
typical machine's register block with its status relays. In the same run, one after the other
so that they never share the CPU:

- bare: one asyncio TCP connection per PLC sending the very frames the gateway's planner makes
  (the plugin's `Codec`: batch reads and random reads), replies checked with the same codec
  (header, end code, the words), every `interval`, late cycles skipped as the gateway's
  scheduler does, counting the points answered: no decoding into values, normalisation,
  queue or MQTT;
- gateway: `edgegw run` (store-and-forward on) publishing to Mosquitto at QoS 1, counted as
  good point values arriving at a subscriber, with its CPU, RSS and poll-to-ack latency.

Prints both and the ratio, and writes bench/results/mc-<plcs>x<points>_at_<interval>.json.
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
    tmp: Path, plcs: int, points: int, interval: str, ports: list[int], mqtt: int, api: int
) -> Path:
    lines = [
        "gateway: {id: gw-bench, data_dir: " + str(tmp / "data") + "}",
        "models:",
        "  bench:",
        "    points:",
    ]
    for i in range(points):
        if i % 10 == 8:
            addr, kind = f"W{i // 10:X}", "int16, range: [0, 1000]"
        elif i % 10 == 9:
            addr, kind = f"M{i // 10}", "bool"
        else:
            addr, kind = f"D{2 * i}", "float32, range: [0, 400], unit: CEL"
        lines.append(f"      - {{id: p{i:04d}, type: {kind}, mc: {{address: {addr}}}}}")
    lines.append("devices:")
    for d, port in enumerate(ports[:plcs]):
        lines.append(
            f"  - {{id: plc-{d:03d}, model: bench, protocol: mc, "
            f"connection: {{host: 127.0.0.1, port: {port}, plc: Q, timeout: 2s}}, "
            f"poll: {{interval: {interval}}}}}"
        )
    lines += [
        "northbound:",
        f"  mqtt: {{host: 127.0.0.1, port: {mqtt}}}",
        f'api: {{listen: "127.0.0.1:{api}"}}',
    ]
    path = tmp / "mc.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


async def bare_plc(
    port: int,
    codec: object,
    frames: list[tuple[bytes, int, int, int]],
    counts: list[int],
    interval: float,
    stop: float,
) -> None:
    from edgegw.drivers.mc.codec import HEADER, Codec

    assert isinstance(codec, Codec)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = HEADER[codec.code]
    loop = asyncio.get_running_loop()
    due = loop.time()
    try:
        while loop.time() < stop:
            for frame, words, dwords, n in frames:
                try:
                    writer.write(frame)
                    header = await reader.readexactly(head)
                    data = codec.payload(await reader.readexactly(codec.body_length(header)))
                    if dwords < 0:
                        codec.words(data, words)
                    else:
                        codec.random_words(data, words, dwords)
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
        writer.close()


async def bare(config: Path, ports: list[int], interval: float, window: float) -> dict:
    from edgegw.drivers.mc.codec import codec_for
    from edgegw.drivers.mc.driver import McDriver
    from edgegw.gateway.config import load_config

    loaded = load_config(str(config))
    plan = loaded.devices[0].plan  # every PLC has the same model: the same plan
    dev = loaded.config.devices[0]
    codec = codec_for(dev.connection)  # type: ignore[attr-defined]
    # the gateway driver's own frames for the plan (built, never connected)
    frames_only = McDriver("127.0.0.1", 0, codec, 1.0, plan)  # type: ignore[arg-type]
    frames: list[tuple[bytes, int, int, int]] = []
    for req, frame in zip(plan.requests, frames_only._frames, strict=True):  # type: ignore[attr-defined]
        ranges = [plan.ranges[k] for k in req.ranges]  # type: ignore[attr-defined]
        n = sum(len(r.points) for r in ranges)
        if req.random:
            m = sum(1 for r in ranges if r.words == 1)
            frames.append((frame, m, len(ranges) - m, n))
        else:
            frames.append((frame, ranges[0].words, -1, n))
    counts = [0, 0, 0]  # values, requests, errors
    loop = asyncio.get_running_loop()
    warm = loop.time() + 3
    stop = warm + window
    tasks = [asyncio.create_task(bare_plc(p, codec, frames, counts, interval, stop)) for p in ports]
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
        "requests_per_poll": len(frames),
    }


def gateway(tmp: Path, config: Path, mqtt: int, api: int, plcs: int, window: float) -> dict:
    sub = Subscriber(mqtt, "edgegw/gw-bench/+/data")
    gw = Proc([*EDGEGW, "run", "-c", str(config)], tmp / "gw.log")
    try:
        wait_for(lambda: len({m[0] for m in list(sub.messages)}) >= plcs, 60, "data from every PLC")
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
    ap.add_argument("--plcs", type=int, default=20)
    ap.add_argument("--points", type=int, default=200)
    ap.add_argument("--interval", default="200ms")
    ap.add_argument("--seconds", type=float, default=20)
    args = ap.parse_args()
    name = f"mc {args.plcs}x{args.points}@{args.interval}"
    with tempfile.TemporaryDirectory(prefix="edgegw-bench-mc-") as t:
        tmp = Path(t)
        ports = [free_port() for _ in range(args.plcs)]
        mqtt, api = free_port(), free_port()
        config = write_config(tmp, args.plcs, args.points, args.interval, ports, mqtt, api)
        broker = start_mosquitto(tmp, mqtt)
        sim = Proc([*EDGEGW, "simulate", "-c", str(config)], tmp / "sim.log")
        try:
            for p in ports:
                wait_port(p, 60)
            ceiling = asyncio.run(bare(config, ports, seconds(args.interval), args.seconds))
            gw = gateway(tmp, config, mqtt, api, args.plcs, args.seconds)
        finally:
            sim.stop()
            broker.kill()
    offered = round(args.plcs * args.points / seconds(args.interval))
    result = {
        "scenario": name,
        "offered_values_per_s": offered,
        "gateway": gw,
        "bare_asyncio_client": ceiling,
        "ratio_to_bare": round(gw["values_per_s"] / ceiling["values_per_s"], 3)
        if ceiling["values_per_s"]
        else None,
        "seconds": args.seconds,
    }
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"mc-{args.plcs}x{args.points}_at_{args.interval}.json").write_text(
        json.dumps(result, indent=2) + "\n"
    )
    print(
        f"{name:<24} gateway {gw['values_per_s']:>7} values/s (offered {offered}) cpu {gw['cpu_pct']}% "
        f"rss {gw['peak_rss_mb']} MB  poll->ack p50/p99 {gw['poll_to_ack_p50_ms']}/{gw['poll_to_ack_p99_ms']} ms  "
        f"gaps {gw['seq_gaps']}\n{'':<24} bare asyncio client {ceiling['values_per_s']:>7} values/s "
        f"cpu {ceiling['cpu_pct']}% ({ceiling['requests_per_poll']} requests/poll, errors {ceiling['errors']})  "
        f"ratio {result['ratio_to_bare']}",
        flush=True,
    )


if __name__ == "__main__":
    main()
