"""The durable queue: what must not be lost is committed to SQLite before it is sent.

One SQLite file in `data_dir` (WAL journal). Appends are buffered in memory for at most one
commit interval and written in one transaction together with the per-device sequence numbers,
so after a crash `seq` continues exactly after the last committed message: no gap, no reuse.
A message leaves the queue only when its consumer acknowledges it (for MQTT: the PUBACK).

Several streams share the file: `mqtt` (data messages) and `identifier` (registrations).
Policy when full (`max_bytes`): the oldest messages of the droppable streams (`mqtt`) are
dropped, counted and logged, never silently; identifier registrations are never dropped.
A message that is settled can leave an outcome row (registered, failed with the reason, …),
so that what happened to it can be shown later; failures are kept, successes are trimmed to
the most recent. A small key/value table keeps state that must change atomically with the
appends (e.g. the last value a rule fired on).

A commit that fails (disk full, a read-only file, the file locked by another process) loses
nothing: the batch stays in memory, bounded (beyond `max_pending_bytes` the oldest messages of
the droppable streams are dropped and counted), `failing` holds the reason for /readyz, and the
next commit retries it, backing off from 0.5 s to 10 s. Counters change only after COMMIT.

Only a file that SQLite reports as not a database or corrupt is moved aside (a fresh one is
started, so a damaged disk cache never stops the gateway); a busy or locked file is retried
for `OPEN_RETRY` seconds, and any other failure to open (read-only, no space) refuses to start
with one clear line (`QueueUnavailable`). Sequence numbers continue above the durable marks of
gateway/sequences.py when the file was replaced or a power cut may have rolled it back.

Disk budget: `max_bytes` bounds the messages as stored, each counted as its body, its topic
and `ROW_OVERHEAD` bytes of SQLite record and page overhead, across all streams; the oldest
droppable messages go first. Freed pages return to the file system (incremental vacuum), and
the write-ahead log is truncated to `WAL_LIMIT` after each checkpoint, so the files in
`data_dir` stay within `max_bytes` plus a few MiB.
"""

from __future__ import annotations

import builtins
import logging
import sqlite3
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from .logs import RateLimited, event
from .sequences import FILE as RESERVE_FILE
from .sequences import SequenceReserve

log = logging.getLogger("edgegw.queue")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: the sender tracks the last id sent
    stream TEXT NOT NULL,
    key TEXT NOT NULL,
    body BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS sequences (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS outcomes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    stream TEXT NOT NULL,
    key TEXT NOT NULL,
    state TEXT NOT NULL,
    message TEXT,
    ts INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS outcomes_by_key ON outcomes (stream, key);
CREATE TABLE IF NOT EXISTS state (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""
ROW_OVERHEAD = 48  # bytes per stored message beyond body and topic (record header, cell, page slack)
WAL_LIMIT = 4 * 1024**2
OPEN_RETRY = 10.0  # seconds a busy or locked file is retried at start
CHUNK = 10_000  # ids per statement, well under SQLite's variable limit (32,766)
KEEP_OUTCOMES = 10_000  # successful outcomes kept per stream; failures are kept until cleared
_SYNC = {"off": "OFF", "normal": "NORMAL", "full": "FULL"}


def _salvage_sequences(path: Path) -> list[tuple[str, int]]:
    """The sequence numbers of a damaged queue file, if SQLite can still read that table."""
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return [(str(n), int(v)) for n, v in db.execute("SELECT name, value FROM sequences")]
        finally:
            db.close()
    except (sqlite3.Error, ValueError, TypeError):
        return []


class QueueUnavailable(Exception):
    """The queue file cannot be opened (read-only, no space, locked for too long)."""


_CORRUPT = {11, 26}  # SQLITE_CORRUPT, SQLITE_NOTADB


def _is_corrupt(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in _CORRUPT
    return not isinstance(exc, sqlite3.OperationalError) and isinstance(exc, sqlite3.DatabaseError)


def _is_busy(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (5, 6)  # SQLITE_BUSY, SQLITE_LOCKED
    return "locked" in str(exc) or "busy" in str(exc)


def _row_size(key: str, body: bytes) -> int:
    return len(body) + len(key) + ROW_OVERHEAD


class DurableQueue:
    def __init__(
        self,
        path: Path,
        max_bytes: int,
        fsync: str = "normal",
        droppable: frozenset[str] = frozenset({"mqtt"}),
        max_pending_bytes: int | None = None,
    ):
        self.path = path
        self.max_bytes = max_bytes
        self.fsync = fsync
        self.droppable = droppable
        self.max_pending_bytes = max_pending_bytes or min(max(max_bytes // 4, 4 * 1024**2), 64 * 1024**2)
        self._pending: list[tuple[str, str, bytes]] = []
        self._pending_bytes = 0
        self._acked: list[int] = []
        self._outcomes: list[tuple[str, str, str, str | None, int]] = []
        self._seq: dict[str, int] = {}
        self._seq_dirty: set[str] = set()
        self._state: dict[str, str] = {}
        self._state_dirty: set[str] = set()
        self.depths: dict[str, int] = {}
        self.sizes: dict[str, int] = {}
        self.dropped = 0  # dropped to keep within max_bytes or max_pending_bytes
        self.dropped_unwritten = 0  # of those, dropped from memory while commits failed
        self.failing: str | None = None  # why the last commit failed; None once one succeeds
        self.commit_failures = 0
        self._retry_at = 0.0
        self._retry_delay = 0.0
        self._ratelimit = RateLimited(log, 60.0)
        self.reserve = SequenceReserve(path.with_name(RESERVE_FILE))
        self.db = self._open()

    @property
    def depth(self) -> int:
        return sum(self.depths.values())

    @property
    def bytes(self) -> int:
        return sum(self.sizes.values())

    @property
    def pending(self) -> int:
        """Messages appended but not yet committed."""
        return len(self._pending)

    def depth_of(self, stream: str) -> int:
        return self.depths.get(stream, 0)

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + OPEN_RETRY
        replaced = False
        salvaged: list[tuple[str, int]] = []
        while True:
            try:
                db = self._connect()
                row = db.execute("PRAGMA quick_check").fetchone()
                if row is None or row[0] != "ok":
                    db.close()
                    raise sqlite3.DatabaseError(f"integrity check failed: {row[0] if row else 'no answer'}")
                break
            except sqlite3.Error as exc:
                if _is_corrupt(exc):
                    salvaged = self._move_aside(exc)
                    replaced = True
                    deadline = time.monotonic() + OPEN_RETRY
                    continue
                if _is_busy(exc) and time.monotonic() < deadline:
                    time.sleep(0.5)
                    continue
                raise QueueUnavailable(f"cannot open the queue file {self.path}: {exc}") from None
        try:
            if salvaged:
                # seq continues after what the damaged file had issued: a gap shows the loss,
                # a repeated seq would hide it
                db.executemany("INSERT OR REPLACE INTO sequences (name, value) VALUES (?, ?)", salvaged)
            stored = {str(n): int(v) for n, v in db.execute("SELECT name, value FROM sequences")}
            for name, value in db.execute("SELECT name, value FROM state"):
                self._state[name] = value
            for stream, n, size in db.execute(
                "SELECT stream, count(*), coalesce(sum(length(body) + length(key)), 0) "
                "FROM messages GROUP BY stream"
            ):
                self.depths[stream], self.sizes[stream] = n, size + n * ROW_OVERHEAD
        except sqlite3.Error as exc:
            db.close()
            raise QueueUnavailable(f"cannot read the queue file {self.path}: {exc}") from None
        trusted: set[str] | None = None
        if replaced:  # what the damaged file still told; the rest continues above its marks
            trusted = {n for n, _ in salvaged}
        elif self.fsync != "full" and self.reserve.power_loss_possible:
            trusted = set()
        if trusted is not None and set(self.reserve.marks) - trusted:
            event(
                log,
                logging.WARNING,
                "sequence numbers continue above their reserved marks",
                reason="queue file replaced" if replaced else "unclean stop before a restart of the machine",
            )
        self._seq = self.reserve.start(stored, trusted)
        self._seq_dirty = {n for n, v in self._seq.items() if stored.get(n) != v}
        try:
            self.reserve.write()
        except OSError as exc:
            db.close()
            raise QueueUnavailable(f"cannot write {self.reserve.path}: {exc}") from None
        return db

    def _move_aside(self, exc: sqlite3.Error) -> list[tuple[str, int]]:
        aside = self.path.with_name(f"{self.path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
        for suffix in ("", "-wal", "-shm"):
            p = Path(str(self.path) + suffix)
            if p.exists():
                p.rename(str(aside) + suffix)
        salvaged = _salvage_sequences(Path(aside))
        event(
            log,
            logging.ERROR,
            "queue file unreadable; moved aside, starting with an empty queue",
            file=str(self.path),
            moved_to=str(aside),
            error=str(exc),
            sequences_salvaged=len(salvaged),
        )
        return salvaged

    def _connect(self) -> sqlite3.Connection:
        # a short busy timeout: commits run on the event loop, and a lock held by another
        # process is waited out by retrying later, not by blocking here
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=0.2)
        try:
            fresh = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0
            if fresh:  # must precede the first table; an existing file keeps its mode
                db.execute("PRAGMA auto_vacuum=INCREMENTAL")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA journal_size_limit={WAL_LIMIT}")
            db.execute(f"PRAGMA synchronous={_SYNC[self.fsync]}")
            db.executescript(_SCHEMA)
        except BaseException:
            db.close()
            raise
        return db

    def configure(self, max_bytes: int, fsync: str) -> None:
        """New limits from a reloaded config; the file and its contents stay."""
        self.max_bytes = max_bytes
        if fsync != self.fsync:
            self.commit()
            try:
                self.db.execute(f"PRAGMA synchronous={_SYNC[fsync]}")
                self.fsync = fsync
            except sqlite3.Error as exc:
                event(log, logging.WARNING, "cannot change the queue's fsync mode", error=str(exc))

    def next_seq(self, name: str) -> int:
        value = self._seq.get(name, 0) + 1
        self._seq[name] = value
        self._seq_dirty.add(name)
        self.reserve.issue(name, value)
        return value

    def append(self, stream: str, key: str, body: builtins.bytes) -> None:
        self._pending.append((stream, key, body))
        self._pending_bytes += _row_size(key, body)
        if self._pending_bytes > self.max_pending_bytes:
            self._shed_pending()

    def _shed_pending(self) -> None:
        """Commits are failing and memory is at its bound: drop the oldest droppable appends."""
        target = self.max_pending_bytes * 9 // 10
        keep: list[tuple[str, str, bytes]] = []
        freed = shed = 0
        for item in self._pending:
            stream, key, body = item
            if self._pending_bytes - freed > target and stream in self.droppable:
                freed += _row_size(key, body)
                shed += 1
            else:
                keep.append(item)
        self._pending = keep
        self._pending_bytes -= freed
        self.dropped += shed
        self.dropped_unwritten += shed
        self._ratelimit.log(
            "shed",
            logging.ERROR,
            "queue cannot be written and its memory bound is reached: dropped the oldest messages",
            dropped=self.dropped_unwritten,
            max_pending_bytes=self.max_pending_bytes,
            reason=self.failing or "",
        )

    def ack(self, ids: Iterable[int]) -> None:
        self._acked.extend(ids)

    def settle(self, row_id: int, stream: str, key: str, state: str, message: str | None = None) -> None:
        """Remove a message and record what became of it (committed together)."""
        self._acked.append(row_id)
        self._outcomes.append((stream, key, state, message, time.time_ns() // 1_000_000))

    def get_state(self, name: str) -> str | None:
        return self._state.get(name)

    def state_items(self, prefix: str) -> list[tuple[str, str]]:
        """The state entries whose names start with `prefix`, as (name, value)."""
        return [(n, v) for n, v in self._state.items() if n.startswith(prefix)]

    def put_state(self, name: str, value: str) -> None:
        self._state[name] = value
        self._state_dirty.add(name)

    @property
    def dirty(self) -> bool:
        return bool(
            self._pending
            or self._acked
            or self._seq_dirty
            or self._state_dirty
            or self._outcomes
            or self.reserve.dirty
        )

    def commit(self) -> bool:
        """Write appends, sequence numbers, state, acknowledgements and outcomes in one
        transaction. True when everything is on disk; False when the write failed (or is being
        retried later): then all of it stays pending, and `failing` says why."""
        if not self.dirty:
            return True
        if self.failing is not None and time.monotonic() < self._retry_at:
            return False
        try:
            self._write()
        except (sqlite3.Error, OSError) as exc:
            db = self.db
            if db.in_transaction:
                try:
                    db.execute("ROLLBACK")
                except sqlite3.Error as rollback:
                    event(log, logging.WARNING, "queue rollback failed", error=str(rollback))
            self._failed(exc)
            return False
        if self.failing is not None:
            event(
                log,
                logging.WARNING,
                "queue writes resumed",
                failed_commits=self.commit_failures,
                dropped_meanwhile=self.dropped_unwritten,
            )
            self.failing = None
            self._retry_delay = 0.0
        return True

    def _failed(self, exc: BaseException) -> None:
        self.commit_failures += 1
        self.failing = f"queue file cannot be written: {exc}"
        self._retry_delay = min(max(self._retry_delay * 2, 0.5), 10.0)
        self._retry_at = time.monotonic() + self._retry_delay
        self._ratelimit.log(
            "commit",
            logging.ERROR,
            "queue commit failed; keeping the batch in memory and retrying",
            file=str(self.path),
            error=str(exc),
            pending=len(self._pending),
            failed_commits=self.commit_failures,
        )

    def _write(self) -> None:
        if self.reserve.dirty:
            self.reserve.write()  # the marks above the numbers this commit makes public
        pending, acked, outcomes = self._pending, self._acked, self._outcomes
        seq_dirty, state_dirty = self._seq_dirty, self._state_dirty
        depths: dict[str, int] = {}
        sizes: dict[str, int] = {}

        def change(stream: str, n: int, size: int) -> None:
            depths[stream] = depths.get(stream, 0) + n
            sizes[stream] = sizes.get(stream, 0) + size

        db = self.db
        db.execute("BEGIN IMMEDIATE")
        for i in range(0, len(acked), CHUNK):
            chunk = acked[i : i + CHUNK]
            marks = ",".join("?" * len(chunk))
            for stream, n, size in db.execute(
                "SELECT stream, count(*), coalesce(sum(length(body) + length(key)), 0) FROM messages "
                f"WHERE id IN ({marks}) GROUP BY stream",
                chunk,
            ).fetchall():
                change(stream, -n, -(size + n * ROW_OVERHEAD))
            db.execute(f"DELETE FROM messages WHERE id IN ({marks})", chunk)
        if pending:
            db.executemany("INSERT INTO messages (stream, key, body) VALUES (?, ?, ?)", pending)
            for stream, key, body in pending:
                change(stream, 1, _row_size(key, body))
        if seq_dirty:
            db.executemany(
                "INSERT INTO sequences (name, value) VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                [(n, self._seq[n]) for n in seq_dirty],
            )
        if state_dirty:
            db.executemany(
                "INSERT INTO state (name, value) VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                [(n, self._state[n]) for n in state_dirty],
            )
        if outcomes:
            db.executemany(
                "INSERT INTO outcomes (stream, key, state, message, ts) VALUES (?, ?, ?, ?, ?)", outcomes
            )
            for stream in {o[0] for o in outcomes}:
                db.execute(
                    "DELETE FROM outcomes WHERE stream = ? AND state != 'failed' AND id <= "
                    "(SELECT max(id) FROM outcomes) - ?",
                    (stream, KEEP_OUTCOMES),
                )
        total = self.bytes + sum(sizes.values())
        dropped = 0
        if total > self.max_bytes:
            dropped = self._drop_oldest(db, total - self.max_bytes, change)
        db.execute("COMMIT")
        if acked or dropped:
            self._vacuum(db)
        # on disk: now the counters and the in-memory batch may change
        for stream, n in depths.items():
            self.depths[stream] = self.depths.get(stream, 0) + n
            self.sizes[stream] = self.sizes.get(stream, 0) + sizes[stream]
        self._pending, self._pending_bytes = [], 0
        self._acked, self._outcomes = [], []
        self._seq_dirty, self._state_dirty = set(), set()
        if dropped:
            self.dropped += dropped
            self._ratelimit.log(
                "full",
                logging.WARNING,
                "queue full: dropped the oldest messages",
                dropped_total=self.dropped,
                max_bytes=self.max_bytes,
            )

    @staticmethod
    def _vacuum(db: sqlite3.Connection) -> None:
        """Give free pages back to the file system once there are more than 1 MiB of them."""
        try:
            if db.execute("PRAGMA freelist_count").fetchone()[0] > 256:
                db.executescript("PRAGMA incremental_vacuum;")  # execute() would free one page
        except sqlite3.Error:
            pass  # the pages stay free for the next messages; nothing is lost

    def _drop_oldest(
        self, db: sqlite3.Connection, excess: int, change: Callable[[str, int, int], None]
    ) -> int:
        dropped = freed = 0
        doomed: list[int] = []
        marks = ",".join("?" * len(self.droppable))
        for row_id, stream, size in db.execute(
            "SELECT id, stream, length(body) + length(key) FROM messages "
            f"WHERE stream IN ({marks}) ORDER BY id",
            sorted(self.droppable),
        ):
            if freed >= excess:
                break
            size += ROW_OVERHEAD
            freed += size
            dropped += 1
            doomed.append(row_id)
            change(stream, -1, -size)
        for i in range(0, len(doomed), CHUNK):
            chunk = doomed[i : i + CHUNK]
            db.execute(f"DELETE FROM messages WHERE id IN ({','.join('?' * len(chunk))})", chunk)
        return dropped

    def outcomes(
        self, stream: str, state: str | None = None, key: str | None = None, limit: int = 100
    ) -> list[tuple[str, str, str | None, int]]:
        """Recent outcomes, newest first: (key, state, message, ts)."""
        sql = "SELECT key, state, message, ts FROM outcomes WHERE stream = ?"
        args: list[object] = [stream]
        if state is not None:
            sql += " AND state = ?"
            args.append(state)
        if key is not None:
            sql += " AND key = ?"
            args.append(key)
        sql += " ORDER BY id DESC LIMIT ?"
        args.append(limit)
        return self.db.execute(sql, args).fetchall()

    def after(
        self, stream: str, last_id: int, limit: int, upto: int | None = None
    ) -> list[tuple[int, str, builtins.bytes]]:
        """Committed messages of `stream` with last_id < id <= upto, oldest first."""
        if upto is None:
            return self.db.execute(
                "SELECT id, key, body FROM messages WHERE stream = ? AND id > ? ORDER BY id LIMIT ?",
                (stream, last_id, limit),
            ).fetchall()
        return self.db.execute(
            "SELECT id, key, body FROM messages WHERE stream = ? AND id > ? AND id <= ? ORDER BY id LIMIT ?",
            (stream, last_id, upto, limit),
        ).fetchall()

    def count(self, stream: str, last_id: int = 0, upto: int | None = None) -> int:
        row = self.db.execute(
            "SELECT count(*) FROM messages WHERE stream = ? AND id > ? AND id <= ?",
            (stream, last_id, upto if upto is not None else 2**63 - 1),
        ).fetchone()
        return int(row[0])

    def last_id(self) -> int:
        """The highest id ever committed (ids are never reused, across all streams)."""
        row = self.db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'messages'").fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        """Commit what is pending and mark the run as ended cleanly."""
        self._retry_at = 0.0
        if not self.commit():
            event(
                log,
                logging.ERROR,
                "queue could not be written at stop: messages in memory are lost",
                pending=len(self._pending),
                reason=self.failing or "",
            )
        else:
            try:
                self.reserve.write(clean=True)
            except OSError as exc:
                event(log, logging.WARNING, "cannot mark the sequence reserve clean", error=str(exc))
        self.db.close()
