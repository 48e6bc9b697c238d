"""edgegw's OPC UA server under load: Modbus TCP simulators -> edgegw with `northbound.opcua_server`
as its only sink -> two OPC UA clients, each in its own process, subscribed to every node.

    .venv/bin/python bench/opcua_server.py --devices 100 --points 100 --interval 1s --seconds 30

The plant of bench/run.py (int16 points with scale and range, so every node is a Double that
changes at each poll) served at `Basic256Sha256/SignAndEncrypt` with a user (`--security none`
for the plain channel). Each client (asyncua's Client, this file run with `--client`) subscribes
to every point with a 100 ms publishing interval and counts the notifications; the latency is
the client's receive time minus the value's SourceTimestamp (the poll's time), so it covers the
poll, the server's batch, the subscription's publishing interval and the wire. Prints one line
and writes bench/results/opcua-server-<scenario>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from plant import (
    EDGEGW,
    ROOT,
    Proc,
    cpu_seconds,
    free_port,
    percentile,
    seconds,
    start_simulators,
    vm,
    wait_for,
    wait_port,
    write_config,
)

PASSWORD = "bench-only-password"


async def _client(
    url: str, points: list[str], out: Path, warmup: float, span: float, secure: Path | None
) -> None:
    from asyncua import Client, ua
    from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256

    # asyncua's client probes the server every second with a 1 s timeout by default: on two
    # cores shared by the gateway, two clients and the simulators, its own decoding of a
    # 10,000-notification Publish can miss that, and it drops the session (a SCADA waits longer)
    client = Client(url, timeout=30, watchdog_intervall=10.0)
    client.application_uri = "urn:bench:scada"
    if secure is not None:
        await client.set_security(
            SecurityPolicyBasic256Sha256,
            certificate=str(secure),
            private_key=str(secure.with_suffix(".pem")),
            mode=ua.MessageSecurityMode.SignAndEncrypt,
        )
    client.set_user("scada")
    client.set_password(PASSWORD)
    await client.connect()
    ns = await client.get_namespace_index("urn:edgegw:gw-bench")
    state: dict[str, Any] = {"count": 0, "lat": [], "measuring": False}

    sub = await client.create_subscription(100, None)

    async def publish_callback(result: ua.PublishResult) -> None:
        data = result.NotificationMessage.NotificationData
        if not data or not state["measuring"]:
            return
        now = time.time()
        for notif in data:
            if isinstance(notif, ua.DataChangeNotification):
                items = notif.MonitoredItems
                state["count"] += len(items)
                for item in items[::20]:  # a sample of latencies, not every one
                    ts = item.Value.SourceTimestamp
                    if ts is not None:
                        state["lat"].append((now - ts.timestamp()) * 1000)

    # every notification counted where it arrives, without asyncua's per-item events
    sub.server._subscription_callbacks[sub.subscription_id] = publish_callback
    nodes = [client.get_node(ua.NodeId(p, ns)) for p in points]
    for i in range(0, len(nodes), 1000):
        began = time.monotonic()
        await sub.subscribe_data_change(nodes[i : i + 1000], queuesize=1)
        print(f"subscribed {i + 1000} in {time.monotonic() - began:.2f} s", file=sys.stderr, flush=True)
    await asyncio.sleep(warmup)
    state["measuring"] = True
    t0 = time.monotonic()
    await asyncio.sleep(span)
    state["measuring"] = False
    elapsed = time.monotonic() - t0
    out.write_text(json.dumps({"count": state["count"], "seconds": elapsed, "lat": state["lat"]}))
    await client.disconnect()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, default=100)
    ap.add_argument("--points", type=int, default=100)
    ap.add_argument("--interval", default="1s")
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--clients", type=int, default=2)
    ap.add_argument("--security", choices=("encrypt", "none"), default="encrypt")
    ap.add_argument("--sim-processes", type=int, default=2)
    ap.add_argument(
        "--client", nargs=4, metavar=("URL", "POINTS_FILE", "OUT", "CERT"), help=argparse.SUPPRESS
    )
    ap.add_argument("--warmup", type=float, default=5.0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.client:
        url, points_file, out, cert = args.client
        points = Path(points_file).read_text().split()
        secure = None if cert == "-" else Path(cert)
        asyncio.run(_client(url, points, Path(out), args.warmup, args.seconds, secure))
        return
    name = f"{args.devices}x{args.points}@{args.interval}"
    with tempfile.TemporaryDirectory(prefix="edgegw-bench-ua-") as t:
        tmp = Path(t)
        ua_port = free_port()
        sim_ports = [free_port() for _ in range(args.sim_processes)]
        full = write_config(tmp, args.devices, args.points, args.interval, free_port(), sim_ports)
        security = (
            "[{policy: Basic256Sha256, mode: SignAndEncrypt}]"
            if args.security == "encrypt"
            else "[{policy: None}]"
        )
        lines = full.read_text().splitlines()
        lines = [ln for ln in lines if not ln.startswith("  mqtt:")]
        lines += [
            "  opcua_server:",
            f"    endpoint: opc.tcp://127.0.0.1:{ua_port}/edgegw",
            f"    security: {security}",
            "    users: [{username: scada, password: '${BENCH_UA_PASSWORD}', access: read}]",
        ]
        full.write_text("\n".join(lines) + "\n")
        cert = tmp / "scada.der"
        if args.security == "encrypt":
            from edgegw.gateway.opcua import pki

            pki.create_certificate(
                cert, cert.with_suffix(".pem"), "urn:bench:scada", common_name="bench scada"
            )
            (tmp / "data" / "pki" / "trusted").mkdir(parents=True)
            shutil.copy(cert, tmp / "data" / "pki" / "trusted" / "scada.der")
        points_file = tmp / "points.txt"
        points_file.write_text(
            "\n".join(f"dev-{d:04d}.p{i:04d}" for d in range(args.devices) for i in range(args.points))
        )
        os.environ["BENCH_UA_PASSWORD"] = PASSWORD  # the simulators read the same config
        sims = start_simulators(tmp, full, sim_ports)
        gw = Proc([*EDGEGW, "run", "-c", str(full)], tmp / "gw.log")
        clients: list[Proc] = []
        try:
            wait_port(ua_port, 60)
            time.sleep(2)
            url = f"opc.tcp://127.0.0.1:{ua_port}/edgegw"
            for i in range(args.clients):
                clients.append(
                    Proc(
                        [
                            sys.executable,
                            str(Path(__file__)),
                            "--client",
                            url,
                            str(points_file),
                            str(tmp / f"client{i}.json"),
                            str(cert) if args.security == "encrypt" else "-",
                            "--seconds",
                            str(args.seconds),
                        ],
                        tmp / f"client{i}.log",
                    )
                )
            time.sleep(5 + 2)  # the clients' subscriptions are made and warmed up
            c0, t0 = cpu_seconds(gw.pid), time.monotonic()
            time.sleep(args.seconds - 2)
            c1, t1 = cpu_seconds(gw.pid), time.monotonic()
            peak = vm(gw.pid, "VmHWM")
            wait_for(
                lambda: all((tmp / f"client{i}.json").exists() for i in range(args.clients)),
                60,
                "client results",
            )
            results = [json.loads((tmp / f"client{i}.json").read_text()) for i in range(args.clients)]
        finally:
            for c in clients:
                c.stop()
            gw.stop()
            for s in sims:
                s.stop()
            logs = ROOT / "bench" / "results" / "opcua-server-logs"
            logs.mkdir(parents=True, exist_ok=True)
            (logs / "gateway.log").write_text(gw.output())
            for i, c in enumerate(clients):
                (logs / f"client{i}.log").write_text(c.output())
                if "Traceback" in c.output():
                    print(f"client {i} failed: see {logs}/client{i}.log", file=sys.stderr)
    lat = [x for r in results for x in r["lat"]]
    per_client = [round(r["count"] / r["seconds"]) for r in results]
    result = {
        "scenario": f"opcua-server {name} {args.security}",
        "nodes": args.devices * args.points,
        "offered_changes_per_s": round(args.devices * args.points / seconds(args.interval)),
        "clients": args.clients,
        "notifications_per_s_per_client": per_client,
        "gateway_cpu_pct": round(100 * (c1 - c0) / (t1 - t0), 1),
        "gateway_peak_rss_mb": round(peak, 1),
        "change_to_client_p50_ms": round(percentile(lat, 0.5) or 0, 1),
        "change_to_client_p99_ms": round(percentile(lat, 0.99) or 0, 1),
        "seconds": args.seconds,
    }
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    slug = f"{name.replace('@', '_at_')}-{args.security}"
    (out / f"opcua-server-{slug}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"opcua-server {name:<14} {args.security:<7} nodes {result['nodes']}  notifications/s per client "
        f"{per_client} (offered {result['offered_changes_per_s']})  cpu {result['gateway_cpu_pct']}%  "
        f"peak rss {result['gateway_peak_rss_mb']} MB  change->client p50/p99 "
        f"{result['change_to_client_p50_ms']}/{result['change_to_client_p99_ms']} ms",
        flush=True,
    )


if __name__ == "__main__":
    main()
