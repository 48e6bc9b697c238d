"""Identifier registration benchmark: firings -> durable queue -> secondary-node simulator.

    .venv/bin/python bench/identifiers.py --count 20000 --batch 500

Starts `edgegw simulate --idnode` as its own process, commits N firings to a fresh durable
queue (the same code path as rule firings: SQLite, WAL, fsync normal), then runs the gateway's
registrar until the queue is empty and every identifier is on the node. Prints identifiers/s,
the registrar's CPU and the node's count, and writes bench/results/identifiers-<N>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import tempfile
import time
from pathlib import Path

from edgegw.gateway.durable_queue import DurableQueue
from edgegw.identifier.client import SnmsClient
from edgegw.identifier.registrar import Registrar
from edgegw.identifier.rules import STREAM, Firing, RuleSet
from edgegw.identifier.templates import Value
from plant import EDGEGW, ROOT, Proc, free_port, wait_port

PREFIX = "88.118.8"


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def run(url: str, tmp: Path, count: int, batch: int) -> dict[str, float]:
    queue = DurableQueue(tmp / "queue.sqlite3", 10**9)
    t0, c0 = time.perf_counter(), cpu()
    for n in range(count):
        f = Firing(
            "bench",
            f"{PREFIX}/BENCH-{n:07d}",
            "1.0",
            [
                Value(2000, "serial_number", f"BENCH-{n:07d}"),
                Value(2001, "model", "IM-200"),
                Value(2002, "batch", "B-2026-11"),
                Value(2003, "barrel_temp", "215.3"),
                Value(2005, "produced_at", "2026-11-21T08:00:00.000Z"),
            ],
            "update",
            0,
        )
        queue.append(STREAM, f.handle, f.body())
    queue.commit()
    queued = time.perf_counter() - t0
    outcomes: list[dict] = []
    client = SnmsClient(url, PREFIX, "edgegw", "edgegw", timeout=30)
    registrar = Registrar(queue, client, RuleSet([], PREFIX), lambda _t, body: outcomes.append(body), batch)
    t1 = time.perf_counter()
    await registrar.start()
    while queue.depth_of(STREAM):
        await asyncio.sleep(0.01)
    sent = time.perf_counter() - t1
    c1 = cpu()
    await registrar.stop()
    queue.close()
    return {
        "queued_s": round(queued, 2),
        "register_s": round(sent, 2),
        "identifiers_per_s": round(count / sent),
        "registered": sum(1 for o in outcomes if o["state"] == "registered"),
        "failed": sum(1 for o in outcomes if o["state"] == "failed"),
        "bench_process_cpu_s": round(c1 - c0, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=20000)
    ap.add_argument("--batch", type=int, default=500)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="edgegw-idbench-") as t:
        tmp = Path(t)
        port = free_port()
        node = Proc([*EDGEGW, "simulate", "--idnode", "--port", str(port)], tmp / "node.log")
        try:
            wait_port(port, 20)
            url = f"http://127.0.0.1:{port}"
            result = asyncio.run(run(url, tmp, args.count, args.batch))
            import httpx

            result["on_node"] = httpx.get(f"{url}/admin/stats").json().get(PREFIX, {}).get("handles", 0)
        finally:
            node.stop()
    result.update({"count": args.count, "batch": args.batch})
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"identifiers-{args.count}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"identifiers {args.count} (batch {args.batch}): {result['identifiers_per_s']} /s through the durable queue "
        f"into the node ({result['register_s']} s; queueing took {result['queued_s']} s); "
        f"registered {result['registered']}, failed {result['failed']}, on the node {result['on_node']}"
    )


if __name__ == "__main__":
    main()
