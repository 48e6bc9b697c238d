"""MELSEC PLC simulator: an asyncio TCP server answering 3E frames (binary or ASCII, as its
device's `code`), with device memory sized like a CPU of the configured family with its
default device settings, so an address beyond them gets end code C056 as from a real CPU.

Commands: 0401 batch read (words, bits; Q/L and iQ-R subcommands), 0403 random read, 1401
batch write (words, bits), 1402 random write (bits, words), 0101 read CPU model name. Values
follow the dictionary (the generators the other simulators use), refreshed when a read comes;
writes land in memory and a written point holds the written value.

Faults, per device (control API): `silent` (takes requests, never answers), `drop` (closes
the connection on the next request), `garbage` (answers with bytes that are not a 3E reply),
`refuse` (requests touching device numbers from `code` up are answered with end code C056, as
a CPU whose parameters set smaller device ranges), `restart` (the PLC goes away for `delay`
seconds: connections closed, the port refuses, then back with the same memory).

A module set to ASCII answers a binary request with end code C050 in ASCII, as the Ethernet
modules do; one set to binary does not answer an ASCII request (it waits for the rest of a
frame that never comes), which is what a client with the wrong `code` sees.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
import time
from array import array
from dataclasses import dataclass, field
from typing import Any

from edgegw.gateway.dictionary import DictionaryEntry
from edgegw.gateway.writeback import raw_value
from edgegw.simulators.faults import Fault
from edgegw.simulators.values import ValueGenerator

from .address import BY_CODE, DEVICES, DeviceKind
from .codec import (
    BATCH_READ,
    BATCH_WRITE,
    CPU_MODEL,
    HEADER,
    RANDOM_READ,
    RANDOM_WRITE,
    EncodeError,
    McPoint,
    ascii_radix,
    decode_words,
    encode_words,
)

FAULTS = ("none", "silent", "drop", "garbage", "refuse", "restart")

# device points of a CPU with default device settings (the simulator's choice; a real CPU's
# parameters decide): Q/L/iQ-R as a QnU CPU's defaults, iQ-F as an FX5U's
MEMORY = {
    "Q": {
        "X": 8192,
        "Y": 8192,
        "M": 8192,
        "L": 8192,
        "F": 2048,
        "B": 8192,
        "SM": 2048,
        "D": 12288,
        "W": 8192,
        "R": 32768,
        "ZR": 65536,
        "SD": 2048,
        "TN": 2048,
        "CN": 1024,
    },
    "iQ-F": {
        "X": 1024,
        "Y": 1024,
        "M": 7680,
        "L": 7680,
        "F": 128,
        "B": 256,
        "SM": 10000,
        "D": 8000,
        "W": 512,
        "R": 32768,
        "SD": 12000,
        "TN": 512,
        "CN": 256,
    },
}
MEMORY["L"] = MEMORY["Q"]
MEMORY["iQ-R"] = {**MEMORY["Q"], "X": 12288, "Y": 12288, "SM": 4096, "SD": 4096}
# what 0101 answers: a model name of each family; the model codes are placeholders of the
# simulator, not Mitsubishi's code list
MODEL = {
    "Q": ("Q03UDVCPU", 0x0366),
    "L": ("L26CPU-BT", 0x0543),
    "iQ-R": ("R04CPU", 0x4801),
    "iQ-F": ("FX5U-32MR/ES", 0x4A21),
}

C050, C056, C059, C05C, C061 = 0xC050, 0xC056, 0xC059, 0xC05C, 0xC061


class Refused(Exception):
    def __init__(self, code: int):
        self.code = code


@dataclass
class SimulatedPoint:
    point: McPoint
    entry: DictionaryEntry
    generator: ValueGenerator
    held: object = None


@dataclass
class SimulatedPlc:
    faults = FAULTS
    id: str
    plc: str
    code: str
    iqr: bool
    points: list[SimulatedPoint]
    unit_id: int | None = None
    fault: Fault = field(default_factory=Fault)
    started: float = field(default_factory=time.monotonic)
    requests: int = 0
    on_fault: Any = None
    memory: dict[str, array[int]] = field(default_factory=dict)
    _refreshed: float = 0.0

    def __post_init__(self) -> None:
        for name, size in MEMORY[self.plc].items():
            self.memory[name] = array(
                "B" if DEVICES[name].bit else "H", bytes(size * (1 if DEVICES[name].bit else 2))
            )

    def set_fault(self, fault: Fault) -> None:
        self.fault = fault
        if self.on_fault is not None:
            self.on_fault(fault)

    def value(self, sp: SimulatedPoint, t: float) -> object:
        if sp.held is not None:
            return sp.held
        v = sp.generator.value(t)
        if sp.point.type == "string" and sp.point.length is not None:
            return str(v)[: sp.point.length]
        if sp.point.type in ("int8", "uint8") and sp.entry.range is None:
            return int(v) % 100  # type: ignore[call-overload]
        return v

    def values(self) -> dict[str, object]:
        t = time.monotonic() - self.started
        return {sp.entry.id: self.value(sp, t) for sp in self.points}

    def hold(self, point_id: str, value: object) -> bool:
        for sp in self.points:
            if sp.entry.id == point_id:
                sp.held = value
                self._refreshed = 0.0
                return True
        return False

    def refresh(self) -> None:
        now = time.monotonic()
        if now - self._refreshed < 0.05:
            return
        self._refreshed = now
        t = now - self.started
        for sp in self.points:
            p = sp.point
            mem = self.memory.get(p.device)
            if mem is None or p.number + p.words > len(mem):
                continue
            value = self.value(sp, t)
            if p.kind.bit:
                mem[p.number] = 1 if value else 0
                continue
            if p.bit is not None:
                mask = 1 << p.bit
                mem[p.number] = (mem[p.number] | mask) if value else (mem[p.number] & ~mask)
                continue
            try:
                raw = raw_value(sp.entry, value)
                words = encode_words(p, raw) if p.type not in ("int8", "uint8") else [int(raw) & 0xFF]  # type: ignore[call-overload]
            except (ValueError, OverflowError, EncodeError, TypeError):
                continue
            mem[p.number : p.number + len(words)] = array("H", words)

    def hold_written(self, device: str, start: int, count: int) -> None:
        mem = self.memory[device]
        for sp in self.points:
            p = sp.point
            if p.device != device or p.number + p.words <= start or p.number >= start + count:
                continue
            if p.kind.bit:
                raw: object = bool(mem[p.number])
            else:
                raw = decode_words(p, list(mem[p.number : p.number + p.words]))
            e = sp.entry
            if e.type in ("bool", "string") or (e.scale == 1.0 and e.offset == 0.0):
                sp.held = raw
            else:
                sp.held = raw * e.scale + e.offset  # type: ignore[operator]
        self._refreshed = 0.0


class _Fields:
    """Reads a request's fields in its code."""

    def __init__(self, data: bytes, binary: bool, iqr: bool, plc: str):
        self.data, self.pos, self.binary, self.iqr, self.plc = data, 0, binary, iqr, plc

    def _take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise Refused(C061)
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def _hex(self, n: int) -> int:
        try:
            return int(self._take(n), 16)
        except ValueError:
            raise Refused(C061) from None

    def u8(self) -> int:
        return self._take(1)[0] if self.binary else self._hex(2)

    def u16(self) -> int:
        return int.from_bytes(self._take(2), "little") if self.binary else self._hex(4)

    def device(self) -> tuple[DeviceKind, int]:
        if self.binary:
            if self.iqr:
                raw = self._take(6)
                number, code = int.from_bytes(raw[:4], "little"), int.from_bytes(raw[4:], "little")
            else:
                raw = self._take(4)
                number, code = int.from_bytes(raw[:3], "little"), raw[3]
            dk = BY_CODE.get(code)
            if dk is None:
                raise Refused(0xC05B)
            return dk, number
        text = self._take(12 if self.iqr else 8).decode("latin-1")
        name = text[: 4 if self.iqr else 2].rstrip("* ")
        dk = DEVICES.get(name)
        if dk is None:
            raise Refused(0xC05B)
        try:
            return dk, int(text[4 if self.iqr else 2 :], ascii_radix(dk, self.plc))
        except ValueError:
            raise Refused(0xC061) from None

    def words(self, n: int) -> list[int]:
        if self.binary:
            return list(struct.unpack(f"<{n}H", self._take(2 * n)))
        return [self._hex(4) for _ in range(n)]

    def bits(self, n: int) -> list[int]:
        if self.binary:
            raw = self._take((n + 1) // 2)
            return [(raw[i // 2] >> (0 if i & 1 else 4)) & 1 for i in range(n)]
        raw = self._take(n)
        return [1 if c == 0x31 else 0 for c in raw]

    def setreset(self) -> int:
        if self.binary:
            return self._take(2 if self.iqr else 1)[0] & 1
        return self._hex(4 if self.iqr else 2) & 1


class McServer:
    """The request handling of one simulated PLC (no sockets: `answer` maps a whole request to
    its reply, or None for no reply)."""

    def __init__(self, plc: SimulatedPlc):
        self.plc = plc

    def _reply(self, binary: bool, end: int, data: bytes = b"") -> bytes:
        if binary:
            body = struct.pack("<H", end) + (data if not end else b"\x00\xff\xff\x03\x00" + b"\x00" * 4)
            return b"\xd0\x00\x00\xff\xff\x03\x00" + struct.pack("<H", len(body)) + body
        body = f"{end:04X}".encode() + (data if not end else b"00FF03FF00" + b"00000000")
        return f"D00000FF03FF00{len(body):04X}".encode() + body

    def _check(self, dk: DeviceKind, start: int, count: int) -> array[int]:
        mem = self.plc.memory.get(dk.name)
        if mem is None:
            raise Refused(0xC05B)
        f = self.plc.fault
        if start + count > len(mem) or (f.mode == "refuse" and start + count > f.code):
            raise Refused(C056)
        return mem

    def _words(self, dk: DeviceKind, start: int, count: int) -> list[int]:
        mem = self._check(dk, start, 16 * count if dk.bit else count)
        if not dk.bit:
            return list(mem[start : start + count])
        out = []
        for k in range(count):
            w = 0
            for i, b in enumerate(mem[start + 16 * k : start + 16 * k + 16]):
                w |= b << i
            out.append(w)
        return out

    def answer(self, code: str, cmd: int, sub: int, rest: bytes) -> bytes:
        binary = code == "binary"
        try:
            data = self._handle(binary, cmd, sub, rest)
        except Refused as exc:
            return self._reply(binary, exc.code)
        return self._reply(binary, 0, data)

    def _handle(self, binary: bool, cmd: int, sub: int, rest: bytes) -> bytes:
        plc = self.plc
        iqr = bool(sub & 2)
        f = _Fields(rest, binary, iqr, plc.plc)
        if iqr and plc.plc not in ("iQ-R",):
            raise Refused(C059)  # the Q/L/iQ-F CPUs know only the Q/L subcommands
        if cmd == CPU_MODEL:
            name, mcode = MODEL[plc.plc]
            return name.ljust(16).encode() + (struct.pack("<H", mcode) if binary else f"{mcode:04X}".encode())
        if cmd == BATCH_READ and sub & ~2 in (0, 1):
            dk, start = f.device()
            count = f.u16()
            plc.refresh()
            if sub & 1:
                if not dk.bit:
                    raise Refused(C05C)
                if count > (7168 if binary else 3584):
                    raise Refused(0xC052)
                mem = self._check(dk, start, count)
                bits = list(mem[start : start + count])
                if binary:
                    bits += [0] * (count & 1)
                    return bytes(bits[i] << 4 | bits[i + 1] for i in range(0, len(bits), 2))
                return "".join(str(b) for b in bits).encode()
            if count > 960:
                raise Refused(0xC051)
            words = self._words(dk, start, count)
            return (
                struct.pack(f"<{count}H", *words) if binary else "".join(f"{w:04X}" for w in words).encode()
            )
        if cmd == RANDOM_READ and sub & ~2 == 0:
            m, n = f.u8(), f.u8()
            if m + n > (96 if iqr else 192) or m + n == 0:
                raise Refused(0xC054)
            devs = [f.device() for _ in range(m + n)]
            plc.refresh()
            ws = [self._words(dk, s, 1)[0] for dk, s in devs[:m]]
            ds = []
            for dk, s in devs[m:]:
                lo, hi = self._words(dk, s, 2)
                ds.append(lo | hi << 16)
            if binary:
                return struct.pack(f"<{m}H{n}I", *ws, *ds)
            return ("".join(f"{w:04X}" for w in ws) + "".join(f"{d:08X}" for d in ds)).encode()
        if cmd == BATCH_WRITE and sub & ~2 in (0, 1):
            dk, start = f.device()
            count = f.u16()
            if sub & 1:
                if not dk.bit:
                    raise Refused(C05C)
                mem = self._check(dk, start, count)
                for i, b in enumerate(f.bits(count)):
                    mem[start + i] = b
            else:
                words = f.words(count)
                mem = self._check(dk, start, 16 * count if dk.bit else count)
                if dk.bit:
                    for k, w in enumerate(words):
                        for i in range(16):
                            mem[start + 16 * k + i] = w >> i & 1
                    count *= 16
                else:
                    mem[start : start + count] = array("H", words)
            plc.hold_written(dk.name, start, count)
            return b""
        if cmd == RANDOM_WRITE and sub & ~2 == 1:
            n = f.u8()
            for _ in range(n):
                dk, s = f.device()
                on = f.setreset()
                if not dk.bit:
                    raise Refused(C05C)
                mem = self._check(dk, s, 1)
                mem[s] = on
                plc.hold_written(dk.name, s, 1)
            return b""
        if cmd == RANDOM_WRITE and sub & ~2 == 0:
            m, n = f.u8(), f.u8()
            for k in range(m + n):
                dk, s = f.device()
                ws = f.words(1) if k < m else f.words(2)
                mem = self._check(dk, s, len(ws))
                mem[s : s + len(ws)] = array("H", ws)
                plc.hold_written(dk.name, s, len(ws))
            return b""
        raise Refused(C059)


class McSimulator:
    """One simulated PLC listening on one port."""

    def __init__(self, host: str, port: int, plc: SimulatedPlc):
        self.host, self.port = host, port
        self.plc = plc
        self.devices = {plc.id: plc}
        self.server = McServer(plc)
        self._srv: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._restart: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Future[None]] = set()
        plc.on_fault = self._on_fault

    def describe(self) -> list[str]:
        return [
            f"{self.plc.id}: mc {self.host}:{self.port} ({self.plc.plc}, {self.plc.code}), {len(self.plc.points)} points"
        ]

    async def _serve(self) -> None:
        for _ in range(100):
            try:
                self._srv = await asyncio.start_server(self._client, self.host, self.port, reuse_address=True)
                return
            except OSError:
                await asyncio.sleep(0.05)
        raise OSError(f"cannot listen on {self.host}:{self.port}")

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        plc = self.plc
        try:
            while True:
                first = await reader.readexactly(2)
                if first == b"\x50\x00":
                    head = await reader.readexactly(HEADER["binary"] - 2)
                    n = int.from_bytes(head[5:7], "little")
                    request = first + head + await reader.readexactly(n)
                    code = "binary"
                elif first == b"50":
                    head = await reader.readexactly(HEADER["ascii"] - 2)
                    try:
                        n = int(head[12:16], 16)
                    except ValueError:
                        return
                    request = first + head + await reader.readexactly(n)
                    code = "ascii"
                else:
                    return  # not a 3E frame: a module drops such a connection
                plc.requests += 1
                mode = plc.fault.mode
                if mode == "silent":
                    while plc.fault.mode == "silent":
                        await asyncio.sleep(0.02)
                    continue  # the request that hung is never answered
                if mode == "drop":
                    return
                if mode == "garbage":
                    writer.write(os.urandom(24))
                    await writer.drain()
                    continue
                if code != plc.code:
                    if plc.code == "ascii":
                        writer.write(_ascii_error(C050))
                        await writer.drain()
                        continue
                    while await reader.read(4096):  # a binary module waits for the rest of a frame
                        pass
                    return
                if len(request) < (15 if code == "binary" else 30):
                    writer.write(self.server._reply(code == "binary", C061))
                    continue
                if code == "binary":
                    cmd, sub = struct.unpack_from("<HH", request, 11)
                    rest = request[15:]
                else:
                    try:
                        cmd, sub = int(request[22:26], 16), int(request[26:30], 16)
                    except ValueError:
                        writer.write(_ascii_error(C061))
                        continue
                    rest = request[30:]
                writer.write(self.server.answer(code, cmd, sub, rest))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    def _close_clients(self) -> None:
        for w in list(self._writers):
            with contextlib.suppress(Exception):
                w.transport.abort()
        self._writers.clear()

    async def _halt(self) -> None:
        srv, self._srv = self._srv, None
        if srv is not None:
            srv.close()
        self._close_clients()
        if srv is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(srv.wait_closed(), 1.0)

    def _on_fault(self, fault: Fault) -> None:
        if fault.mode != "restart":
            return
        loop = self._loop
        if loop is None:
            return

        def go() -> None:
            if self._restart is not None:
                self._restart.cancel()
            self._tasks.add(asyncio.ensure_future(self._halt()))
            self._restart = loop.call_later(
                fault.delay, lambda: self._tasks.add(asyncio.ensure_future(self._come_back()))
            )

        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            go()
        else:
            loop.call_soon_threadsafe(go)

    async def _come_back(self) -> None:
        self._restart = None
        if self.plc.fault.mode == "restart":
            self.plc.fault = Fault()
        if self._srv is None:
            await self._serve()

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self._serve()

    async def stop(self) -> None:
        if self._restart is not None:
            self._restart.cancel()
        self.plc.fault = Fault()
        await self._halt()


def _ascii_error(code: int) -> bytes:
    body = f"{code:04X}00FF03FF0000000000".encode()
    return f"D00000FF03FF00{len(body):04X}".encode() + body


__all__ = ["FAULTS", "McSimulator", "SimulatedPlc", "SimulatedPoint"]
