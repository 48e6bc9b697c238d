"""The durable queue: what must not be lost is committed to SQLite before it is sent.

One SQLite file in `data_dir` (WAL journal). Appends are buffered in memory for at most one
commit interval and written in one transaction together with the per-device sequence numbers,
so after a crash `seq` continues exactly after the last committed message: no gap, no reuse.
A message leaves the queue only when its consumer acknowledges it (for MQTT: the PUBACK).

Policy when full (`max_bytes`): the oldest messages are dropped, counted and logged, never
silently. A file that SQLite cannot read is moved aside and a fresh one is started, so a
damaged disk cache never stops the gateway from starting.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path

from .logs import event

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
"""
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


class DurableQueue:
    def __init__(self, path: Path, max_bytes: int, fsync: str = "normal"):
        self.path = path
        self.max_bytes = max_bytes
        self.fsync = fsync
        self._pending: list[tuple[str, str, bytes]] = []
        self._acked: list[int] = []
        self._seq: dict[str, int] = {}
        self._seq_dirty: set[str] = set()
        self.bytes = 0
        self.depth = 0
        self.dropped = 0
        self.db = self._open()

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            db = self._connect()
            row = db.execute("PRAGMA quick_check").fetchone()
            if row is None or row[0] != "ok":
                raise sqlite3.DatabaseError(f"integrity check failed: {row[0] if row else 'no answer'}")
        except sqlite3.DatabaseError as exc:
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
            db = self._connect()
            if salvaged:
                # seq continues after what the damaged file had issued: a gap shows the loss,
                # a repeated seq would hide it
                db.executemany("INSERT OR REPLACE INTO sequences (name, value) VALUES (?, ?)", salvaged)
        for name, value in db.execute("SELECT name, value FROM sequences"):
            self._seq[name] = value
        self.depth, self.bytes = db.execute(
            "SELECT count(*), coalesce(sum(length(body)), 0) FROM messages"
        ).fetchone()
        return db

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={_SYNC[self.fsync]}")
        db.executescript(_SCHEMA)
        return db

    def configure(self, max_bytes: int, fsync: str) -> None:
        """New limits from a reloaded config; the file and its contents stay."""
        self.max_bytes = max_bytes
        if fsync != self.fsync:
            self.commit()
            self.db.execute(f"PRAGMA synchronous={_SYNC[fsync]}")
            self.fsync = fsync

    def next_seq(self, name: str) -> int:
        value = self._seq.get(name, 0) + 1
        self._seq[name] = value
        self._seq_dirty.add(name)
        return value

    def append(self, stream: str, key: str, body: bytes) -> None:
        self._pending.append((stream, key, body))

    def ack(self, ids: Iterable[int]) -> None:
        self._acked.extend(ids)

    @property
    def dirty(self) -> bool:
        return bool(self._pending or self._acked or self._seq_dirty)

    def commit(self) -> None:
        """Write buffered appends, sequence numbers and acknowledgements in one transaction."""
        if not self.dirty:
            return
        pending, self._pending = self._pending, []
        acked, self._acked = self._acked, []
        dirty, self._seq_dirty = self._seq_dirty, set()
        db = self.db
        db.execute("BEGIN")
        try:
            if acked:
                marks = ",".join("?" * len(acked))
                removed = db.execute(
                    f"SELECT count(*), coalesce(sum(length(body)), 0) FROM messages WHERE id IN ({marks})",
                    acked,
                ).fetchone()
                db.executemany("DELETE FROM messages WHERE id = ?", [(i,) for i in acked])
                self.depth -= removed[0]
                self.bytes -= removed[1]
            if pending:
                db.executemany("INSERT INTO messages (stream, key, body) VALUES (?, ?, ?)", pending)
                self.depth += len(pending)
                self.bytes += sum(len(b) for _, _, b in pending)
            if dirty:
                db.executemany(
                    "INSERT INTO sequences (name, value) VALUES (?, ?) "
                    "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                    [(n, self._seq[n]) for n in dirty],
                )
            if self.bytes > self.max_bytes:
                self._drop_oldest(db)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _drop_oldest(self, db: sqlite3.Connection) -> None:
        excess = self.bytes - self.max_bytes
        dropped = freed = 0
        last_id = None
        for row_id, size in db.execute("SELECT id, length(body) FROM messages ORDER BY id"):
            if freed >= excess:
                break
            freed += size
            dropped += 1
            last_id = row_id
        if last_id is not None:
            db.execute("DELETE FROM messages WHERE id <= ?", (last_id,))
        self.depth -= dropped
        self.bytes -= freed
        self.dropped += dropped
        event(
            log,
            logging.WARNING,
            "queue full: dropped the oldest messages",
            dropped=dropped,
            dropped_total=self.dropped,
            max_bytes=self.max_bytes,
        )

    def after(
        self, stream: str, last_id: int, limit: int, upto: int | None = None
    ) -> list[tuple[int, str, bytes]]:
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
        self.commit()
        self.db.close()
