"""`edgegw doctor` for an MC device: connect, read the CPU model name (command 0101), then
read every planned request once and name the usual fix for each refusal. When the PLC does
not answer in the configured code, try the other one to tell a binary/ASCII mismatch from a
port that is not an MC connection. Reads only."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from edgegw.drivers.base import DeviceUnreachable, PointError
from edgegw.drivers.plugin import Probe

if TYPE_CHECKING:
    from .checks import McPlan
    from .config import McDevice

OPEN_SETTING = (
    "in GX Works: the CPU's (or Ethernet module's) Ethernet settings > open/external device configuration: "
    "a connection on this port with protocol TCP, 'MC protocol' (SLMP on iQ-F/iQ-R) and the same "
    "communication data code; write the parameters and reset the CPU"
)


async def probe(dev: McDevice, plan: McPlan | None, timeout: float) -> list[Probe]:
    from .checks import McPlan as Plan
    from .codec import EndCodeError, Malformed, codec_for
    from .driver import McDriver, McLink

    c = dev.connection
    codec = codec_for(c)
    wait = min(c.timeout, timeout)
    conn = McLink(c.host, c.port, codec, wait)
    try:
        await conn.open()
    except (TimeoutError, OSError) as exc:
        return [
            Probe(
                "FAIL",
                f"MC connection to {c.describe()}: {exc or 'timed out'}",
                "check the address and " + OPEN_SETTING,
            )
        ]
    out: list[Probe] = []
    try:
        try:
            name, mcode = codec.model_name(await conn.exchange(codec.cpu_model()))
            out.append(
                Probe("ok", f"MC 3E {c.code} on {c.host}:{c.port}: CPU {name} (model code {mcode:04X}H)")
            )
        except EndCodeError as exc:
            # some modules and iQ-F firmware refuse 0101; a refusal still proves MC answers
            out.append(
                Probe("ok", f"MC 3E {c.code} on {c.host}:{c.port} answers (CPU model not given: {exc})")
            )
        except (Malformed, TimeoutError, OSError, EOFError) as exc:
            await conn.close()
            return [*out, await _why_silent(dev, codec, wait, exc)]
    finally:
        await conn.close()
    if plan is None:
        plan = Plan([], [], [], c.iqr())
    if plan.points:
        driver = McDriver(c.host, c.port, codec, wait, plan, describe=c.describe())
        try:
            values = await driver.read()
        except DeviceUnreachable as exc:
            out.append(
                Probe(
                    "FAIL",
                    f"reading: {exc}",
                    "check the network and that no other client holds the connection",
                )
            )
            return out
        finally:
            await driver.close()
        refused: dict[str, list[str]] = {}
        for p, v in zip(plan.points, values, strict=True):
            if isinstance(v, PointError):
                refused.setdefault(str(v.reason), []).append(p.id)
        if not refused:
            good = len(plan.points)
            out.append(Probe("ok", f"read all {good} points in {len(plan.requests)} request(s)"))
        for reason, ids in refused.items():
            names = ", ".join(ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")
            out.append(Probe("FAIL", f"{len(ids)} point(s) refused ({names}): {reason}", _fix(reason)))
    return out


async def _why_silent(dev: McDevice, codec: object, wait: float, exc: BaseException) -> Probe:
    from .codec import Codec, EndCodeError, Malformed
    from .driver import McLink

    assert isinstance(codec, Codec)
    c = dev.connection
    what = f"malformed reply: {exc}" if isinstance(exc, Malformed) else f"no MC reply within {wait:g}s"
    other = "ascii" if c.code == "binary" else "binary"
    if "ASCII-coded" in str(exc) or "binary-coded" in str(exc):
        return Probe(
            "FAIL",
            f"MC 3E {c.code} on {c.host}:{c.port}: {what}",
            f"set code: {other} (or the connection's data code in GX Works to {c.code})",
        )
    alt = dataclasses.replace(codec, code=other)
    conn = McLink(c.host, c.port, alt, wait)
    try:
        await conn.open()
        await conn.exchange(alt.cpu_model())
        answers = True
    except EndCodeError:
        answers = True
    except (Malformed, TimeoutError, OSError, EOFError):
        answers = False
    finally:
        await conn.close()
    if answers:
        return Probe(
            "FAIL",
            f"MC 3E {c.code} on {c.host}:{c.port}: {what}, but the PLC answers {other}-coded requests",
            f"set code: {other} (or the connection's communication data code in GX Works to {c.code})",
        )
    return Probe(
        "FAIL",
        f"MC 3E on {c.host}:{c.port}: {what} in binary or ASCII",
        "the port accepts TCP but is not an MC protocol connection (or it is set to UDP, or another client "
        "holds it): " + OPEN_SETTING,
    )


def _fix(reason: str) -> str:
    if reason.startswith(("C056", "4031")):
        return "the address is beyond the device range set in the CPU's parameters (GX Works: device/memory settings) or a typo"
    if reason.startswith(("C05B", "4030")):
        return "this CPU has no such device, or it is not accessible over MC: check the address"
    if reason.startswith("C059"):
        return "the CPU does not know the command: check plc (iQ-R subcommands only on iQ-R CPUs)"
    return "check the addresses against the PLC program"
