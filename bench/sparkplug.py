"""Sparkplug B throughput: Modbus TCP simulators -> edgegw with Sparkplug as its only sink ->
Mosquitto -> a Sparkplug host that counts the metrics of every DDATA.

    .venv/bin/python bench/sparkplug.py --devices 200 --points 100 --interval 200ms --seconds 20

The same plant as bench/run.py (int16 points with scale and range, 1-4 simulator processes),
with `northbound.sparkplug` instead of `northbound.mqtt`: DDATA at QoS 0 by alias, each sample
committed to the durable queue first and deleted when the broker confirms it (the SUBSCRIBE
barrier). Counted at the host: metrics/s, DDATA messages/s, seq gaps (Sparkplug's one seq per
node, 0-255), and poll -> host latency from each metric's own timestamp. Prints one line and
writes bench/results/sparkplug-<scenario>.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from plant import (
    EDGEGW,
    ROOT,
    Proc,
    cpu_seconds,
    free_port,
    percentile,
    seconds,
    start_mosquitto,
    start_simulators,
    vm,
    wait_for,
    write_config,
)

sys.path.insert(0, str(ROOT / "tests" / "sparkplug"))
from host import varint  # the test host's protobuf reader, not the product's codec


class Host:
    """Counts DDATA metrics (top-level Payload.metrics entries) and checks the node's seq."""

    def __init__(self, port: int):
        self.lock = threading.Lock()
        self.metrics = 0
        self.messages = 0
        self.gaps = 0
        self.last_seq: int | None = None
        self.latency: list[float] = []
        self.births = 0
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-host-{time.monotonic_ns()}")
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe("spBv1.0/#", qos=0)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, _c: object, _u: object, msg: paho.MQTTMessage) -> None:
        verb = msg.topic.split("/")[2]
        b = bytes(msg.payload)
        i, n, seq, first_ts = 0, 0, None, None
        while i < len(b):
            key, i = varint(b, i)
            if key & 7 == 0:
                v, i = varint(b, i)
                if key >> 3 == 3:
                    seq = v
            else:
                size, i = varint(b, i)
                if key >> 3 == 2:
                    n += 1
                    if first_ts is None and b[i] == 0x10:
                        # a DDATA metric: alias (field 2), then its own timestamp (field 3)
                        _, j = varint(b, i + 1)
                        if b[j] == 0x18:
                            first_ts, _ = varint(b, j + 1)
                i += size
        with self.lock:
            if verb == "NBIRTH":
                self.births += 1
                self.last_seq = seq
                return
            if seq is not None:
                if self.last_seq is not None and seq != (self.last_seq + 1) % 256:
                    self.gaps += 1
                self.last_seq = seq
            if verb == "DDATA":
                self.messages += 1
                self.metrics += n
                if first_ts is not None:
                    self.latency.append(time.time() * 1000 - first_ts)

    def counts(self) -> tuple[int, int, int]:
        with self.lock:
            return self.metrics, self.messages, len(self.latency)

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, default=200)
    ap.add_argument("--points", type=int, default=100)
    ap.add_argument("--interval", default="200ms")
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--sim-processes", type=int, default=3)
    args = ap.parse_args()
    name = f"{args.devices}x{args.points}@{args.interval}"
    with tempfile.TemporaryDirectory(prefix="edgegw-bench-spb-") as t:
        tmp = Path(t)
        mqtt = free_port()
        broker = start_mosquitto(tmp, mqtt)
        sim_ports = [free_port() for _ in range(args.sim_processes)]
        full = write_config(tmp, args.devices, args.points, args.interval, mqtt, sim_ports)
        text = full.read_text().replace(
            f"  mqtt: {{host: 127.0.0.1, port: {mqtt}}}",
            f"  sparkplug: {{host: 127.0.0.1, port: {mqtt}, group_id: bench, inflight: 1024}}",
        )
        full.write_text(text)
        sims = start_simulators(tmp, full, sim_ports)
        host = Host(mqtt)
        gw = Proc([*EDGEGW, "run", "-c", str(full)], tmp / "gw.log")
        try:
            wait_for(lambda: host.counts()[1] >= args.devices, 60, "DDATA from every device")
            time.sleep(2)
            (m0, n0, l0), c0, t0 = host.counts(), cpu_seconds(gw.pid), time.monotonic()
            g0 = host.gaps
            time.sleep(args.seconds)
            (m1, n1, l1), c1, t1 = host.counts(), cpu_seconds(gw.pid), time.monotonic()
            gaps = host.gaps - g0
            peak = vm(gw.pid, "VmHWM")
            with host.lock:
                lat = host.latency[l0:l1]
        finally:
            gw.stop()
            host.stop()
            for s in sims:
                s.stop()
            broker.kill()
    span = t1 - t0
    result = {
        "scenario": f"sparkplug {name}",
        "offered_values_per_s": round(args.devices * args.points / seconds(args.interval)),
        "metrics_per_s": round((m1 - m0) / span),
        "ddata_per_s": round((n1 - n0) / span, 1),
        "gateway_cpu_pct": round(100 * (c1 - c0) / span, 1),
        "gateway_peak_rss_mb": round(peak, 1),
        "poll_to_host_p50_ms": round(percentile(lat, 0.5) or 0, 1),
        "poll_to_host_p99_ms": round(percentile(lat, 0.99) or 0, 1),
        "seq_gaps": gaps,
        "seconds": args.seconds,
    }
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"sparkplug-{name.replace('@', '_at_')}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"sparkplug {name:<16} metrics/s {result['metrics_per_s']:>7} (offered {result['offered_values_per_s']})  "
        f"DDATA/s {result['ddata_per_s']}  cpu {result['gateway_cpu_pct']}%  peak rss {result['gateway_peak_rss_mb']} MB  "
        f"poll->host p50/p99 {result['poll_to_host_p50_ms']}/{result['poll_to_host_p99_ms']} ms  seq gaps {gaps}",
        flush=True,
    )


if __name__ == "__main__":
    main()
