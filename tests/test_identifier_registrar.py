"""The registrar under faults of its own queue and of the node, with real components: the
gateway's durable queue on a real SQLite file (locked by another process, reads refused by
SQLite), the secondary-node simulator over HTTP (slow, failing, garbling its answers), and
`edgegw run` starting against a node whose template answer is garbled."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from edgegw.gateway.durable_queue import DurableQueue
from edgegw.gateway.normalise import Reading
from edgegw.identifier.client import SnmsClient
from edgegw.identifier.registrar import TASK, Registrar
from edgegw.identifier.rules import STREAM, RuleSet
from edgegw.identifier.settings import IdentifierRule, PointRef, RuleValue
from harness import EDGEGW, ROOT, P, Proc, free_port, wait_for, wait_port

RULE = IdentifierRule(
    name="part",
    trigger=PointRef(device="m1", point="serial"),
    template="1.0",
    values=[
        RuleValue(index=2000, type="serial_number", value="{value}"),
        RuleValue(index=2001, type="model", value="IM-200"),
        RuleValue(index=2002, type="batch", value="B-1"),
        RuleValue(index=2005, type="produced_at", value="{ts}"),
    ],
)


@pytest.fixture(autouse=True)
def no_faults(node: str) -> Iterator[None]:
    faults(node)
    yield
    faults(node)


def faults(url: str, **kw: Any) -> None:
    httpx.put(f"{url}/admin/faults", json=kw, timeout=10).raise_for_status()


def stats(url: str) -> dict[str, int]:
    return httpx.get(f"{url}/admin/stats", timeout=10).json().get(P, {})


def on_node(url: str, pattern: str) -> list[str]:
    return [
        h["handle"] for h in httpx.get(f"{url}/admin/handles", timeout=10).json() if pattern in h["handle"]
    ]


class Line:
    """A registrar in this process on a real queue file, sending to the simulated node."""

    def __init__(
        self,
        tmp: Path,
        url: str,
        publish: Callable[[str, dict[str, Any]], None] | None = None,
        **kw: Any,
    ):
        self.path = tmp / "queue.sqlite3"
        self.queue = DurableQueue(self.path, 10**8)
        self.events: list[dict[str, Any]] = []
        client = SnmsClient(url, P, "ops", "pw", timeout=5)
        self.registrar = Registrar(
            self.queue, client, RuleSet([RULE], P), publish or self.publish, retry_max=1.0, **kw
        )

    def publish(self, suffix: str, body: dict[str, Any]) -> None:
        self.events.append(body)

    def fire(self, serial: str) -> None:
        ts = time.time_ns() // 1_000_000
        self.registrar.on_sample("m1", [Reading("serial", serial, "good")], ts, lambda d, p: "")

    def states(self, serial: str) -> list[str]:
        return [e["state"] for e in self.events if e["handle"] == f"{P}/{serial}"]

    async def stop(self) -> None:
        await self.registrar.stop()
        self.queue.close()


async def until(cond: Callable[[], Any], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


_LOCKER = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
db.execute("COMMIT")
"""


def lock(path: Path, seconds: float) -> subprocess.Popen[str]:
    """Another process holding the queue file's write lock (readers can still read)."""
    p = subprocess.Popen(
        [sys.executable, "-c", _LOCKER, str(path), str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert p.stdout is not None and p.stdout.readline().strip() == "locked"
    return p


def messages(caplog: pytest.LogCaptureFixture, text: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if text in r.getMessage()]


# ---- the queue fails ----


def test_nothing_is_sent_again_while_the_queue_cannot_be_written(
    node: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A registration in flight when the queue file gets locked: its outcome cannot be
    committed, so it is still queued on disk; it must not be read and sent again meanwhile."""
    caplog.set_level(logging.INFO)
    faults(node, latency=1.0)
    before = stats(node)

    async def run() -> None:
        line = Line(tmp_path, node)
        await line.registrar.start()
        line.fire("SN-A1")
        await until(lambda: line.queue.depth_of(STREAM) == 1, 5, "the firing on disk")
        locker = await asyncio.to_thread(lock, line.path, 3.0)  # while the request is in flight
        await until(lambda: line.states("SN-A1"), 10, "the node's answer")
        assert line.queue.failing is not None and line.queue.depth_of(STREAM) == 1
        await asyncio.to_thread(locker.wait, 10)
        await until(lambda: line.queue.depth_of(STREAM) == 0, 20, "the outcome committed")
        assert line.registrar.queued == 0
        assert line.states("SN-A1") == ["registered"]
        assert line.registrar.queue_errors >= 1
        await line.stop()

    asyncio.run(run())
    after = stats(node)
    assert after["registrations"] - before.get("registrations", 0) == 1
    assert after.get("updates", 0) == before.get("updates", 0)  # never sent a second time
    held = messages(caplog, "the queue cannot be written; nothing is sent until it can")
    assert held and "locked" in held[0].fields["error"]  # type: ignore[attr-defined]


def test_a_queue_that_cannot_be_read_is_retried_and_the_sender_survives(
    node: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)

    def deny(action: int, table: str | None, *_: Any) -> int:
        return (
            sqlite3.SQLITE_DENY
            if action == sqlite3.SQLITE_READ and table == "messages"
            else sqlite3.SQLITE_OK
        )

    async def run() -> None:
        line = Line(tmp_path, node)
        line.fire("SN-B1")
        assert line.queue.commit()
        line.queue.db.set_authorizer(deny)  # SQLite refuses every read of the messages
        await line.registrar.start()
        await until(lambda: line.registrar.queue_errors >= 2, 10, "retried reads")
        assert line.registrar._task is not None and not line.registrar._task.done()
        assert on_node(node, "SN-B1") == [] and line.registrar.queued == 1
        assert "cannot be read" in (line.registrar.status()["last_error"] or "")
        line.queue.db.set_authorizer(None)
        await until(lambda: line.states("SN-B1") == ["registered"], 15, "the registration")
        await line.stop()

    asyncio.run(run())
    assert on_node(node, "SN-B1") == [f"{P}/SN-B1"]
    held = messages(caplog, "the queue cannot be read")
    assert held and "prohibited" in held[0].fields["error"]  # type: ignore[attr-defined]


def test_an_internal_error_is_logged_with_the_task_counted_and_survived(
    node: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    events: list[dict[str, Any]] = []

    def publish(suffix: str, body: dict[str, Any]) -> None:
        if not events:
            events.append({"broken": True})
            raise RuntimeError("the outcome sink broke")
        events.append(body)

    async def run() -> None:
        line = Line(tmp_path, node, publish=publish)
        await line.registrar.start()
        line.fire("SN-C1")
        await until(lambda: line.registrar.crashes == 1, 10, "the error counted")
        line.fire("SN-C2")
        await until(lambda: any(e.get("handle") == f"{P}/SN-C2" for e in events), 15, "the next one")
        assert line.queue.depth_of(STREAM) == 0 and line.registrar.status()["crashes"] == 1
        await line.stop()

    asyncio.run(run())
    assert sorted(on_node(node, "SN-C")) == [f"{P}/SN-C1", f"{P}/SN-C2"]
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR and r.exc_info]
    assert record.fields["task"] == TASK and record.fields["failures"] == 1  # type: ignore[attr-defined]
    assert "the outcome sink broke" in repr(record.exc_info[1])  # type: ignore[index]


def test_a_queued_registration_that_cannot_be_read_is_parked_and_the_rest_go(
    node: str, tmp_path: Path
) -> None:
    async def run() -> None:
        line = Line(tmp_path, node)
        line.queue.append(STREAM, f"{P}/BROKEN-1", b'{"rule": "part", "handle"')
        line.fire("SN-D1")
        assert line.queue.commit()
        await line.registrar.start()
        await until(lambda: line.states("SN-D1") == ["registered"], 15, "the good one")
        [broken] = [e for e in line.events if e["handle"] == f"{P}/BROKEN-1"]
        assert broken["state"] == "failed" and "cannot be read" in broken["error"]
        await until(lambda: line.queue.depth_of(STREAM) == 0, 5, "both settled")
        assert line.queue.outcomes(STREAM, "failed")[0][0] == f"{P}/BROKEN-1"
        await line.stop()

    asyncio.run(run())


# ---- the cap ----


def test_a_full_stream_refuses_new_firings_loudly_and_keeps_what_is_queued(
    node: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    faults(node, error_rate=1.0)  # the node is down: nothing drains

    async def run() -> None:
        line = Line(tmp_path, node, max_queued=3)
        await line.registrar.start()
        for i in range(1, 6):
            line.fire(f"SN-E{i}")
        r = line.registrar
        assert (r.queued, r.refused, r.counters["fired"]) == (3, 2, 3)
        assert r.refusing is not None and "max_queued 3" in r.refusing
        assert r.status()["refusing"] == r.refusing
        assert [e["handle"] for e in line.events if e["state"] == "refused"] == [f"{P}/SN-E4", f"{P}/SN-E5"]
        assert all("identifier queue full" in e["error"] for e in line.events)
        await until(lambda: line.queue.depth_of(STREAM) == 3, 5, "the three on disk")
        await asyncio.sleep(1.0)  # retries against the failing node drop nothing
        assert [k for _, k, _ in line.queue.after(STREAM, 0, 10)] == [f"{P}/SN-E{i}" for i in (1, 2, 3)]
        faults(node)
        await until(lambda: line.queue.depth_of(STREAM) == 0, 20, "the backlog registered")
        assert r.queued == 0 and r.refusing is None
        line.fire("SN-E6")  # room again
        await until(lambda: line.states("SN-E6") == ["registered"], 15, "a new one")
        assert r.refused == 2 and r.counters["refused"] == 2
        await line.stop()

    asyncio.run(run())
    assert sorted(on_node(node, "SN-E")) == [f"{P}/SN-E{i}" for i in (1, 2, 3, 6)]
    [line_logged] = messages(caplog, "firing refused")  # at most one a minute
    fields = line_logged.fields  # type: ignore[attr-defined]
    assert line_logged.levelno == logging.ERROR and fields["handle"] == f"{P}/SN-E4"
    assert (fields["refused_total"], fields["queued"], fields["max_queued"]) == (1, 3, 3)


# ---- the node garbles its answers ----


def test_a_garbling_node_registers_each_serial_once(node: str, tmp_path: Path) -> None:
    faults(node, garbage=0.4, garbage_kind="any")
    before = stats(node)
    serials = [f"SN-G{i}" for i in range(8)]

    async def run() -> None:
        line = Line(tmp_path, node, batch_size=4)
        await line.registrar.check_templates()  # deferred or done: never an exception
        await line.registrar.start()
        for s in serials:
            line.fire(s)
            await asyncio.sleep(0.05)
        await until(lambda: line.queue.depth_of(STREAM) == 0 and line.registrar.queued == 0, 60, "all 8")
        assert Counter(e["state"] for e in line.events) == Counter({"registered": 8}), line.events
        assert sorted(e["handle"] for e in line.events) == sorted(f"{P}/{s}" for s in serials)
        assert line.registrar.crashes == 0 and line.registrar.counters["retries"] > 0
        await line.stop()

    asyncio.run(run())
    faults(node)
    assert sorted(on_node(node, "SN-G")) == sorted(f"{P}/{s}" for s in serials)
    assert stats(node)["registrations"] - before.get("registrations", 0) == 8


def test_the_gateway_starts_against_a_garbled_template_and_registers_once_it_is_readable(
    tmp_path: Path,
) -> None:
    mb, node_port, control = free_port(), free_port(), free_port()
    config = tmp_path / "gw.yaml"
    config.write_text(
        f"""
include: {ROOT}/configs/models/*.yaml
gateway: {{id: gw-garble, data_dir: {tmp_path}/data}}
devices:
  - id: im-01
    model: injection-molder
    protocol: modbus-tcp
    connection: {{host: 127.0.0.1, port: {mb}, unit_id: 1, timeout: 500ms}}
    poll: {{interval: 100ms}}
identifier:
  node: {{kind: snms, url: "http://127.0.0.1:{node_port}", username: line-1, password: s3cret, prefix: "{P}", timeout: 2s}}
  rules:
    - name: molded-part
      trigger: {{device: im-01, point: product_serial}}
      template: "1.0"
      values:
        - {{index: 2000, type: serial_number, value: "{{value}}"}}
        - {{index: 2001, type: model, value: IM-200}}
        - {{index: 2002, type: batch, value: B-1}}
        - {{index: 2005, type: produced_at, value: "{{ts}}"}}
"""
    )
    sim = Proc(
        [*EDGEGW, "simulate", "-c", str(config), "--control", f"127.0.0.1:{control}"], tmp_path / "sim.log"
    )
    gw: Proc | None = None
    url = f"http://127.0.0.1:{node_port}"
    try:
        for port in (mb, node_port, control):
            wait_port(port, 20)
        httpx.put(
            f"http://127.0.0.1:{control}/devices/im-01/points/product_serial", json={"value": "SN-H1"}
        ).raise_for_status()
        faults(url, garbage=1.0, garbage_kind="shapeless")  # the template answer has no template
        gw = Proc([*EDGEGW, "run", "-c", str(config)], tmp_path / "gw.log")
        wait_for(lambda: "identifier rules active" in gw.output(), 20, "the gateway started")
        assert "template check deferred" in gw.output()
        time.sleep(1.5)
        assert gw.p.poll() is None and on_node(url, "SN-H1") == []  # running, holding SN-H1 queued
        faults(url)
        wait_for(lambda: on_node(url, "SN-H1"), 30, "SN-H1 registered once the template is readable")
        wait_for(lambda: "template check done" in gw.output(), 30, "the deferred check")
        assert gw.p.poll() is None and "Traceback" not in gw.output()
    finally:
        if gw is not None:
            gw.stop()
        sim.stop()
