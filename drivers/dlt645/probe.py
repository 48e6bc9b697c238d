"""`edgegw doctor` for a DL/T 645 meter: open the port with the configured line, read one
planned data identifier from the configured address, and when nothing answers, ask the bus
which meter is there (a read of the address sent to the wildcard AAAAAAAAAAAA), first at the
configured line setting and then at the usual others (2400/1200/4800/9600 baud, 8E1). Reads only.
Run it while the gateway is stopped: the gateway holds the port."""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgegw.drivers.base import DeviceUnreachable, PointError
from edgegw.drivers.plugin import Probe
from edgegw.drivers.serialport import line_setting as describe_line

from .codec import BadFrame, Frame, err_meaning, read_request

if TYPE_CHECKING:
    from .checks import Dlt645Plan
    from .config import Dlt645Device

WIRING_FIX = (
    "check the RS-485 wiring (A to A, B to B: swapped A/B is the most common fault), that the meter "
    "is powered, and its baud rate and parity (DL/T 645 meters usually ship at 2400 8E1, some at 1200 "
    "or 9600; the meter's menu shows it)"
)
OTHER_BAUDS = (2400, 1200, 4800, 9600)


async def probe(port: str, dev: Dlt645Device, plan: Dlt645Plan | None, timeout: float) -> list[Probe]:
    from .driver import Dlt645Driver, MeterBus, PortLost

    c = dev.connection
    settings = (c.baudrate, c.bytesize, c.parity, float(c.stopbits))
    wait = min(c.timeout, timeout) if timeout > 0 else c.timeout
    bus = MeterBus(port, settings)
    try:
        await bus.open()
    except DeviceUnreachable as exc:
        return [
            Probe("FAIL", f"serial port: {exc}", "check the adapter and that no other program holds the port")
        ]
    try:
        point = plan.points[0] if plan is not None and plan.points else None
        di = point.di if point is not None else 0x04000401
        try:
            got = await bus.transact(read_request(c.address, di), bytes.fromhex(c.address)[::-1], wait)
        except TimeoutError:
            got = None
        if got is not None:
            if point is None:
                return [Probe("ok", f"meter {c.address} answers at {describe_line(settings)}")]
            driver = Dlt645Driver(bus, c.address, wait, [point])
            value = driver._value(point, got)
            if isinstance(value, PointError):
                reason = value.reason
                fix = (
                    "check the data identifier against the meter's manual: this meter does not have it"
                    if "no requested data" in reason
                    else "check the wiring and the line's termination (bytes arrive damaged)"
                )
                return [
                    Probe("ok", f"meter {c.address} answers at {describe_line(settings)}"),
                    Probe("FAIL", f"point '{point.id}': {reason}", fix),
                ]
            return [
                Probe(
                    "ok",
                    f"meter {c.address} answers at {describe_line(settings)}: '{point.id}' "
                    f"(DI {point.di_text}) = {value}",
                )
            ]
        found = await _who(bus, wait)
        if found is not None:
            return [_found(found, c.address, settings, settings)]
    except PortLost as exc:
        return [Probe("FAIL", f"serial port: {exc}", "check the adapter")]
    finally:
        bus.close()
    for baud in OTHER_BAUDS:
        other = (baud, 8, "E", 1.0)
        if other == settings:
            continue
        alt = MeterBus(port, other)
        try:
            await alt.open()
            found = await _who(alt, wait)
        except (DeviceUnreachable, PortLost):
            found = None
        finally:
            alt.close()
        if found is not None:
            return [_found(found, c.address, settings, other)]
    return [
        Probe(
            "FAIL",
            f"no meter answered at {describe_line(settings)}, as {c.address} or to the wildcard address",
            WIRING_FIX,
        )
    ]


async def _who(bus: object, wait: float) -> str | BadFrame | None:
    from .driver import MeterBus, read_address

    assert isinstance(bus, MeterBus)
    try:
        got = await read_address(bus, wait)
    except TimeoutError:
        return None
    if isinstance(got, Frame):
        if got.control & 0x40:
            return BadFrame(
                got.address, f"ERR 0x{got.data[:1].hex()}: {err_meaning(got.data[0] if got.data else 0)}"
            )
        return None
    return got


def _found(
    found: str | BadFrame,
    configured: str,
    settings: tuple[int, int, str, float],
    line: tuple[int, int, str, float],
) -> Probe:
    where = describe_line(line)
    if isinstance(found, BadFrame):
        return Probe(
            "FAIL",
            f"meter {configured} does not answer; to the wildcard address several meters answered at once "
            f"at {where} ({found.reason})",
            "read the address on each meter's nameplate (or its display) and configure it exactly, 12 digits",
        )
    if line != settings:
        return Probe(
            "FAIL",
            f"a meter answered as {found} at {where}; the config says {describe_line(settings)}",
            f'set the connection to baudrate: {line[0]}, parity: {line[2]} (and address: "{found}" if that '
            "is this meter)",
        )
    return Probe(
        "FAIL",
        f"a meter answered as {found} — the nameplate address in the config is {configured}",
        f'set connection.address: "{found}" if that is this meter (the 12 digits on its nameplate)',
    )
