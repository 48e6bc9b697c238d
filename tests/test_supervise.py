"""The supervisor of long-lived tasks: an exception is reported and the task restarts; a
cancellation ends it."""

from __future__ import annotations

import asyncio
import logging

import pytest
from edgegw.gateway import logs


def test_a_failing_task_is_reported_and_restarted(caplog: pytest.LogCaptureFixture) -> None:
    runs: list[int] = []
    crashes: list[tuple[str, int]] = []

    async def body() -> None:
        runs.append(1)
        if len(runs) < 3:
            raise ValueError(f"boom {len(runs)}")
        await asyncio.sleep(3600)

    async def main() -> None:
        task = asyncio.create_task(
            logs.supervise("poll-x", body, lambda exc, n: crashes.append((str(exc), n)))
        )
        for _ in range(400):  # restarts after 1 s, then 2 s
            await asyncio.sleep(0.01)
            if len(runs) == 3:
                break
        else:
            await asyncio.sleep(3.5)
        assert len(runs) == 3
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    with caplog.at_level(logging.ERROR):
        asyncio.run(asyncio.wait_for(main(), 10))
    assert crashes == [("boom 1", 1), ("boom 2", 2)]
    lines = [r for r in caplog.records if r.getMessage() == "task failed; restarting it"]
    assert len(lines) == 2 and lines[0].fields["task"] == "poll-x"  # type: ignore[attr-defined]


def test_an_error_while_reporting_does_not_end_the_supervisor() -> None:
    runs: list[int] = []

    async def body() -> None:
        runs.append(1)
        if len(runs) == 1:
            raise RuntimeError("first")

    def bad_report(exc: BaseException, n: int) -> None:
        raise KeyError("report")

    asyncio.run(asyncio.wait_for(logs.supervise("t", body, bad_report), 5))
    assert len(runs) == 2
