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
appends (e.g. the last value a rule fired on). A file that SQLite cannot read is moved aside and a fresh one is started, so a
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


class DurableQueue:
    def __init__(
        self,
        path: Path,
        max_bytes: int,
        fsync: str = "normal",
        droppable: frozenset[str] = frozenset({"mqtt"}),
    ):
        self.path = path
        self.max_bytes = max_bytes
        self.fsync = fsync
        self.droppable = droppable
        self._pending: list[tuple[str, str, bytes]] = []
        self._acked: list[int] = []
        self._outcomes: list[tuple[str, str, str, str | None, int]] = []
        self._seq: dict[str, int] = {}
        self._seq_dirty: set[str] = set()
        self._state: dict[str, str] = {}
        self._state_dirty: set[str] = set()
        self.depths: dict[str, int] = {}
        self.sizes: dict[str, int] = {}
        self.dropped = 0
        self.db = self._open()

    @property
    def depth(self) -> int:
        return sum(self.depths.values())

    @property
    def bytes(self) -> int:
        return sum(self.sizes.values())

    def depth_of(self, stream: str) -> int:
        return self.depths.get(stream, 0)

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
        for name, value in db.execute("SELECT name, value FROM state"):
            self._state[name] = value
        for stream, n, size in db.execute(
            "SELECT stream, count(*), coalesce(sum(length(body)), 0) FROM messages GROUP BY stream"
        ):
            self.depths[stream], self.sizes[stream] = n, size
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

    def settle(self, row_id: int, stream: str, key: str, state: str, message: str | None = None) -> None:
        """Remove a message and record what became of it (committed together)."""
        self._acked.append(row_id)
        self._outcomes.append((stream, key, state, message, time.time_ns() // 1_000_000))

    def get_state(self, name: str) -> str | None:
        return self._state.get(name)

    def put_state(self, name: str, value: str) -> None:
        self._state[name] = value
        self._state_dirty.add(name)

    @property
    def dirty(self) -> bool:
        return bool(self._pending or self._acked or self._seq_dirty or self._state_dirty or self._outcomes)

    def commit(self) -> None:
        """Write appends, sequence numbers, state, acknowledgements and outcomes in one transaction."""
        if not self.dirty:
            return
        pending, self._pending = self._pending, []
        acked, self._acked = self._acked, []
        outcomes, self._outcomes = self._outcomes, []
        dirty, self._seq_dirty = self._seq_dirty, set()
        state_dirty, self._state_dirty = self._state_dirty, set()
        db = self.db
        db.execute("BEGIN")
        try:
            if acked:
                marks = ",".join("?" * len(acked))
                for stream, n, size in db.execute(
                    "SELECT stream, count(*), coalesce(sum(length(body)), 0) FROM messages "
                    f"WHERE id IN ({marks}) GROUP BY stream",
                    acked,
                ).fetchall():
                    self.depths[stream] -= n
                    self.sizes[stream] -= size
                db.executemany("DELETE FROM messages WHERE id = ?", [(i,) for i in acked])
            if pending:
                db.executemany("INSERT INTO messages (stream, key, body) VALUES (?, ?, ?)", pending)
                for stream, _, body in pending:
                    self.depths[stream] = self.depths.get(stream, 0) + 1
                    self.sizes[stream] = self.sizes.get(stream, 0) + len(body)
            if dirty:
                db.executemany(
                    "INSERT INTO sequences (name, value) VALUES (?, ?) "
                    "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                    [(n, self._seq[n]) for n in dirty],
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
            if sum(self.sizes.get(s, 0) for s in self.droppable) > self.max_bytes:
                self._drop_oldest(db)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

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

    def outcome_counts(self, stream: str) -> dict[str, int]:
        rows = self.db.execute(
            "SELECT state, count(*) FROM outcomes WHERE stream = ? GROUP BY state", (stream,)
        )
        return {state: n for state, n in rows}

    def _drop_oldest(self, db: sqlite3.Connection) -> None:
        excess = sum(self.sizes.get(s, 0) for s in self.droppable) - self.max_bytes
        dropped = freed = 0
        doomed: list[int] = []
        by_stream: dict[str, list[int]] = {}
        marks = ",".join("?" * len(self.droppable))
        for row_id, stream, size in db.execute(
            f"SELECT id, stream, length(body) FROM messages WHERE stream IN ({marks}) ORDER BY id",
            sorted(self.droppable),
        ):
            if freed >= excess:
                break
            freed += size
            dropped += 1
            doomed.append(row_id)
            by_stream.setdefault(stream, [0, 0])
            by_stream[stream][0] += 1
            by_stream[stream][1] += size
        db.executemany("DELETE FROM messages WHERE id = ?", [(i,) for i in doomed])
        for stream, (n, size) in by_stream.items():
            self.depths[stream] -= n
            self.sizes[stream] -= size
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
