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
from pathlib import Path

from plant import bare_window, plc_bench


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
    return await bare_window(tasks, counts, warm, stop, len(frames))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--plcs", type=int, default=20)
    ap.add_argument("--points", type=int, default=200)
    ap.add_argument("--interval", default="200ms")
    ap.add_argument("--seconds", type=float, default=20)
    args = ap.parse_args()
    plc_bench(
        "mc",
        args.plcs,
        args.points,
        args.interval,
        args.seconds,
        write_config,
        bare,
        "bare_asyncio_client",
        "bare asyncio client",
        "PLC",
    )


if __name__ == "__main__":
    main()
