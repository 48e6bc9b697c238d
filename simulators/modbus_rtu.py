"""Modbus RTU devices on a pseudo-terminal pair, so that the gateway opens a "serial port".

For each serial port of a config, socat makes two linked pseudo-terminals: one at the path the
config names (the gateway opens it), one beside it with `.sim` appended (pymodbus' serial server
answers there for every unit id on that bus). `unplug()` takes the pair away (both paths vanish,
as when a USB adapter is pulled); `plug()` makes it again under the same names.

Faults are the Modbus TCP simulator's, per unit id, plus `crc` (answers with a wrong CRC).
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
from pathlib import Path

from pymodbus.server import ModbusSerialServer

from .modbus_tcp import ModbusTcpSimulator, SimulatedDevice


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


class ModbusRtuSimulator(OnPty, ModbusTcpSimulator):
    """One RS-485 bus: a pty pair and a serial server answering for every unit id on it."""

    UNIT_AT = 0  # RTU frames start with the unit id

    def __init__(self, port: str, settings: tuple[int, int, str, float], devices: list[SimulatedDevice]):
        super().__init__("", 0, devices)
        self.path = port
        self.settings = settings
        self.pair = PtyPair(port)
        self.plugged = False

    async def start(self) -> None:
        await self.pair.open()
        # A pseudo-terminal carries bytes, not bits: parity and stop bits mean nothing on it (and
        # some kernels refuse parity on a pty), so the simulator's end is opened 8N1 whatever
        # the bus is configured for.
        self.server = ModbusSerialServer(  # type: ignore[assignment]
            [self._sim_device(d) for d in self.devices.values()],
            port=self.pair.sim_link,
            baudrate=self.settings[0],
            trace_packet=self._trace_packet,
        )
        self._task = asyncio.create_task(self.server.serve_forever())  # type: ignore[union-attr]
        for _ in range(200):
            if self.server.transport is not None:  # type: ignore[union-attr]
                self.plugged = True
                return
            if self._task.done():
                break
            await asyncio.sleep(0.01)
        await self.pair.close()
        raise OSError(f"the RTU simulator could not open {self.pair.sim_link}")

    async def stop(self) -> None:
        await super().stop()
        await self.pair.close()
        self.plugged = False
