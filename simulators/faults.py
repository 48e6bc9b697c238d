"""What every simulator shares: a fault setting, and pseudo-terminal pairs for serial ones.

A serial simulator sits behind a `PtyPair`: socat makes two linked pseudo-terminals, one at the
path the config names (the gateway opens it), one beside it with `.sim` appended (the simulator
answers there). `OnPty.unplug()` takes the pair away, as when a USB adapter is pulled.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Fault:
    """A fault a simulated device is told to show through the control API (modes per protocol)."""

    mode: str = "none"
    code: int = 4
    delay: float = 2.0


def _die_with_parent() -> None:
    """In the child: have the kernel end socat when the simulator ends, however it ends (a
    SIGKILLed simulator must not leave its ports behind)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class PtyPair:
    """Two linked pseudo-terminals made by socat, reachable at `link` and `link + '.sim'`."""

    def __init__(self, link: str):
        self.link = link
        self.sim_link = f"{link}.sim"
        self._proc: subprocess.Popen[bytes] | None = None

    async def open(self) -> None:
        socat = shutil.which("socat")
        if socat is None:
            raise OSError("socat is not installed (apt-get install -y socat): it makes the pseudo-terminals")
        Path(self.link).parent.mkdir(parents=True, exist_ok=True)
        for path in (self.link, self.sim_link):
            if os.path.islink(path):
                os.unlink(path)
        self._proc = subprocess.Popen(
            [socat, "pty,raw,echo=0,link=" + self.link, "pty,raw,echo=0,link=" + self.sim_link],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        for _ in range(200):
            if os.path.exists(self.link) and os.path.exists(self.sim_link):
                return
            if self._proc.poll() is not None:
                break
            await asyncio.sleep(0.01)
        raise OSError(f"socat could not make the pseudo-terminals {self.link} and {self.sim_link}")

    async def close(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            await asyncio.to_thread(self._proc.wait, 5)
        self._proc = None


class OnPty:
    """A simulator behind a pty pair: its adapter can be pulled and plugged back."""

    plugged: bool
    path: str  # the port the gateway opens
    start: Callable[[], Awaitable[None]]  # of the class it is mixed into
    stop: Callable[[], Awaitable[None]]

    async def unplug(self) -> None:
        """The adapter is pulled: the port's path disappears."""
        await self.stop()

    async def plug(self) -> None:
        if not self.plugged:
            await self.start()

    def drop_connections(self) -> None:
        return None  # a serial line has no connection to drop
