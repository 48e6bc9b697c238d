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
from pathlib import Path

from plant import bare_window, plc_bench


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
    return await bare_window(tasks, counts, warm, stop, len(requests))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cpus", type=int, default=20)
    ap.add_argument("--points", type=int, default=200)
    ap.add_argument("--interval", default="200ms")
    ap.add_argument("--seconds", type=float, default=20)
    args = ap.parse_args()
    plc_bench(
        "s7",
        args.cpus,
        args.points,
        args.interval,
        args.seconds,
        write_config,
        bare,
        "bare_python_snap7",
        "bare python-snap7",
        "CPU",
    )


if __name__ == "__main__":
    main()
