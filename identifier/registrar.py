"""The registration queue: rule firings -> durable queue -> secondary node, nothing dropped.

Each firing is committed to the `identifier` stream of the gateway's durable queue before
anything is sent. The sender takes the oldest pending firings: one is registered on its own,
a backlog goes in batches (`batch_size`, at most 2000). Transient failures (network, timeout,
HTTP 5xx, 504 "maybe registered", a node that keeps refusing the token, an answer that cannot be
read, refused credentials) leave the firings queued and retry with capped exponential backoff
and jitter. "Already exists" is resolved by `on_exists`: `update` updates the record; `keep` and
`fail` compare the node's values with ours, and equal values mean it was already registered (a
retry after a 504 or a crash); different values are a failure (`fail`) or keep the node's
record and report it (`keep`). Permanent failures (template mismatch, no permission, invalid
value) are parked as `failed` with the node's message, and the rest go on. A batch the node
refuses as a whole is sent one by one, so each registration gets its own answer. Every outcome
is published on `P/G/identifiers`.

The queue may fail too (disk full, read-only, locked): nothing is read or sent while a commit
fails (what was settled is not yet on disk, and sending it again would register it twice),
and a read that fails is retried; both back off and are logged at most every 30 s. The sender
runs supervised: an unexpected error is logged with the task's name, counted (`crashes`), and
the sender goes on after a backoff.

The stream is bounded: with `max_queued` registrations waiting (on disk or about to be), a new
firing is refused rather than anything queued dropped: counted (`refused`), published with
state `refused`, logged at most once a minute with the handle and the counts, and `refusing`
says why for readiness. The point's value counts as seen, so the same value does not fire again.

The template check at start (`check_templates`) is deferred, not failed, when the node's
template cannot be read (unreachable, or an answer of the wrong shape): a warning, then the
check runs again in the background until the node answers; every registration is checked
against the template before it is sent anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import random
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from edgegw.gateway.durable_queue import DurableQueue
from edgegw.gateway.logs import RateLimited, event, report_crash, supervise
from edgegw.gateway.normalise import Reading

from .client import (
    BEIJING,
    Exists,
    NodeClient,
    NodeError,
    NotFound,
    Record,
    Registration,
    Rejected,
    Transient,
    Unauthorised,
)
from .rules import STREAM, Firing, RuleSet, engineering, new_value
from .settings import IdentifierRule
from .syntax import IdentifierError
from .templates import RESERVED, Template

log = logging.getLogger("edgegw.identifier")

TASK = "identifier-queue"
TEMPLATED = ("snms", "idhub")  # the kinds whose node holds the templates registrations must fit
COUNT = "idcount"  # queue state `idcount/<year>/<prefix>/<registered|resolved>`: this year's counts
MAX_QUEUED = 100_000
RESOLVE_WAIT = 30.0  # seconds a resolution waits for the registration of the same handle queued here
QUEUE_RETRY_MAX = 10.0  # seconds at most between attempts while the queue cannot be written or read
_UNREADABLE = (ValueError, KeyError, TypeError, IndexError, AttributeError, RecursionError)


def _backoff(attempt: int, ceiling_max: float) -> float:
    ceiling = min(ceiling_max, 0.5 * 2 ** min(attempt - 1, 16))
    return random.uniform(ceiling / 2, ceiling)


class Registrar:
    def __init__(
        self,
        queue: DurableQueue,
        client: NodeClient,
        rules: RuleSet,
        publish: Callable[[str, dict[str, Any]], None],
        batch_size: int = 500,
        retry_max: float = 60.0,
        max_queued: int = MAX_QUEUED,
    ):
        self.queue = queue
        self.client = client
        self.rules = rules
        self.publish = publish  # (topic suffix, payload)
        self.batch_size = batch_size
        self.retry_max = retry_max
        self.max_queued = max_queued
        self.templates: dict[str, Template] = {}
        self.counters = {
            "fired": 0,
            "registered": 0,
            "failed": 0,
            "retries": 0,
            "resolved": 0,
            "resolve_failed": 0,
            "refused": 0,
        }
        self.queued = queue.depth_of(STREAM)  # waiting: committed, or appended and not yet
        self.queue_errors = 0  # rounds that could not write or read the queue
        self.crashes = 0  # internal errors the sender survived
        self.deferred: dict[str, str] = {}  # rule -> why its template check waits for the node
        self.connected = False
        self.last_error: str | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._resolving: set[asyncio.Task[None]] = set()
        self._pending: Counter[str] = Counter()  # handles (lower case) fired here and not yet settled
        self._resolve_slots = asyncio.Semaphore(8)
        self._attempt = 0
        self._commit_error: str | None = None
        self._recheck_at = 0.0
        self._recheck_attempt = 0
        self._ratelimit = RateLimited(log, 30.0)
        self._refusals = RateLimited(log, 60.0)

    @property
    def refused(self) -> int:
        """Firings refused because the stream held `max_queued` registrations."""
        return self.counters["refused"]

    @property
    def refusing(self) -> str | None:
        """Why new firings are refused now (for readiness), or None."""
        if self.queued < self.max_queued:
            return None
        return (
            f"identifier queue full: {self.queued} registrations waiting "
            f"(identifier.max_queued {self.max_queued}); new firings are refused"
        )

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
            if self.queued >= self.max_queued:
                self._refuse(firing)
                continue
            self.queue.append(STREAM, firing.handle, firing.body())  # committed with the value
            self.queued += 1
            self._pending[firing.handle.lower()] += 1
            self.counters["fired"] += 1
            self._wake.set()
        for rule, value in self._changed(device, by_id, self.rules.resolves, "resolve"):
            handle = self.rules.handle_for(rule, value, ts_ms, lookup)
            task = asyncio.create_task(self._resolve(device, rule.name, handle))
            self._resolving.add(task)
            task.add_done_callback(self._resolving.discard)

    def _refuse(self, f: Firing) -> None:
        """The stream is full: this firing is not queued, and says so (nothing queued is dropped)."""
        self.counters["refused"] += 1
        reason = self.refusing or "identifier queue full"
        self.last_error = reason
        self._refusals.log(
            "refused",
            logging.ERROR,
            "identifier queue full: firing refused, not registered",
            handle=f.handle,
            rule=f.rule,
            refused_total=self.refused,
            queued=self.queued,
            max_queued=self.max_queued,
        )
        self.publish(
            "identifiers",
            {
                "handle": f.handle,
                "state": "refused",
                "rule": f.rule,
                "error": reason,
                "ts": time.time_ns() // 1_000_000,
            },
        )

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
        self._task = asyncio.create_task(
            supervise(TASK, self._loop, self._crashed, backoff_max=self.retry_max), name=TASK
        )
        self._task.add_done_callback(report_crash)
        if self.queued:
            event(
                log,
                logging.INFO,
                "identifier registrations queued from the previous run",
                count=self.queued,
            )

    async def stop(self) -> None:
        for t in [self._task, *self._resolving]:
            if t is not None:
                t.cancel()
        await asyncio.gather(
            *(t for t in [self._task, *self._resolving] if t is not None), return_exceptions=True
        )
        await self.client.close()

    def _crashed(self, exc: BaseException, failures: int) -> None:
        """The sender ended with an error (the supervisor logged it and restarts it)."""
        self.crashes += 1
        self.last_error = f"internal error: {exc!r}"[:200]

    async def _loop(self) -> None:
        self._wake.set()  # (re)started: look at what is queued at once
        delay = 0.0
        while True:
            await self._pause(delay)
            delay = await self._round()

    async def _pause(self, delay: float) -> None:
        if delay:
            await asyncio.sleep(delay)  # new firings during a backoff wait for it to end
        else:
            timeout = max(0.0, self._recheck_at - time.monotonic()) if self.deferred else None
            with contextlib.suppress(TimeoutError):  # on time out: check the deferred templates
                await asyncio.wait_for(self._wake.wait(), timeout)
        self._wake.clear()

    async def _round(self) -> float:
        """Send the oldest queued registrations once; the delay before the next round."""
        if self.deferred and time.monotonic() >= self._recheck_at:
            await self._recheck()
        if not self._commit():  # every firing is on disk before it is sent
            return self._queue_trouble("written", self._commit_error or "the commit failed")
        try:
            rows = self.queue.after(STREAM, 0, self.batch_size)
        except sqlite3.Error as exc:
            return self._queue_trouble("read", str(exc))
        if not rows:
            self._attempt = 0
            return 0.0
        try:
            await self._send(self._decode(rows))
        except asyncio.CancelledError:
            raise
        except Transient as exc:
            return self._node_trouble(exc)
        except Exception as exc:  # a bug must not end the queue: report it and retry later
            return self._internal_error(exc)
        self._attempt = 0
        self.connected = True
        self._commit()  # if this fails, the next round sends nothing until it succeeds
        self._wake.set()  # more may be waiting
        return 0.0

    def _commit(self) -> bool:
        """Commit the queue; False if it cannot be written (then nothing may be read and sent:
        settled registrations are not yet removed on disk)."""
        try:
            done = self.queue.commit()
        except sqlite3.Error as exc:  # e.g. the connection is closed
            self._commit_error = str(exc)
            return False
        if done is False:
            self._commit_error = self.queue.failing
            return False
        if done is True:  # all on disk: the exact count
            self.queued = self.queue.depth_of(STREAM)
        return True

    def _queue_trouble(self, what: str, reason: str) -> float:
        self.queue_errors += 1
        self._attempt += 1
        delay = _backoff(self._attempt, min(self.retry_max, QUEUE_RETRY_MAX))
        self.last_error = f"the queue cannot be {what}: {reason}"
        self._ratelimit.log(
            f"queue-{what}",
            logging.WARNING,
            f"identifier registrations held: the queue cannot be {what}; nothing is sent until it can",
            error=reason,
            queued=self.queued,
            retry_in=round(delay, 1),
        )
        return delay

    def _node_trouble(self, exc: Transient) -> float:
        self._attempt += 1
        self.counters["retries"] += 1
        self.connected = False
        self.last_error = exc.message
        delay = _backoff(self._attempt, self.retry_max)
        self._ratelimit.log(
            "transient",
            logging.WARNING,
            "identifier node unavailable; registrations stay queued",
            error=exc.message,
            queued=self.queued,
            retry_in=round(delay, 1),
        )
        return delay

    def _internal_error(self, exc: Exception) -> float:
        self.crashes += 1
        self._attempt += 1
        self.counters["retries"] += 1
        self.last_error = f"internal error: {exc!r}"[:200]
        delay = _backoff(self._attempt, self.retry_max)
        if self._ratelimit.allow("internal"):
            log.error(
                "identifier queue error; retrying",
                exc_info=exc,
                extra={
                    "fields": {
                        "task": TASK,
                        "failures": self.crashes,
                        "queued": self.queued,
                        "retry_in": round(delay, 1),
                    }
                },
            )
        return delay

    def _decode(self, rows: list[tuple[int, str, bytes]]) -> list[tuple[int, Firing]]:
        """The firings of queued rows; a row that cannot be read is parked as failed, so it never
        holds up the rest."""
        out = []
        for row_id, key, body in rows:
            try:
                out.append((row_id, Firing.from_body(body)))
            except _UNREADABLE as exc:
                message = f"the queued registration cannot be read: {exc!r}"[:300]
                self._outcome("", key, "failed", message, settle=row_id)
        return out

    async def _template(self, version: str | None) -> Template | None:
        if version is None or self.client.kind not in TEMPLATED:
            return None
        t = self.templates.get(version)
        if t is None:
            t = await self.client.template(version)  # NodeErrors propagate to the caller
            self.templates[version] = t
        return t

    async def _send(self, batch: list[tuple[int, Firing]]) -> None:
        ready: list[tuple[int, Firing]] = []
        for row_id, f in batch:
            try:
                t = await self._template(f.template)
            except Unauthorised as exc:
                raise Transient(exc.message) from None
            except Rejected as exc:  # no such template, or the node will not show it
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
            results: list[NodeError | None] = [await self._register_one(regs[0])]
        else:
            try:
                results = await self.client.register_batch(regs)
            except Unauthorised as exc:
                raise Transient(exc.message) from None
            except Rejected as exc:
                event(
                    log,
                    logging.WARNING,
                    "the node refused the batch as a whole; sending its registrations one by one",
                    error=exc.message,
                    count=len(regs),
                )
                results = [await self._register_one(reg) for reg in regs]
        transient: Transient | None = None
        for (row_id, f), reg, result in zip(ready, regs, results, strict=True):
            try:
                state, message = await self._settle_result(f, reg, result)
            except Transient as exc:
                transient = exc
                continue
            self._outcome(f.rule, f.handle, state, message, settle=row_id)
        if transient is not None:
            self._commit()  # keep what did settle
            raise transient

    async def _register_one(self, reg: Registration) -> NodeError | None:
        """The node's verdict on one registration; Transient (refused credentials included) raises."""
        try:
            await self.client.register(reg)
        except Unauthorised as exc:
            raise Transient(exc.message) from None
        except Rejected as exc:
            return exc
        return None

    async def _settle_result(
        self, f: Firing, reg: Registration, result: NodeError | None
    ) -> tuple[str, str | None]:
        if result is None:
            return "registered", None
        if isinstance(result, Transient | Unauthorised):  # refused credentials: fix, not park
            raise Transient(result.message, getattr(result, "maybe_done", False))
        if not isinstance(result, Exists):
            return "failed", result.message
        if f.on_exists == "update":
            try:
                await self.client.update(reg)
            except Unauthorised as exc:
                raise Transient(exc.message) from None
            except Rejected as exc:
                return "failed", f"exists, and the update was refused: {exc.message}"
            return "registered", "existed; updated"
        try:
            record = await self.client.resolve(reg.handle)
        except NotFound:
            raise Transient("the node says it exists but cannot resolve it") from None
        except Unauthorised as exc:
            raise Transient(exc.message) from None
        except Rejected as exc:
            return "failed", f"exists, and the node refused to show its record: {exc.message}"
        if _same(record, reg):
            return "registered", "already registered with the same values"
        if f.on_exists == "keep":
            return "failed", "exists with different values; the node's record was kept (on_exists: keep)"
        return "failed", f"already exists with different values: {result.message}"

    def _outcome(self, rule: str, handle: str, state: str, message: str | None, settle: int | None) -> None:
        if settle is not None:
            self.queue.settle(settle, STREAM, handle, state, message)
            self.queued -= 1
            self._pending[handle.lower()] -= 1
            if self._pending[handle.lower()] <= 0:
                del self._pending[handle.lower()]
            if state == "registered":
                self._count(handle, "registered")  # committed with the settlement
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

    def _count(self, handle: str, what: str) -> None:
        """One more registration or resolution this year (Beijing time, the node's) under the
        handle's prefix, in the queue's state: durable with the next commit."""
        prefix = handle.partition("/")[0]
        name = f"{COUNT}/{year_now()}/{prefix}/{what}"
        try:
            n = int(self.queue.get_state(name) or 0)
        except ValueError:
            n = 0
        self.queue.put_state(name, str(n + 1))

    def this_year(self) -> dict[str, dict[str, int]]:
        """This year's registrations and resolutions per prefix: {prefix: {registered, resolved}}."""
        return yearly_counts(self.queue.state_items(f"{COUNT}/{year_now()}/"), year_now())

    # ---- resolving ----

    async def _resolve(self, device: str, rule: str, handle: str) -> None:
        # a part read right after it was made: its registration, queued here, goes first
        deadline = time.monotonic() + RESOLVE_WAIT
        while handle.lower() in self._pending and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
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
                except Exception as exc:  # a bug: reported, and the resolution says it failed
                    log.error(
                        "identifier resolution failed with an internal error",
                        exc_info=exc,
                        extra={"fields": {"handle": handle, "rule": rule}},
                    )
                    body["error"] = f"internal error: {exc!r}"[:200]
                    break
                body.pop("error", None)
                body["record"] = record.to_json()
                break
            body["ts"] = time.time_ns() // 1_000_000
            self.counters["resolved" if "record" in body else "resolve_failed"] += 1
            if "record" in body:
                self._count(handle, "resolved")
            self.publish(f"{device}/resolved", body)

    # ---- the template check ----

    async def check_templates(self) -> list[tuple[str, str]]:
        """Fetch the templates the rules name and check each rule's values against them:
        (rule name, problem). A template that cannot be read now (the node unreachable, or its
        answer of the wrong shape) defers that rule's check: a warning, no problem, and the
        sender checks it again until the node answers (and each registration at sending)."""
        problems: list[tuple[str, str]] = []
        for rule in self.rules.by_name.values():
            if rule.trigger is None or rule.template is None or self.client.kind not in TEMPLATED:
                continue
            found, why = await self._check_rule(rule)
            if why is not None:
                self.deferred[rule.name] = why
                event(
                    log,
                    logging.WARNING,
                    "template check deferred: the node's template cannot be read now; "
                    "checked again until it can, and each registration before it is sent",
                    rule=rule.name,
                    template=rule.template,
                    error=why,
                )
                continue
            problems += [(rule.name, p) for p in found]
        if self.deferred:
            self._recheck_at = time.monotonic() + _backoff(1, self.retry_max)
        return problems

    async def _check_rule(self, rule: IdentifierRule) -> tuple[list[str], str | None]:
        """(problems, None) once the node's template was read; ([], why) when it cannot be now."""
        try:
            t = await self._template(rule.template)
        except NotFound as exc:
            return [exc.message], None
        except NodeError as exc:
            return [], exc.message
        except Exception as exc:  # a bug: the check waits, the gateway runs
            log.error(
                "template check failed with an internal error",
                exc_info=exc,
                extra={"fields": {"rule": rule.name}},
            )
            return [], f"internal error: {exc!r}"[:200]
        if t is None:
            return [], None
        return t.shape_problems([(v.index, v.type) for v in rule.values]), None

    async def _recheck(self) -> None:
        """The deferred template checks, once the node answers: a rule that does not fit is
        reported (the gateway runs on; its registrations fail with the reason)."""
        for name in list(self.deferred):
            rule = self.rules.by_name.get(name)
            if rule is None:
                del self.deferred[name]
                continue
            problems, why = await self._check_rule(rule)
            if why is not None:
                self.deferred[name] = why
                self._recheck_attempt += 1
                self._recheck_at = time.monotonic() + _backoff(self._recheck_attempt, self.retry_max)
                return
            del self.deferred[name]
            if problems:
                self.last_error = f"rule {name}: " + "; ".join(problems)
                event(
                    log,
                    logging.ERROR,
                    "identifier rule does not fit the node's template; its registrations will fail",
                    rule=name,
                    template=rule.template,
                    problems="; ".join(problems),
                )
            else:
                event(log, logging.INFO, "template check done", rule=name, template=rule.template)
        self._recheck_attempt = 0

    def status(self) -> dict[str, Any]:
        return {
            "queued": self.queued,
            "max_queued": self.max_queued,
            "refusing": self.refusing,
            "node_reachable": self.connected,
            "last_error": self.last_error,
            "template_check": "deferred" if self.deferred else "done",
            "queue_errors": self.queue_errors,
            "crashes": self.crashes,
            **self.counters,
            "this_year": self.this_year(),
        }


REWARD = {"registered": 100_000, "resolved": 20_000}  # the municipal policy's yearly thresholds


def year_now() -> int:
    return dt.datetime.now(BEIJING).year


def yearly_counts(items: Iterable[tuple[str, str]], year: int) -> dict[str, dict[str, int]]:
    """{prefix: {registered, resolved}} of the year from `idcount/<year>/<prefix>/<what>` states."""
    out: dict[str, dict[str, int]] = {}
    for name, value in items:
        parts = name.split("/")
        if len(parts) != 4 or parts[0] != COUNT or parts[1] != str(year) or parts[3] not in REWARD:
            continue
        try:
            n = int(value)
        except ValueError:
            continue
        out.setdefault(parts[2], {"registered": 0, "resolved": 0})[parts[3]] = n
    return out


def _same(record: Record, reg: Registration) -> bool:
    """Whether the node's record holds our values; what the node adds itself at the reserved
    indexes (the template version at 1001, docs/dev-tools/snms/v5/handle-operate.md) is not ours."""
    ours = {(v.index, v.type, v.value) for v in reg.values}
    theirs = {(v.index, v.type, v.value) for v in record.values if v.index not in RESERVED}
    return ours == theirs and (record.template in (None, reg.template))


__all__ = ["Registrar", "engineering"]
