"""Durable high-water marks for `seq`: a number a consumer has seen is never issued again.

The queue keeps each counter in its SQLite file and commits it with the messages that use it,
so after a process kill (SIGKILL, OOM, a crash) `seq` continues exactly: the operating system
still held every committed page. A power cut is different: with `fsync: normal` the last
transactions may be lost, and the stored counter can fall back below numbers the broker has
already delivered. A queue file moved aside as corrupt loses its counters altogether.

So before numbers are handed out, a mark above them is reserved in a small file of its own,
written with fsync: `sequences.reserved` in `data_dir`, holding for each counter the highest
number that may have been issued, the machine's boot id and whether the run ended cleanly. At
start, if the previous run did not stop cleanly and the machine has rebooted since (a power
cut or a kernel crash: the only way committed pages can vanish), or if the queue file was
replaced, every counter continues above its mark. The price is a gap of up to `BLOCK` numbers
after such an event (a consumer de-duplicating by `seq` never discards new data; it may count
the gap as loss, which after a power cut with `fsync: normal` it may be), and one small fsync'ed
write per counter every `BLOCK` messages.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path

from .logs import event

log = logging.getLogger("edgegw.queue")
BLOCK = 100_000
FILE = "sequences.reserved"


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


class SequenceReserve:
    def __init__(self, path: Path):
        self.path = path
        self.marks: dict[str, int] = {}
        self.previous_clean = True
        self.previous_boot = ""
        self.found = False
        self.dirty = False
        self.writes = 0
        try:
            data = json.loads(path.read_text())
            marks = data.get("marks", {})
            self.marks = {str(k): int(v) for k, v in marks.items() if isinstance(v, int)}
            self.previous_clean = bool(data.get("clean", False))
            self.previous_boot = str(data.get("boot_id", ""))
            self.found = True
        except FileNotFoundError:
            pass
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            # unreadable: continue from the queue's counters, reserved afresh below
            event(
                log, logging.WARNING, "sequence reserve unreadable; ignored", file=str(path), error=str(exc)
            )

    @property
    def power_loss_possible(self) -> bool:
        """The previous run did not stop cleanly and the machine has restarted since."""
        return self.found and not self.previous_clean and self.previous_boot != boot_id()

    def start(self, stored: dict[str, int], trusted: set[str] | None = None) -> dict[str, int]:
        """The counters to continue from, given those the queue file holds: a counter not in
        `trusted` (None: all are trusted) continues above its reserved mark."""
        out = dict(stored)
        for name, mark in self.marks.items():
            if trusted is not None and name not in trusted and mark > out.get(name, 0):
                out[name] = mark
        for name, value in out.items():
            self.marks[name] = value + BLOCK
        self.dirty = True
        return out

    def issue(self, name: str, value: int) -> None:
        """Called for every number handed out; reserves the next block when one runs out."""
        if value > self.marks.get(name, 0):
            self.marks[name] = value + BLOCK - 1
            self.dirty = True

    def write(self, clean: bool = False) -> None:
        """Replace the file atomically and durably. Raises OSError (e.g. ENOSPC)."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        body = json.dumps({"boot_id": boot_id(), "clean": clean, "marks": self.marks}, separators=(",", ":"))
        try:
            with open(tmp, "w") as f:
                f.write(body)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except OSError:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        self.dirty = False
        self.writes += 1
