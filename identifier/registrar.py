"""The registration queue: rule firings -> durable queue -> secondary node, nothing dropped.

Each firing is committed to the `identifier` stream of the gateway's durable queue before
anything is sent. The sender takes the oldest pending firings: one is registered on its own,
a backlog goes in batches (`batch_size`, at most 2000). Transient failures (network, timeout,
HTTP 5xx, 504 "maybe registered", a node that keeps refusing the token) leave the firings
queued and retry with capped exponential backoff and jitter. "Already exists" is resolved by
`on_exists`: `update` updates the record; `keep` and `fail` compare the node's values with
ours, and equal values mean it was already registered (a retry after a 504 or a crash);
different values are a failure (`fail`) or keep the node's record and report it (`keep`).
Permanent failures (template mismatch, no permission, invalid value) are parked as `failed`
with the node's message, and the rest go on. Every outcome is published on `P/G/identifiers`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Iterator
from typing import Any

from gateway.config.schema import IdentifierRule
from gateway.durable_queue import DurableQueue
from gateway.logs import RateLimited, event, report_crash
from gateway.normalise import Reading

from .client import Exists, NodeClient, NodeError, NotFound, Record, Registration, Rejected, Transient
from .rules import STREAM, Firing, RuleSet, engineering, new_value
from .syntax import IdentifierError
from .templates import Template

log = logging.getLogger("edgegw.identifier")


class Registrar:
    def __init__(
        self,
        queue: DurableQueue,
        client: NodeClient,
        rules: RuleSet,
        publish: Callable[[str, dict[str, Any]], None],
        batch_size: int = 500,
        retry_max: float = 60.0,
    ):
        self.queue = queue
        self.client = client
        self.rules = rules
        self.publish = publish  # (topic suffix, payload)
        self.batch_size = batch_size
        self.retry_max = retry_max
        self.templates: dict[str, Template] = {}
        self.counters = {
            "fired": 0,
            "registered": 0,
            "failed": 0,
            "retries": 0,
            "resolved": 0,
            "resolve_failed": 0,
        }
        self.connected = False
        self.last_error: str | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._resolving: set[asyncio.Task[None]] = set()
        self._resolve_slots = asyncio.Semaphore(8)
        self._ratelimit = RateLimited(log, 30.0)

    # ---- firing (event loop, from the poll path) ----

    def on_sample(
        self, device: str, readings: list[Reading], ts_ms: int, lookup: Callable[[str, str], str]
    ) -> None:
        if device not in self.rules.devices:
            return
        by_id = {r.id: r for r in readings}
        for rule, value in self._changed(device, by_id, self.rules.triggers, "rule"):
            try:
                firing = self.rules.firing(rule, value, ts_ms, lookup)
            except IdentifierError as exc:
                handle = self.rules.handle_for(rule, value, ts_ms, lookup)
                self._outcome(rule.name, handle, "failed", f"invalid identifier: {exc}", settle=None)
                continue
            self.queue.append(STREAM, firing.handle, firing.body())  # committed with the value
            self.counters["fired"] += 1
            self._wake.set()
        for rule, value in self._changed(device, by_id, self.rules.resolves, "resolve"):
            handle = self.rules.handle_for(rule, value, ts_ms, lookup)
            task = asyncio.create_task(self._resolve(device, rule.name, handle))
            self._resolving.add(task)
            task.add_done_callback(self._resolving.discard)

    def _changed(
        self,
        device: str,
        by_id: dict[str, Reading],
        table: dict[tuple[str, str], list[IdentifierRule]],
        kind: str,
    ) -> Iterator[tuple[IdentifierRule, str]]:
        """The rules of this device whose point holds a new value, remembering it in the queue's
        state (committed in the same transaction as whatever the firing appends)."""
        for (dev, point), rules in table.items():
            if dev != device:
                continue
            value = new_value(by_id.get(point))
            if value is None:
                continue
            for rule in rules:
                key = f"{kind}/{rule.name}"
                if self.queue.get_state(key) != value:
                    self.queue.put_state(key, value)
                    yield rule, value

    # ---- sending ----

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="identifier-queue")
        self._task.add_done_callback(report_crash)
        if self.queue.depth_of(STREAM):
            event(
                log,
                logging.INFO,
                "identifier registrations queued from the previous run",
                count=self.queue.depth_of(STREAM),
            )
            self._wake.set()

    async def stop(self) -> None:
        for t in [self._task, *self._resolving]:
            if t is not None:
                t.cancel()
        await asyncio.gather(
            *(t for t in [self._task, *self._resolving] if t is not None), return_exceptions=True
        )
        await self.client.close()

    async def _run(self) -> None:
        delay = 0.0
        attempt = 0
        while True:
            if delay:
                await asyncio.sleep(delay)  # new firings during a backoff wait for it to end
            else:
                await self._wake.wait()
            self._wake.clear()
            self.queue.commit()  # every firing is on disk before it is sent
            rows = self.queue.after(STREAM, 0, self.batch_size)
            if not rows:
                delay = 0.0
                continue
            try:
                await self._send([(row_id, Firing.from_body(body)) for row_id, _, body in rows])
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug must not end the queue: report it and retry later
                if not isinstance(exc, Transient):
                    log.exception("identifier queue error; retrying", extra={"fields": {"queued": len(rows)}})
                    exc = Transient(f"internal error: {exc!r}")

                attempt += 1
                self.counters["retries"] += 1
                self.connected = False
                self.last_error = exc.message
                ceiling = min(self.retry_max, 0.5 * 2 ** min(attempt - 1, 16))
                delay = random.uniform(ceiling / 2, ceiling)
                self._ratelimit.log(
                    "transient",
                    logging.WARNING,
                    "identifier node unavailable; registrations stay queued",
                    error=exc.message,
                    queued=self.queue.depth_of(STREAM),
                    retry_in=round(delay, 1),
                )
                self._wake.set()
                continue
            attempt = 0
            delay = 0.0
            self.connected = True
            self.queue.commit()
            self._wake.set()  # more may be waiting

    async def _template(self, version: str | None) -> Template | None:
        if version is None or self.client.kind != "snms":
            return None
        t = self.templates.get(version)
        if t is None:
            t = await self.client.template(version)  # NotFound/Rejected propagate to the caller
            self.templates[version] = t
        return t

    async def _send(self, batch: list[tuple[int, Firing]]) -> None:
        ready: list[tuple[int, Firing]] = []
        for row_id, f in batch:
            try:
                t = await self._template(f.template)
            except NotFound as exc:
                self._outcome(f.rule, f.handle, "failed", exc.message, settle=row_id)
                continue
            problems = t.problems(f.values) if t is not None else []
            if problems:
                self._outcome(f.rule, f.handle, "failed", "; ".join(problems), settle=row_id)
                continue
            ready.append((row_id, f))
        if not ready:
            return
        regs = [Registration(f.handle, f.template, tuple(f.values)) for _, f in ready]
        # a Transient here (504 included) leaves them all queued; on the retry, "already
        # exists" with our values is recognised as done
        if len(ready) == 1:
            try:
                await self.client.register(regs[0])
                results: list[NodeError | None] = [None]
            except Rejected as exc:
                results = [exc]
        else:
            results = await self.client.register_batch(regs)
        transient: Transient | None = None
        for (row_id, f), reg, result in zip(ready, regs, results, strict=True):
            try:
                state, message = await self._settle_result(f, reg, result)
            except Transient as exc:
                transient = exc
                continue
            self._outcome(f.rule, f.handle, state, message, settle=row_id)
        if transient is not None:
            self.queue.commit()  # keep what did settle
            raise transient

    async def _settle_result(
        self, f: Firing, reg: Registration, result: NodeError | None
    ) -> tuple[str, str | None]:
        if result is None:
            return "registered", None
        if isinstance(result, Transient):
            raise result
        if not isinstance(result, Exists):
            return "failed", result.message
        if f.on_exists == "update":
            try:
                await self.client.update(reg)
            except Rejected as exc:
                return "failed", f"exists, and the update was refused: {exc.message}"
            return "registered", "existed; updated"
        try:
            record = await self.client.resolve(reg.handle)
        except NotFound:
            raise Transient("the node says it exists but cannot resolve it") from None
        if _same(record, reg):
            return "registered", "already registered with the same values"
        if f.on_exists == "keep":
            return "failed", "exists with different values; the node's record was kept (on_exists: keep)"
        return "failed", f"already exists with different values: {result.message}"

    def _outcome(self, rule: str, handle: str, state: str, message: str | None, settle: int | None) -> None:
        if settle is not None:
            self.queue.settle(settle, STREAM, handle, state, message)
        self.counters["registered" if state == "registered" else "failed"] += 1
        body: dict[str, Any] = {
            "handle": handle,
            "state": state,
            "rule": rule,
            "ts": time.time_ns() // 1_000_000,
        }
        if state == "failed":
            body["error"] = message
            self.last_error = message
            event(
                log,
                logging.WARNING,
                "identifier registration failed",
                handle=handle,
                rule=rule,
                error=message,
            )
        elif message:
            body["note"] = message
        self.publish("identifiers", body)

    # ---- resolving ----

    async def _resolve(self, device: str, rule: str, handle: str) -> None:
        async with self._resolve_slots:
            body: dict[str, Any] = {"handle": handle, "rule": rule}
            for attempt in range(4):
                try:
                    record = await self.client.resolve(handle)
                except Transient as exc:
                    body["error"] = exc.message
                    await asyncio.sleep(0.5 * 2**attempt)
                    continue
                except (NodeError, IdentifierError) as exc:
                    body["error"] = str(exc)
                    break
                body.pop("error", None)
                body["record"] = record.to_json()
                break
            body["ts"] = time.time_ns() // 1_000_000
            self.counters["resolved" if "record" in body else "resolve_failed"] += 1
            self.publish(f"{device}/resolved", body)

    async def check_templates(self) -> list[tuple[str, str]]:
        """Fetch the templates the rules name and check each rule's values against them:
        (rule name, problem). A node that cannot be reached now is checked at registration."""
        problems = []
        for rule in self.rules.by_name.values():
            if rule.trigger is None or rule.template is None or self.client.kind != "snms":
                continue
            try:
                t = await self._template(rule.template)
            except NotFound as exc:
                problems.append((rule.name, exc.message))
                continue
            except NodeError as exc:
                event(
                    log,
                    logging.WARNING,
                    "cannot fetch the template now; it is checked at registration",
                    rule=rule.name,
                    error=exc.message,
                )
                continue
            assert t is not None
            problems += [(rule.name, p) for p in t.shape_problems([(v.index, v.type) for v in rule.values])]
        return problems

    def status(self) -> dict[str, Any]:
        return {
            "queued": self.queue.depth_of(STREAM),
            "node_reachable": self.connected,
            "last_error": self.last_error,
            **self.counters,
        }


def _same(record: Record, reg: Registration) -> bool:
    ours = {(v.index, v.type, v.value) for v in reg.values}
    theirs = {(v.index, v.type, v.value) for v in record.values}
    return ours == theirs and (record.template in (None, reg.template))


__all__ = ["Registrar", "engineering"]
