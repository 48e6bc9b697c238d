"""The ceiling for a scenario: a bare pymodbus client loop making the requests edgegw makes.

One AsyncModbusTcpClient per device (as the gateway's driver), on the same simulators and unit
ids, on the same schedule (every `interval`, late cycles skipped), reading the same register
blocks (up to 125 registers a request), and doing nothing with the answers but count them: no
decoding, normalisation, queue or MQTT. What it reaches is what the library and the simulators
can deliver to a Python process on this machine; the gateway's figure over it is the ratio.

    .venv/bin/python bench/ceiling.py --devices 200 --points 100 --interval 100ms \
        --ports 40001,40002,40003 --seconds 20

Prints one JSON line: values_per_s, requests_per_s, cpu_pct (its own, from /proc), errors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import time

from plant import cpu_seconds, seconds
from pymodbus.client import AsyncModbusTcpClient

MAX_REGISTERS = 125


async def device_loop(
    port: int, unit: int, points: int, interval: float, stop: float, counts: list[int]
) -> None:
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=3, retries=0, reconnect_delay=0)
    await client.connect()
    blocks = [(s, min(MAX_REGISTERS, points - s)) for s in range(0, points, MAX_REGISTERS)]
    loop = asyncio.get_running_loop()
    due = loop.time()
    try:
        while loop.time() < stop:
            for start, count in blocks:
                try:
                    rr = await client.read_holding_registers(start, count=count, device_id=unit)
                except Exception:  # counted, the loop goes on
                    counts[2] += 1
                    continue
                counts[1] += 1
                if rr.isError():
                    counts[2] += 1
                else:
                    counts[0] += len(rr.registers)
            due += interval
            now = loop.time()
            if due < now:  # late: skip the missed cycles, as the gateway's scheduler does
                due += ((now - due) // interval + 1) * interval
            await asyncio.sleep(due - now)
    finally:
        client.close()


async def run(args: argparse.Namespace) -> dict:
    ports = [int(p) for p in args.ports.split(",")]
    interval = seconds(args.interval)
    loop = asyncio.get_running_loop()
    warm = loop.time() + args.warmup
    stop = warm + args.seconds
    counts = [0, 0, 0]  # values, requests, errors
    tasks = [
        asyncio.create_task(
            device_loop(ports[d % len(ports)], d // len(ports) % 247 + 1, args.points, interval, stop, counts)
        )
        for d in range(args.devices)
    ]
    await asyncio.sleep(max(0.0, warm - loop.time()))
    n0, c0, t0 = list(counts), cpu_seconds_self(), time.monotonic()
    await asyncio.sleep(max(0.0, stop - loop.time()))
    n1, c1, t1 = list(counts), cpu_seconds_self(), time.monotonic()
    await asyncio.gather(*tasks, return_exceptions=True)
    span = t1 - t0
    return {
        "values_per_s": round((n1[0] - n0[0]) / span),
        "requests_per_s": round((n1[1] - n0[1]) / span, 1),
        "cpu_pct": round(100 * (c1 - c0) / span, 1),
        "errors": n1[2] - n0[2],
    }


def cpu_seconds_self() -> float:
    import os

    return cpu_seconds(os.getpid())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, required=True)
    ap.add_argument("--points", type=int, required=True)
    ap.add_argument("--interval", required=True)
    ap.add_argument("--ports", required=True, help="simulator ports, comma-separated")
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--warmup", type=float, default=3)
    args = ap.parse_args()
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    print(json.dumps(asyncio.run(run(args))))


if __name__ == "__main__":
    main()
