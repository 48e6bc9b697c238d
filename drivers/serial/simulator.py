"""Line-protocol instruments (scales, barcode readers, gauges) on pseudo-terminal pairs.

Each `serial` device of a config gets a socat pty pair: the gateway opens the path the config
names, the simulator writes at `<path>.sim`. The lines it prints are built from the device's
own framing and pattern, so whatever an integrator configures can be simulated: literal text
of the pattern is copied, each named group gets its point's value in the first format the group
accepts (`+12.345`, `0042`, `SN-000123` …), and every line is checked against the pattern
before it is sent. A `stream` instrument prints one line per poll interval (a string point
takes the next serial number each time, as a barcode reader scanning parts); a `poll`
instrument answers each request.

Faults: `garbage` puts a bad frame before every good one, in turn bytes that are not text,
a line the pattern does not match, a line cut in two around a pause (joined, the two halves
would read as a different value), and a run longer than `max_line`; `stall` stops sending and
answering. `unplug()` makes the port path vanish, as a pulled USB adapter; `plug()` brings it
back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import re._parser as sre  # type: ignore[import-not-found]  # the standard library's regex parser: to print lines a pattern matches
from dataclasses import dataclass, field
from typing import Any

from edgegw.drivers.serialport import unescape
from edgegw.gateway.dictionary import DictionaryEntry
from edgegw.gateway.writeback import raw_value
from edgegw.simulators.faults import Fault, OnPty, PtyPair
from edgegw.simulators.values import HeldValues, ValueGenerator

from .config import SerialDevice

log = logging.getLogger("edgegw.simulate")

SERIAL_FAULTS = ("none", "garbage", "stall")

_FORMATS: dict[str, tuple[str, ...]] = {
    "float": (
        "{:.3f}",
        "{:+.3f}",
        "{:+09.3f}",
        "{:09.3f}",
        "{:.2f}",
        "{:+.2f}",
        "{:.1f}",
        "{:+.1f}",
        "{:.0f}",
        "{:g}",
        "{:8.2f}",  # right-aligned in a fixed width, as scales print
        "{:8.3f}",
        "{:7.2f}",
        "{:7.3f}",
        "{:8.1f}",
        "{:10.3f}",
    ),
    "int": ("{:d}", "{:+d}", "{:05d}", "{:+06d}", "{:08d}"),
}
_BOOLS = (("1", "0"), ("true", "false"), ("ON", "OFF"), ("Y", "N"), ("ST", "US"))
_CHARS = "0aA -+.,:/_#"


class PatternError(ValueError):
    pass


def _render(items: Any, fill: dict[str, str], names: dict[int, str]) -> str:
    """The shortest text each part of a parsed pattern matches; named groups take `fill`."""
    out: list[str] = []
    for op, av in items:
        kind = op.name
        if kind == "LITERAL":
            out.append(chr(av))
        elif kind in ("NOT_LITERAL", "ANY"):
            out.append("x" if kind == "ANY" or av != ord("x") else "y")
        elif kind == "IN":
            out.append(_one_of(av))
        elif kind == "CATEGORY":
            out.append(_category(av.name))
        elif kind in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
            lo, _, sub = av
            out.append(_render(sub, fill, names) * lo)
        elif kind == "SUBPATTERN":
            group, _, _, sub = av
            name = names.get(group) if group is not None else None
            out.append(fill[name] if name in fill else _render(sub, fill, names))
        elif kind == "ATOMIC_GROUP":
            out.append(_render(av, fill, names))
        elif kind == "BRANCH":
            out.append(_render(av[1][0], fill, names))
        elif kind in ("AT", "ASSERT", "ASSERT_NOT"):
            continue
        else:
            raise PatternError(f"the simulator cannot print text for {kind} in a pattern")
    return "".join(out)


def _category(name: str) -> str:
    return {"CATEGORY_DIGIT": "0", "CATEGORY_SPACE": " ", "CATEGORY_WORD": "a"}.get(name, "x")


def _one_of(items: list[Any]) -> str:
    negate = any(op.name == "NEGATE" for op, _ in items)
    chars = set()
    for op, av in items:
        if op.name == "LITERAL":
            chars.add(chr(av))
        elif op.name == "RANGE":
            chars.update(chr(c) for c in range(av[0], min(av[1], av[0] + 64) + 1))
        elif op.name == "CATEGORY":
            chars.add(_category(av.name))
    if not negate:
        for op, av in items:  # the first thing listed, as a person reads the class
            if op.name == "LITERAL":
                return chr(av)
            if op.name == "RANGE":
                return chr(av[0])
            if op.name == "CATEGORY":
                return _category(av.name)
    return next(c for c in _CHARS if c not in chars)


class LinePrinter:
    """Lines for one device: its pattern with its points' values in."""

    def __init__(self, dev: SerialDevice, entries: list[DictionaryEntry]):
        f = dev.framing
        self.entries = entries
        self.pattern = re.compile(f.pattern) if f.pattern else None
        if self.pattern is not None:
            parsed = sre.parse(f.pattern)
            self._tree = list(parsed)
            self._names = {i: n for n, i in parsed.state.groupdict.items()}
        self.encoding = f.encoding
        self.start = unescape(f.start) if f.start else b""
        end = f.terminator or f.end
        self.end = unescape(end) if end else b""
        self.length = f.length
        self.max_line = f.max_line
        self._chosen: dict[str, int] = {}

    def _candidates(self, e: DictionaryEntry, value: object) -> list[str]:
        if e.type == "string":
            return [str(value)]
        if e.type == "bool":
            return [t if value else f for t, f in _BOOLS]
        raw = raw_value(e, value)
        kind = "float" if e.type in ("float32", "float64") else "int"
        if kind == "int":
            raw = int(raw)  # type: ignore[call-overload]
        return [fmt.format(raw) for fmt in _FORMATS[kind]]

    def text(self, values: dict[str, object], count: int = 0) -> str:
        if self.pattern is None:
            e = self.entries[0]
            return self._candidates(e, values[e.id])[0]
        fill: dict[str, str] = {}
        defaults = {e.id: _render_group(self._tree, self._names, e.id) for e in self.entries}
        for e in self.entries:
            options = self._candidates(e, values[e.id])
            if e.type == "string":  # when the value does not fit the group: text the group accepts
                options += [_numbered(defaults[e.id], count), defaults[e.id]]
            first = self._chosen.get(e.id, 0)
            for k in [first, *range(len(options))]:
                trial = {**defaults, **fill, e.id: options[k]}
                m = self.pattern.search(_render(self._tree, trial, self._names))
                if m is not None and m.group(e.id) == options[k]:
                    fill[e.id], self._chosen[e.id] = options[k], k
                    break
            else:
                raise PatternError(
                    f"no text for point '{e.id}' = {values[e.id]!r} matches its group of the pattern"
                )
        line = _render(self._tree, fill, self._names)
        if self.pattern.search(line) is None:
            raise PatternError(f"the simulator's line {line!r} does not match the pattern")
        return line

    def frame(self, text: str) -> bytes:
        body = text.encode(self.encoding)
        if self.length is not None:
            body = body[: self.length].ljust(self.length, b" ")
        return self.start + body + self.end

    def garbage(self, n: int, good: str, partial_pause: float) -> list[tuple[bytes, float]]:
        """The n-th bad frame of the cycle, as (bytes, pause after them)."""
        kinds = (0, 1, 2, 3) if self.pattern is not None else (0, 3)  # without a pattern any text is a value
        kind = kinds[n % len(kinds)]
        if kind == 0:
            return [(self.start + b"\xff\xfe\x81 \xc3(" + self.end, 0.0)]
        if kind == 1:
            return [(self.frame("ERR 04 OVERLOAD?"), 0.0)]
        if kind == 2 and len(good) > 3:
            # cut inside the line and lose one byte: joined, the halves would be another line
            cut = len(good) // 2
            first, rest = good[:cut], good[cut + 1 :]
            return [
                (self.start + first.encode(self.encoding), partial_pause),
                (rest.encode() + self.end, 0.0),
            ]
        return [(self.start + b"#" * (self.max_line + 50) + self.end, 0.0)]


def _numbered(text: str, n: int) -> str:
    """`text` with its last run of digits replaced by n (SN-000000 -> SN-000042)."""
    runs = list(re.finditer(r"\d+", text))
    if not runs:
        return text
    m = runs[-1]
    width = len(m.group())
    return f"{text[: m.start()]}{n % 10**width:0{width}d}{text[m.end() :]}"


def _render_group(tree: Any, names: dict[int, str], name: str) -> str:
    """What a named group matches at its shortest, found by rendering the whole pattern."""
    for op, av in tree:
        if op.name == "SUBPATTERN":
            group, _, _, sub = av
            if names.get(group) == name:
                return _render(sub, {}, names)
            found = _render_group(sub, names, name)
            if found:
                return found
        elif op.name == "BRANCH":
            for alt in av[1]:
                found = _render_group(alt, names, name)
                if found:
                    return found
        elif op.name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
            found = _render_group(av[2], names, name)
            if found:
                return found
    return ""


@dataclass
class SerialInstrument(HeldValues):
    """One simulated instrument: what the control API sees of it."""

    unit_id: int | None = None
    fault: Fault = field(default_factory=Fault)
    faults: tuple[str, ...] = SERIAL_FAULTS

    def generated(self, entry: DictionaryEntry, gen: ValueGenerator, t: float) -> object:
        if entry.type == "string":
            return gen.value(5.0 * self.requests)  # each line the next serial number
        return gen.value(t)

    def set_fault(self, fault: Fault) -> None:
        self.fault = fault


class LineInstrumentSimulator(OnPty):
    """One serial instrument on its own pty pair."""

    def __init__(self, port: str, dev: SerialDevice, entries: list[DictionaryEntry], period: float):
        self.path = port
        self.pair = PtyPair(port)
        self.mode = dev.mode
        self.interval = dev.poll.interval
        self.request = unescape(dev.request) if dev.request else b""
        self.partial_pause = dev.framing.partial_timeout + 0.5
        self.printer = LinePrinter(dev, entries)
        self.device = SerialInstrument(dev.id, entries, [ValueGenerator(dev.id, e, period) for e in entries])
        self.devices = {dev.id: self.device}
        self.plugged = False
        self._fd: int | None = None
        self._task: asyncio.Task[None] | None = None
        self._garbage = 0
        self._last_error = ""
        self.printer.text(self.device.values())  # a pattern it cannot print fails at start, not later

    def describe(self) -> list[str]:
        what = "answering requests" if self.mode == "poll" else f"a line every {self.interval:g}s"
        return [
            f"{self.device.id}: serial instrument on {self.path} ({what}; simulator end "
            f"{self.pair.sim_link}), {len(self.device.entries)} points"
        ]

    async def start(self) -> None:
        await self.pair.open()
        self._fd = os.open(self.pair.sim_link, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        self._task = asyncio.create_task(self._serve())
        self.plugged = True

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        await self.pair.close()
        self.plugged = False

    async def _serve(self) -> None:
        if self.mode == "poll":
            await self._answer_requests()
        else:
            while True:
                await asyncio.sleep(self.interval)
                await self._send_reading()

    async def _answer_requests(self) -> None:
        assert self._fd is not None
        loop = asyncio.get_running_loop()
        got = asyncio.Event()
        loop.add_reader(self._fd, got.set)
        heard = b""
        try:
            while True:
                await got.wait()
                got.clear()
                try:
                    heard += os.read(self._fd, 1024)
                except BlockingIOError:
                    continue
                while self.request in heard:
                    heard = heard[heard.index(self.request) + len(self.request) :]
                    await self._send_reading()
                heard = heard[-len(self.request) :]
        finally:
            loop.remove_reader(self._fd)

    async def _send_reading(self) -> None:
        d = self.device
        if d.fault.mode == "stall":
            return
        try:
            text = self.printer.text(d.values(), d.requests + 1)
        except PatternError as exc:  # a held value the pattern cannot carry: say so, keep serving
            if str(exc) != self._last_error:
                log.warning("%s: %s; no line sent", d.id, exc)
                self._last_error = str(exc)
            return
        self._last_error = ""
        if d.fault.mode == "garbage":
            for data, pause in self.printer.garbage(self._garbage, text, self.partial_pause):
                self._write(data)
                if pause:
                    await asyncio.sleep(pause)
            self._garbage += 1
        self._write(self.printer.frame(text))
        d.requests += 1

    def _write(self, data: bytes) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(BlockingIOError):  # nobody reads the other end: the line is lost
            os.write(self._fd, data)
