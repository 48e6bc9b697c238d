"""The durable queue under real faults: a full disk, a read-only file system, a file locked by
another process, a power cut that rolls the file back, a damaged file. Nothing is lost, no
`seq` is reused, and writing resumes by itself."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import edgegw.gateway.durable_queue as dq
import pytest
from edgegw.gateway.durable_queue import DurableQueue, QueueUnavailable
from edgegw.gateway.sequences import BLOCK, FILE


def _fill_until_commit_fails(q: DurableQueue, fs) -> int:  # type: ignore[no-untyped-def]
    fs.fill()
    n = 0
    for n in range(1, 200):  # SQLite may still fit a few pages in what the filler left
        q.append("mqtt", "t/a", b"x" * 2000)
        q._retry_at = 0.0
        if not q.commit():
            return n
    raise AssertionError("the queue kept committing on a full disk")


def test_full_disk_keeps_the_batch_until_space_returns(tmpfs) -> None:  # type: ignore[no-untyped-def]
    q = DurableQueue(tmpfs.path / "q.sqlite3", 10**9)
    q.append("mqtt", "t/a", b"before")
    assert q.commit()
    depth, size = q.depth, q.bytes
    n = _fill_until_commit_fails(q, tmpfs)
    committed_before_failure = n - 1
    assert q.failing and "full" in q.failing
    assert q.commit_failures == 1
    # counters describe the file, not the memory
    assert q.depth == depth + committed_before_failure
    assert q.bytes > size or committed_before_failure == 0
    # more arrives while the disk is full: kept in memory
    for i in range(5):
        q.append("mqtt", "t/a", f"during-{i}".encode())
    assert not q.commit()  # backing off
    tmpfs.free()
    q._retry_at = 0.0
    assert q.commit()
    assert q.failing is None
    bodies = [b for _, _, b in q.after("mqtt", 0, 1000)]
    assert bodies[0] == b"before"
    assert bodies[-5:] == [f"during-{i}".encode() for i in range(5)]
    assert len(bodies) == 1 + n + 5
    assert q.depth == len(bodies)
    q.close()


def test_start_on_a_read_only_file_system_is_refused_with_one_line(tmpfs) -> None:  # type: ignore[no-untyped-def]
    DurableQueue(tmpfs.path / "q.sqlite3", 10**9).close()
    tmpfs.readonly(True)
    try:
        with pytest.raises(QueueUnavailable) as err:
            DurableQueue(tmpfs.path / "q.sqlite3", 10**9)
        assert str(tmpfs.path / "q.sqlite3") in str(err.value)
        assert not list(tmpfs.path.glob("*.corrupt-*"))
    finally:
        tmpfs.readonly(False)


# another process holding the file: a writer's transaction, or (`whole`) exclusive locking mode,
# which in WAL mode keeps even readers out
_LOCKER = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
if sys.argv[3] == "whole":
    db.execute("PRAGMA locking_mode=EXCLUSIVE")
db.execute("BEGIN EXCLUSIVE")
db.execute("CREATE TABLE IF NOT EXISTS other (x)")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
db.execute("COMMIT")
"""


def _lock(path: Path, seconds: float, whole: bool = False) -> subprocess.Popen[str]:
    p = subprocess.Popen(
        [sys.executable, "-c", _LOCKER, str(path), str(seconds), "whole" if whole else "writer"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert p.stdout is not None and p.stdout.readline().strip() == "locked"
    return p


def test_file_locked_by_another_process_is_retried_not_moved_aside(tmp_path: Path) -> None:
    path = tmp_path / "q.sqlite3"
    q = DurableQueue(path, 10**9)
    q.append("mqtt", "t", b"a")
    assert q.commit()
    locker = _lock(path, 1.5)
    try:
        q.append("mqtt", "t", b"b")
        t0 = time.monotonic()
        assert not q.commit()
        assert time.monotonic() - t0 < 1.0  # the event loop is not held for the lock's duration
        assert "locked" in (q.failing or "")
        assert q.depth == 1
    finally:
        locker.wait(10)
    q._retry_at = 0.0
    assert q.commit()
    assert [b for _, _, b in q.after("mqtt", 0, 10)] == [b"a", b"b"]
    q.close()
    # locked at start: waited for, never treated as corrupt
    locker = _lock(path, 1.5, whole=True)
    try:
        t0 = time.monotonic()
        q2 = DurableQueue(path, 10**9)
        assert time.monotonic() - t0 > 0.5  # it did wait for the lock
    finally:
        locker.wait(10)
    assert q2.depth == 2
    assert not list(tmp_path.glob("*.corrupt-*"))
    q2.close()


def test_file_locked_for_too_long_at_start_is_refused(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "q.sqlite3"
    DurableQueue(path, 10**9).close()
    monkeypatch.setattr(dq, "OPEN_RETRY", 1.0)
    locker = _lock(path, 4, whole=True)
    try:
        with pytest.raises(QueueUnavailable, match="locked"):
            DurableQueue(path, 10**9)
    finally:
        locker.kill()
        locker.wait()
    assert not list(tmp_path.glob("*.corrupt-*"))


def test_power_cut_rollback_never_reuses_a_seq(tmp_path: Path) -> None:
    path = tmp_path / "q.sqlite3"
    q = DurableQueue(path, 10**9)
    issued = [q.next_seq("mqtt/a") for _ in range(50)]
    assert q.commit()
    q.db.close()  # killed: no clean stop
    # what a power cut with fsync: normal can leave behind: the last transactions gone, the
    # counter back at 10 although 50 were published, and the machine booted anew
    db = sqlite3.connect(path)
    db.execute("UPDATE sequences SET value = 10 WHERE name = 'mqtt/a'")
    db.commit()
    db.close()
    reserve = tmp_path / FILE
    data = json.loads(reserve.read_text())
    assert data["clean"] is False and data["marks"]["mqtt/a"] >= 50
    data["boot_id"] = "another-boot"
    reserve.write_text(json.dumps(data))
    q2 = DurableQueue(path, 10**9)
    nxt = q2.next_seq("mqtt/a")
    assert nxt > max(issued)
    assert nxt <= max(issued) + 2 * BLOCK
    q2.close()


def test_killed_process_continues_exactly(tmp_path: Path) -> None:
    path = tmp_path / "q.sqlite3"
    q = DurableQueue(path, 10**9)
    for _ in range(7):
        q.next_seq("mqtt/a")
    assert q.commit()
    q.db.close()  # SIGKILL: the same boot, committed pages are in the OS
    q2 = DurableQueue(path, 10**9)
    assert q2.next_seq("mqtt/a") == 8
    q2.close()
    q3 = DurableQueue(path, 10**9)
    assert q3.next_seq("mqtt/a") == 9  # after a clean stop too
    q3.close()


def test_unreadable_file_replaced_continues_above_the_marks(tmp_path: Path) -> None:
    path = tmp_path / "q.sqlite3"
    q = DurableQueue(path, 10**9)
    for _ in range(20):
        q.next_seq("mqtt/a")
    q.close()
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    path.write_bytes(b"garbage" * 1000)
    q2 = DurableQueue(path, 10**9)
    assert list(tmp_path.glob("q.sqlite3.corrupt-*"))
    assert q2.next_seq("mqtt/a") > 20
    q2.close()


def test_disk_budget_bounds_the_file_and_it_shrinks_when_drained(tmp_path: Path) -> None:
    path = tmp_path / "q.sqlite3"
    cap = 4 * 1024**2
    q = DurableQueue(path, cap)
    body = b'{"seq":1,"ts":1795258863272,"points":{"t":{"v":215.3,"q":"good"}}}'[:74]
    for _ in range(200):
        for _ in range(1000):
            q.append("mqtt", "edgegw/gw-1/im-01/data", body)
        assert q.commit()
    q.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    on_disk = sum(Path(str(path) + s).stat().st_size for s in ("", "-wal") if Path(str(path) + s).exists())
    assert q.dropped > 0
    assert on_disk <= cap * 1.1, on_disk
    # drained: the pages go back to the file system
    while True:
        rows = q.after("mqtt", 0, 20_000)
        if not rows:
            break
        q.ack(r[0] for r in rows)  # one ack list larger than SQLite's variable limit allows
        assert q.commit()
    q.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert path.stat().st_size < cap / 4
    q.close()


def test_memory_is_bounded_while_commits_fail(tmpfs) -> None:  # type: ignore[no-untyped-def]
    q = DurableQueue(tmpfs.path / "q.sqlite3", 10**9, max_pending_bytes=100_000)
    _fill_until_commit_fails(q, tmpfs)
    q.append("identifier", "88.1/x", b"registration")
    for i in range(2000):
        q.append("mqtt", "t", f"{i:0100d}".encode())
    assert q._pending_bytes <= 100_000
    assert q.dropped_unwritten > 0
    # registrations are never shed
    assert any(s == "identifier" for s, _, _ in q._pending)
    tmpfs.free()
    q._retry_at = 0.0
    assert q.commit()
    assert q.depth_of("identifier") == 1
    q.close()
