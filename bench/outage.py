"""Broker outage benchmark: how fast the backlog drains, and how much disk it takes.

    .venv/bin/python bench/outage.py --devices 100 --points 100 --interval 1s --outage 300

Polls N devices into a persistent Mosquitto with a persistent-session subscriber, stops the
broker for `--outage` seconds, starts it again, and measures:

- the queue's growth on disk during the outage (file + WAL), and so its use per hour;
- the gateway's replay (its "backlog replayed" log line: messages, seconds, messages/s);
- catch-up: the time until the subscriber holds every seq issued before the reconnect;
- seq gaps and duplicates over the whole run (must be 0 gaps).

Prints one line and writes bench/results/outage-<scenario>.json.
"""

from __future__ import annotations

import argparse
import json
import re
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
    seconds,
    start_mosquitto,
    start_simulators,
    vm,
    wait_for,
    write_config,
)


def queue_bytes(data_dir: Path) -> int:
    return sum(p.stat().st_size for p in data_dir.glob("queue.sqlite3*") if p.is_file())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, default=100)
    ap.add_argument("--points", type=int, default=100)
    ap.add_argument("--interval", default="1s")
    ap.add_argument("--outage", type=float, default=300, help="seconds the broker is down")
    ap.add_argument("--replay-rate", type=float, default=2000, help="buffer.replay_rate (0 = unpaced)")
    ap.add_argument("--sim-processes", type=int, default=2)
    args = ap.parse_args()
    name = f"{args.devices}x{args.points}@{args.interval}-down{args.outage:g}s-rate{args.replay_rate:g}"
    offered = args.devices * args.points / seconds(args.interval)
    with tempfile.TemporaryDirectory(prefix="edgegw-outage-") as t:
        tmp = Path(t)
        mqtt_port = free_port()
        broker = start_mosquitto(tmp, mqtt_port, persistent=True)
        sim_ports = [free_port() for _ in range(args.sim_processes)]
        full = write_config(
            tmp,
            args.devices,
            args.points,
            args.interval,
            mqtt_port,
            sim_ports,
            mqtt_extra=f"reconnect_max: 2s, buffer: {{replay_rate: {args.replay_rate}}}",
        )
        sims = start_simulators(tmp, full, sim_ports)
        sub = Subscriber(mqtt_port, "edgegw/gw-bench/+/data", persistent=True)
        gw = Proc([*EDGEGW, "run", "-c", str(full)], tmp / "gw.log")
        data_dir = tmp / "data"
        try:
            wait_for(lambda: len(sub.messages) >= args.devices, 60, "first data from every device")
            time.sleep(3)
            size0 = queue_bytes(data_dir)
            broker.stop()
            down = time.monotonic()
            time.sleep(args.outage)
            size1 = queue_bytes(data_dir)
            c0 = cpu_seconds(gw.pid)
            broker = start_mosquitto(tmp, mqtt_port, persistent=True)
            up = time.monotonic()
            wait_for(lambda: "backlog replayed" in gw.output(), args.outage * 2 + 60, "the replay")
            c1, replay_done = cpu_seconds(gw.pid), time.monotonic()

            # catch-up as the subscriber sees it: every device's seq contiguous up to its latest
            seen: dict[str, set[int]] = {}
            parsed = 0

            def caught_up() -> bool:
                nonlocal parsed
                with sub.lock:
                    fresh = sub.messages[parsed:]
                parsed += len(fresh)
                for topic, payload, _ in fresh:
                    seen.setdefault(topic, set()).add(json.loads(payload)["seq"])
                return len(seen) == args.devices and all(len(s) == max(s) for s in seen.values())

            wait_for(caught_up, args.outage * 2 + 60, "the subscriber to catch up")
            caught = time.monotonic()
            peak_rss = vm(gw.pid, "VmHWM")
            time.sleep(2)
        finally:
            gw.stop()
            sub.stop()
            for s in sims:
                s.stop()
            broker.kill()
        log = gw.output()
        replay = re.findall(r"backlog replayed\S* messages=(\d+) seconds=([\d.]+) per_second=(\d+)", log)
        gaps, dups = delivery(sub)
        backlog_msgs, replay_s, replay_rate = (int(replay[-1][0]), float(replay[-1][1]), int(replay[-1][2]))
        result = {
            "scenario": name,
            "offered_values_per_s": round(offered),
            "outage_s": args.outage,
            "backlog_messages": backlog_msgs,
            "backlog_values": backlog_msgs * args.points,
            "replay_s": replay_s,
            "replay_messages_per_s": replay_rate,
            "replay_values_per_s": replay_rate * args.points,
            "catch_up_s": round(caught - up, 1),
            "queue_growth_mb": round((size1 - size0) / 1e6, 1),
            "disk_mb_per_hour": round((size1 - size0) / 1e6 / args.outage * 3600),
            "gateway_cpu_pct_during_replay": round(100 * (c1 - c0) / max(replay_done - up, 1e-9), 1),
            "gateway_peak_rss_mb": round(peak_rss, 1),
            "seq_gaps": gaps,
            "duplicates": dups,
            "outage_measured_s": round(up - down, 1),
        }
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"outage-{name.replace('@', '_at_')}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"outage {args.outage:g}s at {round(offered)} values/s: backlog {backlog_msgs} messages "
        f"({backlog_msgs * args.points} values) replayed in {replay_s} s = {replay_rate} msg/s "
        f"({replay_rate * args.points} values/s); subscriber caught up {result['catch_up_s']} s after "
        f"reconnect; queue grew {result['queue_growth_mb']} MB = {result['disk_mb_per_hour']} MB/h; "
        f"seq gaps {gaps}, dups {dups}"
    )


if __name__ == "__main__":
    main()
