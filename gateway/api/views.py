"""What the API and the status page show, read from the running gateway (no I/O to devices)."""

from __future__ import annotations

import json
import sqlite3
import time
from typing import TYPE_CHECKING, Any

from edgegw.identifier.rules import STREAM as IDENTIFIER_STREAM

from .. import __version__
from ..config.units import UNECE_REC20
from .history import History, decimals

if TYPE_CHECKING:
    from ..runtime import Gateway

MAX_VIEW = 50  # devices in one GET /api/v1/view


def device_ids(gw: Gateway) -> list[str]:
    return [gw.cfg.devices[r.index].id for r in gw.loaded.devices]


def _latency(h: Any) -> dict[str, float | None]:
    return {"p50_ms": _ms(h.quantile(0.5)), "p99_ms": _ms(h.quantile(0.99)), "count": h.count}


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def device_info(gw: Gateway, device: str, counters: bool = False) -> dict[str, Any]:
    resolved = gw.resolved(device)
    assert resolved is not None  # the routes answer 404 for unknown devices first
    dev = gw.cfg.devices[resolved.index]
    runner = gw.runners.get(device)
    out: dict[str, Any] = {
        "id": device,
        "model": dev.model,
        "protocol": dev.protocol,
        "enabled": dev.enabled,
        "state": runner.state if runner else "disabled",
        "reason": runner.reason if runner else None,
        "points": len(resolved.points),
        "poll_interval_s": dev.poll.interval,
    }
    if runner is not None:
        c = runner.group.counters
        out["last_error"] = c.last_error
        out["last_error_ts"] = c.last_error_ts
        out["last_poll_ts"] = runner.latest_ts
        if counters:
            d = runner.driver
            out["counters"] = {
                "polls": c.polls,
                "failed_polls": c.failed_polls,
                "overruns": c.overruns,
                "requests": d.request_count,
                "request_errors": d.error_count,
                "writes": c.writes,
                "failed_writes": c.failed_writes,
                "last_poll_ms": round(c.last_poll_ms, 3),
                **({"frame_errors": dict(d.frame_errors)} if d.frame_errors else {}),
                "poll_latency": _latency(c.poll_latency),
            }
            out["counters"]["request_latency"] = _latency(d.latency)
    return out


def _point_times(runner: Any) -> list[int | None] | None:
    """Per point (in the order of runner.latest), when the gateway received its latest reading,
    if the runner records it; a polled device reads every point in each poll."""
    times = runner.latest_point_ts
    if len(times) == len(runner.latest):
        return list(times)
    if not runner.driver.stream:
        return [runner.latest_ts] * len(runner.latest)
    return None  # a device that sends some points at a time: only the device's own times are known


def device_points(gw: Gateway, device: str) -> dict[str, Any]:
    """Each point's latest reading: value, quality and reason, and `ts`, the time of that
    reading (ms): the device's own timestamp when it sends one (then also `source_ts`), else
    when the gateway received it."""
    resolved = gw.resolved(device)
    assert resolved is not None  # the routes answer 404 for unknown devices first
    runner = gw.runners.get(device)
    readings = list(runner.latest) if runner else []
    times = _point_times(runner) if runner else None
    latest = {r.id: (r, times[i] if times is not None else None) for i, r in enumerate(readings)}
    points: dict[str, Any] = {}
    for e in resolved.points:
        p: dict[str, Any] = e.meta()
        if e.unit in UNECE_REC20:
            p["symbol"] = UNECE_REC20[e.unit][0]
        places = decimals(e)
        if places is not None:
            p["decimals"] = places
        got = latest.get(e.id)
        if got is not None:
            r, received = got
            p["v"], p["q"] = r.v, r.q
            if r.reason is not None:
                p["reason"] = r.reason
            p["ts"] = r.ts if r.ts is not None else received
            if r.ts is not None:
                p["source_ts"] = r.ts
        else:
            p["v"], p["q"], p["reason"], p["ts"] = None, "bad", "not read yet", None
        points[e.id] = p
    return {"device": device, "ts": runner.latest_ts if runner else None, "points": points}


def queues(gw: Gateway) -> dict[str, Any]:
    q = gw.queue
    if q is None:
        return {}
    out: dict[str, Any] = {
        s: {"messages": q.depth_of(s), "bytes": q.sizes.get(s, 0)}
        for s in sorted({"mqtt", IDENTIFIER_STREAM, "influxdb", *q.depths})
    }
    out["dropped"] = q.dropped
    out["max_bytes"] = q.max_bytes
    return out


class QueueUnavailable(Exception):
    """The durable queue cannot answer now (its file cannot be written or read)."""


def identifiers(gw: Gateway, state: str | None, limit: int) -> list[dict[str, Any]]:
    """Registrations from the durable queue. Raises QueueUnavailable when the queue cannot give
    a true list: its file cannot be read, or a commit fails (what waits in memory would be
    missing from the list)."""
    q = gw.queue
    assert q is not None
    out: list[dict[str, Any]] = []
    try:
        if not q.commit():
            raise QueueUnavailable(
                f"{q.failing or 'the queue file cannot be written'}; registrations waiting in memory "
                "cannot be listed until it can"
            )
        if state in (None, "queued"):
            for _row, handle, body in q.after(IDENTIFIER_STREAM, 0, limit):
                item: dict[str, Any] = {"handle": handle, "state": "queued"}
                try:
                    fired = json.loads(body)
                    item["rule"] = fired.get("rule")
                    item["ts"] = fired.get("ts")
                except (ValueError, AttributeError):
                    pass
                out.append(item)
            out.reverse()  # newest first, as the outcomes
        if state != "queued":
            for handle, st, message, ts in q.outcomes(IDENTIFIER_STREAM, state, limit=limit):
                item = {"handle": handle, "state": st, "ts": ts}
                if message:
                    item["error" if st == "failed" else "note"] = message
                out.append(item)
    except sqlite3.Error as exc:
        raise QueueUnavailable(f"the queue file cannot be read: {exc}") from None
    return out[:limit]


def summary(gw: Gateway, started: float) -> dict[str, Any]:
    m, r, i = gw.mqtt, gw.registrar, gw.influx
    out: dict[str, Any] = {
        "gateway": gw.cfg.gateway.id,
        "version": __version__,
        "uptime_s": round(time.time() - started, 1),
        "location": gw.cfg.gateway.location.model_dump(exclude_none=True),
        "devices": {
            "configured": len(gw.loaded.devices),
            "online": sum(1 for x in gw.runners.values() if x.state == "online"),
        },
        "samples": gw.samples,
        "point_values": gw.point_values,
        "queues": queues(gw),
        "ready": not gw.not_ready(),
    }
    if m is not None:
        out["mqtt"] = {
            "broker": f"{m.s.host}:{m.s.port}",
            "connected": m.connected,
            "published": m.published,
            "acked": m.acked,
            "replayed": m.replayed,
            "publish_latency": _latency(m.publish_latency),
            "poll_to_ack_latency": _latency(m.sample_latency),
        }
    if i is not None:
        out["influxdb"] = {
            "url": i.s.url,
            "healthy": i.healthy,
            "written": i.written,
            "failures": i.failures,
            "last_error": i.last_error,
        }
    if r is not None:
        out["identifier"] = r.status()
    return out


def snapshot(gw: Gateway, started: float) -> dict[str, Any]:
    """Everything the status page shows, in one message of its live feed."""
    devices = []
    for d in device_ids(gw):
        info = device_info(gw, d)
        info["values"] = device_points(gw, d)["points"]
        devices.append(info)
    out: dict[str, Any] = {"summary": summary(gw, started), "devices": devices, "identifiers": []}
    if gw.registrar is not None and gw.queue is not None:
        try:
            out["identifiers"] = identifiers(gw, None, 10)
        except QueueUnavailable as exc:
            out["identifiers_error"] = str(exc)
    return out


def health_row(gw: Gateway, device: str) -> dict[str, Any]:
    """A device as the status page's list shows it: what changes rarely (state, reason, last
    error, overruns, failed polls), so that the live feed sends a device only when it changed."""
    resolved = gw.resolved(device)
    assert resolved is not None
    dev = gw.cfg.devices[resolved.index]
    runner = gw.runners.get(device)
    row: dict[str, Any] = {
        "id": device,
        "model": dev.model,
        "protocol": dev.protocol,
        "state": runner.state if runner else "disabled",
        "points": len(resolved.points),
    }
    if runner is not None:
        c = runner.group.counters
        if runner.reason:
            row["reason"] = runner.reason
        if c.last_error:
            row["last_error"], row["last_error_ts"] = c.last_error, c.last_error_ts
        if c.overruns:
            row["overruns"] = c.overruns
        if c.failed_polls:
            row["failed_polls"] = c.failed_polls
    return row


def page_state(gw: Gateway, started: float, history: History | None) -> dict[str, Any]:
    """What the status page's live feed keeps the page up to date with (in `delta` mode): the
    gateway, every device's health row, identifier registrations; no point values (the page
    asks GET /api/v1/view for the devices on screen)."""
    out: dict[str, Any] = {
        "summary": summary(gw, started),
        "devices": {d: health_row(gw, d) for d in device_ids(gw)},
        "identifiers": [],
    }
    if history is not None:
        history.watched()
        out["history"] = history.describe()
    if gw.registrar is not None and gw.queue is not None:
        try:
            out["identifiers"] = identifiers(gw, None, 10)
        except QueueUnavailable as exc:
            out["identifiers_error"] = str(exc)
    return out


def view(
    gw: Gateway, history: History | None, devices: list[str], since: float, meta: bool
) -> dict[str, Any]:
    """The devices on the status page's screen: health with counters, each point's latest
    reading (with its dictionary metadata when `meta`), and the trend samples newer than
    `since` (ms)."""
    out: list[dict[str, Any]] = []
    if history is not None:
        history.watched()
    for d in devices[:MAX_VIEW]:
        if gw.resolved(d) is None:
            continue
        info = device_info(gw, d, counters=True)
        points = device_points(gw, d)["points"]
        if not meta:
            keep = ("v", "q", "reason", "ts")
            points = {pid: {k: p[k] for k in keep if k in p} for pid, p in points.items()}
        info["values"] = points
        info["history"] = history.series(d, since) if history is not None else {"ts": [], "points": {}}
        out.append(info)
    return {
        "now": int(time.time() * 1000),
        "history": history.describe() if history is not None else None,
        "devices": out,
    }
