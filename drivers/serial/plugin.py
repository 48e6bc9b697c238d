"""The serial line-protocol plugin: `serial` instruments (scales, barcode readers, gauges)
that print ASCII lines, streamed or polled (pyserial, imported when used)."""

from __future__ import annotations

import codecs
import difflib
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from edgegw.drivers.plugin import (
    BusClaim,
    Checked,
    Context,
    Path_,
    PluginBase,
    PortTarget,
    Problem,
    Simulator,
    Target,
)
from edgegw.gateway.config.source import short

from ..serialport import unescape
from .config import SerialDevice

if TYPE_CHECKING:
    from edgegw.drivers.base import Driver
    from edgegw.gateway.config.base import DeviceBase
    from edgegw.gateway.dictionary import DictionaryEntry

    from .framing import Framer


class SerialPlugin(PluginBase):
    name = "serial"
    protocols = ("serial",)
    # no address_key: points are named groups of the framing pattern

    def device_models(self) -> Sequence[type[DeviceBase]]:
        return (SerialDevice,)

    def check_device(self, dev: DeviceBase, path: Path_, points: list[DictionaryEntry]) -> Checked:
        assert isinstance(dev, SerialDevice)
        return Checked(_check_serial_line(dev, path, points))

    def bus_claim(self, ctx: Context | None, dev: DeviceBase) -> BusClaim | None:
        assert isinstance(dev, SerialDevice)
        c = dev.connection
        port = ctx.port_path(c.port) if ctx is not None else c.port
        return BusClaim(port, (c.baudrate, c.bytesize, c.parity, float(c.stopbits)), shared=False)

    def build_driver(
        self, ctx: Context, dev: DeviceBase, points: list[DictionaryEntry], plan: object
    ) -> Driver:
        from .driver import SerialLineDriver
        from .lines import LineParser

        assert isinstance(dev, SerialDevice)
        f = dev.framing
        c = dev.connection
        return SerialLineDriver(
            dev.id,
            ctx.port_path(c.port),
            (c.baudrate, c.bytesize, c.parity, float(c.stopbits)),
            framer(dev),
            LineParser([(e.id, e.type) for e in points], f.pattern, f.encoding),
            request=unescape(dev.request) if dev.mode == "poll" and dev.request else None,
            timeout=c.timeout,
            partial_timeout=f.partial_timeout,
            idle_timeout=dev.idle_timeout,
        )

    def simulators(
        self,
        ctx: Context,
        devices: list[tuple[DeviceBase, list[DictionaryEntry], object]],
        bind: str,
        period: float,
    ) -> list[Simulator]:
        from .simulator import LineInstrumentSimulator, PatternError

        out: list[Simulator] = []
        for dev, points, _ in devices:
            assert isinstance(dev, SerialDevice)
            try:
                out.append(LineInstrumentSimulator(ctx.port_path(dev.connection.port), dev, points, period))
            except PatternError as exc:
                raise ValueError(f"cannot simulate {dev.id}: {exc}") from None
        return out

    def doctor_target(self, ctx: Context, dev: DeviceBase) -> Target | None:
        assert isinstance(dev, SerialDevice)
        return PortTarget(ctx.port_path(dev.connection.port))


def framer(dev: SerialDevice) -> Framer:
    from .framing import Framer

    f = dev.framing
    return Framer(
        terminator=unescape(f.terminator) if f.terminator else None,
        length=f.length,
        start=unescape(f.start) if f.start else None,
        end=unescape(f.end) if f.end else None,
        max_frame=f.max_line,
    )


def _check_serial_line(dev: SerialDevice, device_path: Path_, points: list[DictionaryEntry]) -> list[Problem]:
    """Framing that can cut frames, a pattern that names every point, a request when polled."""
    out: list[Problem] = []
    f = dev.framing
    fpath: Path_ = (*device_path, "framing")
    ends = [k for k in ("terminator", "length", "end") if getattr(f, k) is not None]
    if not ends:
        out.append((fpath, 'say where a frame ends: terminator (e.g. "\\r\\n"), length, or start and end'))
    elif len(ends) > 1:
        out.append(((*fpath, ends[1]), f"{' and '.join(ends)} are alternatives: give one"))
    if f.end is not None and f.start is None:
        out.append(((*fpath, "end"), "end needs start (a frame runs from start to end); or use terminator"))
    for key, text in (
        ("terminator", f.terminator),
        ("start", f.start),
        ("end", f.end),
    ):
        if text is not None:
            out += _check_bytes((*fpath, key), text)
    try:
        text_encoding = getattr(codecs.lookup(f.encoding), "_is_text_encoding", True)
    except (LookupError, ValueError):  # ValueError: a NUL in the name
        out.append(
            (
                (*fpath, "encoding"),
                f"unknown encoding {short(f.encoding)} (e.g. utf-8, ascii, latin-1, gb18030)",
            )
        )
    else:
        if not text_encoding:
            out.append(
                (
                    (*fpath, "encoding"),
                    f"'{f.encoding}' is not a text encoding (e.g. utf-8, ascii, latin-1, gb18030)",
                )
            )
    ids = [e.id for e in points]
    if f.pattern is None:
        if len(points) > 1:
            out.append(
                (
                    (*fpath, "pattern"),
                    f"{len(points)} points need a pattern with a named group for each: (?P<{ids[0]}>…)",
                )
            )
    else:
        try:
            groups = set(re.compile(f.pattern).groupindex)
        except re.error as exc:
            where = f" at position {exc.pos}" if exc.pos is not None else ""
            out.append(((*fpath, "pattern"), f"not a valid regular expression: {exc.msg}{where}"))
        except (RecursionError, OverflowError, ValueError) as exc:
            out.append(((*fpath, "pattern"), f"not a usable regular expression: {exc}"))
        else:
            for e in points:
                if e.id not in groups:
                    out.append(((*fpath, "pattern"), f"no named group (?P<{e.id}>…) for point '{e.id}'"))
            for g in sorted(groups - set(ids)):
                hint = difflib.get_close_matches(g, ids, n=1)
                more = f"; did you mean '{hint[0]}'?" if hint else f" (points: {', '.join(ids)})"
                out.append(((*fpath, "pattern"), f"named group '{g}' is not a point of the device{more}"))
    if dev.mode == "poll" and dev.request is None:
        out.append(((*device_path, "request"), 'mode: poll needs a request to send (e.g. "SI\\r\\n")'))
    if dev.mode == "stream" and dev.request is not None:
        out.append(((*device_path, "request"), "a request is sent only in mode: poll"))
    if dev.request is not None:
        out += _check_bytes((*device_path, "request"), dev.request)
    if dev.mode == "poll" and dev.idle_timeout is not None:
        out.append(
            (
                (*device_path, "idle_timeout"),
                "idle_timeout is for mode: stream (a polled instrument has connection.timeout)",
            )
        )
    for e in points:
        if e.access != "ro":
            out.append((e.where("access"), "a line-protocol instrument is read-only: access must be ro"))
    return out


def _check_bytes(path: Path_, text: str) -> list[Problem]:
    try:
        data = unescape(text)
    except (UnicodeError, ValueError) as exc:
        return [(path, f"cannot be sent as bytes: {exc}")]
    return [] if data else [(path, "must not be empty")]


PLUGIN = SerialPlugin()
