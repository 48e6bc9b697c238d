"""Structured logs: one line per event, `key=value` pairs (logfmt), never a secret.

Secrets never reach a log line because config values are never logged whole: events name
devices, hosts and reasons only.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        parts = [
            f"ts={ts}.{int(record.msecs):03d}Z",
            f"level={record.levelname.lower()}",
            f"logger={record.name}",
            f"msg={_quote(record.getMessage())}",
        ]
        fields = getattr(record, "fields", None)
        if fields:
            parts += [f"{k}={_quote(str(v))}" for k, v in fields.items()]
        if record.exc_info and record.levelno >= logging.ERROR:
            # programming errors only: user-caused conditions never get here with exc_info
            parts.append(f"error={_quote(repr(record.exc_info[1]))[:500]}")
            tb = record.exc_info[2]
            while tb is not None and tb.tb_next is not None:
                tb = tb.tb_next
            if tb is not None:  # where it happened, for the bug report
                code = tb.tb_frame.f_code
                parts.append(f"at={_quote(f'{code.co_filename}:{tb.tb_lineno}:{code.co_name}')}")
        return " ".join(parts)


def _quote(s: str) -> str:
    if s and not any(c in s for c in ' "=\n\t'):
        return s
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def setup(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LogfmtFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("pymodbus", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    # asyncio reports errors nobody retrieved (a task that died unsupervised): keep those
    logging.getLogger("asyncio").setLevel(logging.ERROR)
    for chatty in ("httpx", "httpcore"):  # one line per request otherwise
        logging.getLogger(chatty).setLevel(logging.WARNING)


def set_level(level: str) -> None:
    logging.getLogger().setLevel(level.upper())


def event(logger: logging.Logger, level: int, msg: str, **fields: Any) -> None:
    if logger.isEnabledFor(level):
        logger.log(level, msg, extra={"fields": fields})


class RateLimited:
    """At most one line per key per `every` seconds; the next line says how many were held back."""

    def __init__(self, logger: logging.Logger, every: float = 10.0):
        self.logger = logger
        self.every = every
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def allow(self, key: str) -> bool:
        """Whether a line for `key` may go out now (else it is counted as held back)."""
        now = time.monotonic()
        if now - self._last.get(key, -1e9) < self.every:
            self._held[key] = self._held.get(key, 0) + 1
            return False
        self._last[key] = now
        return True

    def log(self, key: str, level: int, msg: str, **fields: Any) -> None:
        if not self.allow(key):
            return
        held = self._held.pop(key, 0)
        if held:
            fields["suppressed"] = held
        event(self.logger, level, msg, **fields)


async def supervise(
    name: str,
    run: Callable[[], Awaitable[None]],
    on_crash: Callable[[BaseException, int], None] | None = None,
    backoff_max: float = 30.0,
) -> None:
    """Run a long-lived coroutine for good: an exception is logged with the task's name, handed
    to `on_crash` (e.g. to mark a device offline with the reason), and the coroutine restarts
    after a backoff of 1 s doubling to `backoff_max` (reset after a minute without a failure)."""
    crashes = 0
    logger = logging.getLogger("edgegw")
    while True:
        started = time.monotonic()
        try:
            await run()
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if time.monotonic() - started > 60:
                crashes = 0
            crashes += 1
            delay = min(backoff_max, 2.0 ** (crashes - 1))
            logger.error(
                "task failed; restarting it",
                exc_info=exc,
                extra={"fields": {"task": name, "failures": crashes, "restart_in_s": delay}},
            )
            if on_crash is not None:
                try:
                    on_crash(exc, crashes)
                except Exception as inner:
                    logger.error(
                        "reporting a failed task failed", exc_info=inner, extra={"fields": {"task": name}}
                    )
            await asyncio.sleep(delay)


def report_crash(task: asyncio.Task[Any]) -> None:
    """Done-callback for long-running tasks: a task that ends with an error says so."""
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        logging.getLogger("edgegw").error(
            "internal task ended with an error", exc_info=exc, extra={"fields": {"task": task.get_name()}}
        )
