"""Identifier registration benchmark: firings -> durable queue -> node simulator, for each kind.

    .venv/bin/python bench/identifiers.py --count 20000 --batch 500 --single-count 2000

Starts `edgegw simulate --idnode` as its own process (with an IDHub app whose RSA key is made
for the run), and for each kind (`snms` with the plain login, `snms` with the cipher login,
`idhub`, `handle`) commits N firings to a fresh durable queue (the same code path as rule
firings: SQLite, WAL, fsync normal), then runs the gateway's registrar until the queue is empty
and every identifier is on the node. snms sends batches (`batchCreate`); idhub and handle have
no batch call and send concurrent single requests (`--single-count` firings each). Prints
identifiers/s per kind and writes bench/results/identifiers-<N>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import tempfile
import time
from pathlib import Path

import httpx
from edgegw.gateway.durable_queue import DurableQueue
from edgegw.identifier.client import HandleClient, IdhubClient, NodeClient, SnmsClient
from edgegw.identifier.registrar import Registrar
from edgegw.identifier.rules import STREAM, Firing, RuleSet
from edgegw.identifier.templates import Value
from plant import EDGEGW, ROOT, Proc, free_port, wait_port

PREFIX = "88.118.8"
APP = f"{PREFIX}/App_bench"
KINDS = ("snms", "snms-cipher", "idhub", "handle")


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def client_for(kind: str, url: str, key: Path) -> NodeClient:
    if kind == "idhub":
        return IdhubClient(url, PREFIX, APP, str(key), timeout=30)
    if kind == "handle":
        return HandleClient(url, PREFIX, "edgegw", "edgegw", timeout=30)
    login = "cipher" if kind == "snms-cipher" else "plain"
    return SnmsClient(url, PREFIX, "edgegw", "edgegw", timeout=30, login=login)


async def run(url: str, tmp: Path, kind: str, key: Path, count: int, batch: int) -> dict[str, float]:
    queue = DurableQueue(tmp / f"queue-{kind}.sqlite3", 10**9)
    template = {"idhub": f"{PREFIX}/META_1.0", "handle": None}.get(kind, "1.0")
    tag = kind.upper().replace("-", "")
    t0, c0 = time.perf_counter(), cpu()
    for n in range(count):
        f = Firing(
            "bench",
            f"{PREFIX}/{tag}-{n:07d}",
            template,
            [
                Value(2000, "serial_number", f"{tag}-{n:07d}"),
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
    client = client_for(kind, url, key)
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
        "count": count,
        "queued_s": round(queued, 2),
        "register_s": round(sent, 2),
        "identifiers_per_s": round(count / sent),
        "registered": sum(1 for o in outcomes if o["state"] == "registered"),
        "failed": sum(1 for o in outcomes if o["state"] == "failed"),
        "bench_process_cpu_s": round(c1 - c0, 2),
    }


def make_key(tmp: Path) -> tuple[Path, Path]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private, public = tmp / "app.pem", tmp / "app.pub"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=20000, help="firings per batched kind (snms)")
    ap.add_argument("--single-count", type=int, default=2000, help="firings per kind without batches")
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--kinds", default=",".join(KINDS), help=f"comma-separated, of {', '.join(KINDS)}")
    args = ap.parse_args()
    kinds = [k for k in args.kinds.split(",") if k]
    unknown = set(kinds) - set(KINDS)
    if unknown:
        ap.error(f"unknown kinds: {', '.join(sorted(unknown))}")
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="edgegw-idbench-") as t:
        tmp = Path(t)
        private, public = make_key(tmp)
        port = free_port()
        node = Proc(
            [*EDGEGW, "simulate", "--idnode", "--port", str(port), "--app", f"{APP}={public}"],
            tmp / "node.log",
        )
        try:
            wait_port(port, 20)
            url = f"http://127.0.0.1:{port}"
            for kind in kinds:
                count = args.count if kind.startswith("snms") else args.single_count
                results[kind] = asyncio.run(run(url, tmp, kind, private, count, args.batch))
                tag = kind.upper().replace("-", "")
                handles = httpx.get(f"{url}/admin/handles", params={"prefix": PREFIX}, timeout=60).json()
                results[kind]["on_node"] = sum(
                    1 for h in handles if h["handle"].startswith(f"{PREFIX}/{tag}-")
                )
        finally:
            node.stop()
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    doc = {"batch": args.batch, "kinds": results}
    (out / f"identifiers-{args.count}.json").write_text(json.dumps(doc, indent=2) + "\n")
    for kind, r in results.items():
        how = f"batches of {args.batch}" if kind.startswith("snms") else "concurrent single requests"
        print(
            f"{kind:<12} {r['count']:>6} identifiers ({how}): {r['identifiers_per_s']:>6} /s durable into the "
            f"node ({r['register_s']} s; queueing took {r['queued_s']} s); registered {r['registered']}, "
            f"failed {r['failed']}, on the node {r['on_node']}"
        )


if __name__ == "__main__":
    main()
