"""Modbus RTU devices on a pseudo-terminal pair, so that the gateway opens a "serial port".

For each serial port of a config, socat makes two linked pseudo-terminals: one at the path the
config names (the gateway opens it), one beside it with `.sim` appended (pymodbus' serial server
answers there for every unit id on that bus). `unplug()` takes the pair away (both paths vanish,
as when a USB adapter is pulled); `plug()` makes it again under the same names.

Faults are the Modbus TCP simulator's, per unit id, plus `crc` (answers with a wrong CRC).
"""

from __future__ import annotations

import asyncio

from edgegw.simulators.faults import OnPty, PtyPair
from pymodbus.server import ModbusSerialServer

from .simulator import ModbusTcpSimulator, SimulatedDevice


class ModbusRtuSimulator(OnPty, ModbusTcpSimulator):
    """One RS-485 bus: a pty pair and a serial server answering for every unit id on it."""

    UNIT_AT = 0  # RTU frames start with the unit id

    def __init__(self, port: str, settings: tuple[int, int, str, float], devices: list[SimulatedDevice]):
        super().__init__("", 0, devices)
        self.path = port
        self.settings = settings
        self.pair = PtyPair(port)
        self.plugged = False

    def describe(self) -> list[str]:
        return [
            f"{d.id}: modbus-rtu on {self.path} (serial server on {self.pair.sim_link}) unit {d.unit_id}, "
            f"{len(d.points)} points"
            for d in self.devices.values()
        ]

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
