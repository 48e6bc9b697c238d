"""Modbus TCP driver on pymodbus' asyncio client: one connection per device.

After a timeout the connection is closed, so that a late answer cannot be taken for the next
request's; the rest of that poll cycle's requests are marked `timeout`.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from pymodbus.client import AsyncModbusTcpClient

from ..base import DeviceUnreachable
from .codec import RegisterPoint
from .driver import EXCEPTION_NAMES, ModbusDriver, _short, exception_reason

__all__ = ["EXCEPTION_NAMES", "ModbusTcpDriver", "exception_reason"]


class ModbusTcpDriver(ModbusDriver):
    def __init__(
        self,
        host: str,
        port: int,
        unit_id: int,
        timeout: float,
        points: Sequence[RegisterPoint],
        max_registers: int = 125,
        max_bits: int = 2000,
        max_gap: int = 16,
    ):
        super().__init__(unit_id, timeout, points, max_registers, max_bits, max_gap)
        self.host, self.port = host, port
        self._client: AsyncModbusTcpClient | None = None

    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.connected

    async def connect(self) -> None:
        await self.close()
        client = AsyncModbusTcpClient(
            self.host, port=self.port, timeout=self.timeout, retries=0, reconnect_delay=0
        )
        try:
            ok = await asyncio.wait_for(client.connect(), self.timeout + 1)
        except (TimeoutError, OSError):
            ok = False
        if not ok:
            client.close()
            raise DeviceUnreachable(await self._why_unreachable())
        self._client = client

    async def _why_unreachable(self) -> str:
        # pymodbus only says False; one plain connect attempt tells the user why.
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(self.host, self.port), self.timeout)
            writer.close()
            return f"cannot connect to {self.host}:{self.port}"
        except TimeoutError:
            return f"connect to {self.host}:{self.port} timed out"
        except OSError as exc:
            why = os.strerror(exc.errno).lower() if exc.errno else str(exc)
            return f"cannot connect to {self.host}:{self.port}: {why}"

    async def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    async def _request(self, call: Callable[[Any], Awaitable[Any]]) -> Any:
        if self._client is None:
            raise ConnectionError("not connected")
        return await asyncio.wait_for(call(self._client), self.timeout + 0.5)

    async def _after_timeout(self) -> bool:
        await self.close()
        return True

    def _lost_reason(self, exc: BaseException) -> str:
        return f"connection to {self.host}:{self.port} lost: {_short(exc)}"
