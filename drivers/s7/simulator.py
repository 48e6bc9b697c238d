"""S7 PLC simulator on python-snap7's own server: one CPU per port, its DBs, inputs, outputs and
markers laid out from the dictionary.

Values follow the dictionary (the generators the other simulators use), refreshed when a read
touches an area; writes are kept (a written point holds the written value). A single-bit write
sets that bit alone: python-snap7's server would write the whole byte (it drops the bit number
of a BIT write), which is exactly the clobbering a real CPU does not do, so writes are handled
here.

Faults, per device (set through the control API): `silent` (takes requests, never answers),
`drop` (closes the connection on the next request), `putget` (refuses every read and write as
an S7-1200 without PUT/GET access does: header error 0x8104), `refuse` (DB number `code` is
refused with return code 0x05, as an S7-1200 answers for a DB with optimized block access; the
other areas still answer), `restart` (the CPU goes away for `delay` seconds: connections are
closed and the port refuses, then it comes back with the same memory), `garbage` (answers with
bytes that are not an S7 reply).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from edgegw.gateway.dictionary import DictionaryEntry
from edgegw.gateway.writeback import raw_value
from edgegw.simulators.faults import Fault
from edgegw.simulators.values import ValueGenerator
from snap7.datatypes import S7Area, S7WordLen
from snap7.server import Server

from .codec import EncodeError, RangeDecoder, S7Point, encode_value

logging.getLogger("snap7").setLevel(logging.CRITICAL)

FAULTS = ("none", "silent", "drop", "putget", "refuse", "restart", "garbage")
_SRV_AREAS = {0x81: S7Area.PE, 0x82: S7Area.PA, 0x83: S7Area.MK, 0x84: S7Area.DB}


@dataclass
class SimulatedPoint:
    point: S7Point
    entry: DictionaryEntry
    generator: ValueGenerator
    held: object = None


@dataclass
class SimulatedPlc:
    faults = FAULTS
    id: str
    points: list[SimulatedPoint]
    unit_id: int | None = None  # the control API lists it; an S7 CPU has none
    fault: Fault = field(default_factory=Fault)
    started: float = field(default_factory=time.monotonic)
    requests: int = 0
    on_fault: Any = None  # called with the new fault (the server acts on restart)
    _refreshed: dict[tuple[int, int], float] = field(default_factory=dict)

    def set_fault(self, fault: Fault) -> None:
        self.fault = fault
        if self.on_fault is not None:
            self.on_fault(fault)

    def regions(self) -> dict[tuple[int, int], int]:
        """(area, db) -> bytes the server must hold (a little more than the points need)."""
        out: dict[tuple[int, int], int] = {}
        for sp in self.points:
            p = sp.point
            key = (p.area, p.db)
            out[key] = max(out.get(key, 0), p.byte + p.size)
        return {k: v + 16 for k, v in out.items()}

    def value(self, sp: SimulatedPoint, t: float) -> object:
        if sp.held is not None:
            return sp.held
        v = sp.generator.value(t)
        p = sp.point
        if p.type == "string" and p.format in ("DTL", "DATE_AND_TIME"):
            return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time()))
        if p.type == "string" and p.length is not None:
            return str(v)[: p.length]
        return v

    def values(self) -> dict[str, object]:
        t = time.monotonic() - self.started
        return {sp.entry.id: self.value(sp, t) for sp in self.points}

    def hold(self, point_id: str, value: object) -> bool:
        for sp in self.points:
            if sp.entry.id == point_id:
                sp.held = value
                self._refreshed.clear()
                return True
        return False

    def refresh(self, area: int, db: int, memory: bytearray) -> None:
        now = time.monotonic()
        key = (area, db)
        if now - self._refreshed.get(key, 0.0) < 0.05:
            return
        self._refreshed[key] = now
        t = now - self.started
        for sp in self.points:
            p = sp.point
            if p.area != area or p.db != db:
                continue
            value = self.value(sp, t)
            if p.bit is not None:
                mask = 1 << p.bit
                memory[p.byte] = (memory[p.byte] | mask) if value else (memory[p.byte] & ~mask)
                continue
            try:
                memory[p.byte : p.byte + p.size] = _encode(p, raw_value(sp.entry, value))
            except (ValueError, OverflowError, EncodeError):
                continue

    def hold_written(self, area: int, db: int, start: int, memory: bytearray, length: int) -> None:
        """Keep what a client wrote to [start, start+length): those points stop following their
        generators and hold what the memory now says."""
        for sp in self.points:
            p = sp.point
            if p.area != area or p.db != db or p.byte + p.size <= start or p.byte >= start + length:
                continue
            raw = RangeDecoder(p.byte, p.size, [p]).decode(bytes(memory[p.byte : p.byte + p.size]))[0]
            e = sp.entry
            if e.type in ("bool", "string") or (e.scale == 1.0 and e.offset == 0.0):
                sp.held = raw
            else:
                sp.held = raw * e.scale + e.offset  # type: ignore[operator]
        self._refreshed.clear()


def _encode(p: S7Point, raw: object) -> bytes:
    if p.type == "string" and p.format in ("DTL", "DATE_AND_TIME"):
        return _encode_time(p.format, str(raw))
    return encode_value(p, raw)


def _encode_time(fmt: str, text: str) -> bytes:
    t = time.strptime(text[:19], "%Y-%m-%dT%H:%M:%S")
    if fmt == "DTL":
        return struct.pack(
            ">HBBBBBBI",
            t.tm_year,
            t.tm_mon,
            t.tm_mday,
            (t.tm_wday + 1) % 7 + 1,
            t.tm_hour,
            t.tm_min,
            t.tm_sec,
            0,
        )

    def bcd(v: int) -> int:
        return (v // 10) << 4 | v % 10

    return bytes(
        [
            bcd(t.tm_year % 100),
            bcd(t.tm_mon),
            bcd(t.tm_mday),
            bcd(t.tm_hour),
            bcd(t.tm_min),
            bcd(t.tm_sec),
            0,
            (t.tm_wday + 1) % 7 + 1,
        ]
    )


class _Server(Server):
    """python-snap7's server with the simulated PLC's values, kept writes, bit writes that
    touch one bit, and faults."""

    def __init__(self, plc: SimulatedPlc):
        super().__init__(log=False)
        self.plc = plc
        self.sockets: set[socket.socket] = set()

    def _handle_client(self, client_socket: socket.socket, address: tuple[str, int]) -> None:
        self.sockets.add(client_socket)
        try:
            super()._handle_client(client_socket, address)
        finally:
            self.sockets.discard(client_socket)

    def close_clients(self) -> None:
        for s in list(self.sockets):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def _process_request(self, request_data: bytes, client_address: tuple[str, int]) -> bytes | None:
        plc = self.plc
        mode = plc.fault.mode
        is_setup = len(request_data) > 10 and request_data[10] == 0xF0
        if not is_setup:
            plc.requests += 1
        if mode == "silent":
            while plc.fault.mode == "silent" and self.running:
                time.sleep(0.02)
            return None  # the request that hung is never answered
        if mode == "drop" and not is_setup:
            raise ConnectionResetError("dropped by the simulator")
        if mode == "garbage" and not is_setup:
            return os.urandom(24)
        if mode == "putget" and not is_setup and len(request_data) > 10 and request_data[10] in (0x04, 0x05):
            return self._build_error_response(self._parse_request(request_data), 0x8104)
        return super()._process_request(request_data, client_address)

    def _refused(self, area: S7Area, db: int) -> bool:
        f = self.plc.fault
        return f.mode == "refuse" and area == S7Area.DB and db == f.code

    def _read_from_memory_area(
        self, area: S7Area, db_number: int, start: int, count: int
    ) -> tuple[int, bytearray]:
        if self._refused(area, db_number):
            return (0x05, bytearray())
        memory = self.memory_areas.get((area, db_number))
        if memory is not None:
            with self.area_locks[(area, db_number)]:
                self.plc.refresh(int(area), db_number, memory)
        return super()._read_from_memory_area(area, db_number, start, count)

    def _parse_address_specification(self, addr_spec: bytes) -> dict[str, Any]:
        out = super()._parse_address_specification(addr_spec)
        if out and len(addr_spec) >= 12:
            out["bit"] = addr_spec[11] & 0x07  # the bit of a BIT item (the server drops it)
        return out

    def _write_to_memory_area(self, area: S7Area, db_number: int, start: int, write_data: bytearray) -> bool:
        if self._refused(area, db_number):
            return False
        key = (area, db_number)
        memory = self.memory_areas.get(key)
        spec = self._write_spec
        if memory is None:
            return False
        with self.area_locks[key]:
            if spec is not None and spec.get("word_len") == S7WordLen.BIT:
                if start >= len(memory) or len(write_data) < 1:
                    return False
                mask = 1 << spec.get("bit", 0)
                memory[start] = (memory[start] | mask) if write_data[0] & 1 else (memory[start] & ~mask)
                length = 1
            else:
                if start + len(write_data) > len(memory):
                    return False
                memory[start : start + len(write_data)] = write_data
                length = len(write_data)
            self.plc.hold_written(int(area), db_number, start, memory, length)
        return True

    _write_spec: dict[str, Any] | None = None

    def _handle_write_area(self, request: dict[str, Any], client_address: tuple[str, int]) -> bytes:
        self._write_spec = request.get("parameters", {}).get("address_spec")
        try:
            return super()._handle_write_area(request, client_address)
        finally:
            self._write_spec = None


class S7Simulator:
    """One simulated CPU listening on one port."""

    def __init__(self, host: str, port: int, plc: SimulatedPlc):
        self.host, self.port = host, port
        self.plc = plc
        self.devices = {plc.id: plc}
        self._memory: dict[tuple[int, int], bytearray] = {k: bytearray(n) for k, n in plc.regions().items()}
        self._server: _Server | None = None
        self._restart: threading.Timer | None = None
        self._lock = threading.Lock()
        plc.on_fault = self._on_fault

    def describe(self) -> list[str]:
        return [f"{self.plc.id}: s7 {self.host}:{self.port}, {len(self.plc.points)} points"]

    def _serve(self) -> None:
        server = _Server(self.plc)
        server.host = self.host
        for (area, db), memory in self._memory.items():
            server.memory_areas[(_SRV_AREAS[area], db)] = memory
            server.area_locks[(_SRV_AREAS[area], db)] = threading.Lock()
        for _ in range(100):
            try:
                server.start(tcp_port=self.port)
                break
            except Exception:  # the port lingers for a moment after a restart
                time.sleep(0.05)
        else:
            raise OSError(f"cannot listen on {self.host}:{self.port}")
        self._server = server

    def _halt(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        # the clients see their connections end at once, as when a CPU restarts (Server.stop
        # alone leaves them open until their threads' next receive times out)
        server.close_clients()
        server.stop()

    def _on_fault(self, fault: Fault) -> None:
        if fault.mode != "restart":
            return
        with self._lock:
            self._halt()
            if self._restart is not None:
                self._restart.cancel()
            self._restart = threading.Timer(fault.delay, self._come_back)
            self._restart.daemon = True
            self._restart.start()

    def _come_back(self) -> None:
        with self._lock:
            self._restart = None
            if self.plc.fault.mode == "restart":
                self.plc.fault = Fault()
            if self._server is None:
                self._serve()

    async def start(self) -> None:
        import asyncio

        await asyncio.to_thread(self._serve)

    async def stop(self) -> None:
        import asyncio

        if self._restart is not None:
            self._restart.cancel()
        self.plc.fault = Fault()
        await asyncio.to_thread(self._halt)


__all__ = ["FAULTS", "S7Simulator", "SimulatedPlc", "SimulatedPoint"]
