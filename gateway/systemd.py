"""systemd service notifications (sd_notify), without a dependency: one datagram per message.

Under `Type=notify` the unit is "started" only once the gateway says READY=1 (its devices and
sinks are running). With `WatchdogSec=`, the event loop itself sends WATCHDOG=1 at half that
period, so a loop that hangs (and stops polling) gets the service restarted. RELOADING=1 and
STOPPING=1 tell systemctl what is going on. Outside systemd ($NOTIFY_SOCKET unset) every call
does nothing.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time


def notify(*states: str) -> bool:
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return False
    if path.startswith("@"):  # abstract namespace
        path = "\0" + path[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(path)
            s.sendall("\n".join(states).encode())
    except OSError:
        return False
    return True


def watchdog_interval() -> float | None:
    """Half the watchdog period systemd asks for, or None without a watchdog for this process."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 2_000_000
    except ValueError:
        return None


async def keep_alive(interval: float) -> None:
    """WATCHDOG=1 from the event loop, so that the pings stop when the loop stops turning."""
    while True:
        notify("WATCHDOG=1")
        await asyncio.sleep(interval)


def reloading() -> None:
    # systemd 253+ wants the monotonic time with RELOADING=1 (Type=notify-reload); older ones
    # ignore the extra field
    notify("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")
