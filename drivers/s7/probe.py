"""`edgegw doctor` for an S7 device: open the S7 session with the configured rack/slot or
TSAPs, read the CPU's identity (SZL 0x001C) and its operating state, then read every planned
request once and name the usual fix for each refusal. Reads only."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from edgegw.drivers.base import DeviceUnreachable, PointError
from edgegw.drivers.plugin import Probe

if TYPE_CHECKING:
    from .checks import S7Plan
    from .config import S7Device

TSAP_FIX = (
    "check the CPU family and its rack/slot (S7-1200/1500: rack 0 slot 1; S7-300: rack 0 slot 2; "
    "S7-400: the CPU's slot) or, for S7-200 SMART and LOGO!, plc: s7-200smart / logo or the TSAPs "
    "set in the PLC's connection"
)


async def probe(dev: S7Device, plan: S7Plan | None, timeout: float) -> list[Probe]:
    from snap7.async_client import AsyncClient

    from .checks import S7Plan as Plan
    from .driver import S7Driver

    c = dev.connection
    if plan is None:
        plan = Plan([], [], [], c.pdu_size, dev.planner.max_gap, dev.planner.max_items)
    driver = S7Driver(c.host, c.port, c.tsaps(), min(c.timeout, timeout), plan, describe=c.describe())
    out: list[Probe] = []
    try:
        await driver.connect()
    except DeviceUnreachable as exc:
        fix = (
            TSAP_FIX
            if "refused the S7 connection" in str(exc)
            else "check the address and that port 102 is open"
        )
        return [Probe("FAIL", f"S7 session: {exc}", fix)]
    try:
        identity = "identity not given"
        client = AsyncClient()
        client.connection = driver._conn
        client.connected = True
        client.pdu_length = driver.pdu
        try:
            info = await client.get_cpu_info()
            fields = [
                info.ModuleTypeName.decode(errors="replace").strip(),
                info.SerialNumber.decode(errors="replace").strip(),
                info.ASName.decode(errors="replace").strip(),
            ]
            identity = ", ".join(f for f in fields if f) or identity
        except Exception as exc:  # an S7-1200/1500 without PUT/GET may refuse this too
            identity = f"identity not readable ({str(exc)[:80]})"
        state = ""
        with contextlib.suppress(Exception):
            state = f", CPU in {(await client.get_cpu_state()).replace('S7CpuStatus', '').upper()}"
        out.append(Probe("ok", f"S7 session with {c.describe()}: {identity}, PDU {driver.pdu}{state}"))
        if "STOP" in state.upper():
            out.append(Probe("warn", "the CPU is in STOP: values will not change", "switch the CPU to RUN"))
        if plan.points:
            values = await driver.read()
            refused: dict[str, list[str]] = {}
            for p, v in zip(plan.points, values, strict=True):
                if isinstance(v, PointError):
                    refused.setdefault(str(v.reason), []).append(p.id)
            good = len(plan.points) - sum(len(ids) for ids in refused.values())
            if not refused:
                out.append(Probe("ok", f"read all {good} points in {len(driver.requests)} request(s)"))
            for reason, ids in refused.items():
                names = ", ".join(ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")
                out.append(Probe("FAIL", f"{len(ids)} point(s) refused ({names}): {reason}", _fix(reason)))
    except DeviceUnreachable as exc:
        out.append(Probe("FAIL", f"reading: {exc}", "check the network and the CPU's connection resources"))
    finally:
        await driver.close()
    return out


def _fix(reason: str) -> str:
    if "PUT/GET" in reason:
        return "enable PUT/GET access in the CPU's properties (see above), download, and run doctor again"
    if "optimized block access" in reason:
        return "make the DB standard-access (not optimized) or correct the address to the DB's real layout"
    return "check the addresses against the PLC program"
