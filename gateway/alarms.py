"""Alarms at the edge (DESIGN §4b): conditions over a device's points, raised once they have
held for `for`, cleared when `clear` holds (default: once `when` no longer does), acknowledged
by an operator.

Each device's alarms are evaluated on its latest readings after each of its samples. An alarm
whose inputs are bad keeps its state (a lost meter does not clear an over-current) and says so
once in an event. Events (`active`, `cleared`, `acked`) go through the sinks' durable queue to
`P/G/D/alarm`; each sink also gets the device's set of active alarms (MQTT: retained on
`P/G/D/alarms`). The active set is kept in `data_dir/alarms.json`, written on every change
(atomically), so that an alarm active before a restart is not raised a second time and keeps
its acknowledgement.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config.expressions import DeviceAlarm
from .dictionary import DictionaryEntry
from .expr import EvalError, Fn, Ref, compile_expr, parse
from .logs import event
from .normalise import BAD, Reading

log = logging.getLogger("edgegw.alarms")

SEVERITY_RANK = {"low": 0, "medium": 1, "high": 2, "critical": 3}


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(slots=True)
class _Alarm:
    device: str
    id: str
    severity: str
    message: dict[str, str] | str | None
    when: Fn
    clear: Fn | None
    hold: float  # seconds `when` must hold
    inputs: tuple[tuple[Ref, int | None], ...]  # own points with their positions; others: None
    value_at: int | None  # the position of the point whose value the events carry
    # state
    active: bool = False
    since: float | None = None  # monotonic: when `when` started to hold (pending)
    ts: int | None = None  # when it became active, ms
    value: object = None
    acked: bool = False
    acked_at: int | None = None
    acked_by: str | None = None
    input_bad: str | None = None  # why its inputs are bad, while they are

    def body(self, state: str) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "state": state,
            "severity": self.severity,
            "message": self.message,
            "ts": self.ts if state == "active" else now_ms(),
            "value": self.value,
            "acked": self.acked,
        }
        if self.acked_at is not None:
            out["acked_at"] = self.acked_at
        if self.input_bad is not None:
            out["reason"] = self.input_bad
        return out


@dataclass(slots=True)
class _Device:
    alarms: dict[str, _Alarm] = field(default_factory=dict)


class AlarmEngine:
    """Every device's alarms. `publish(device, suffix, body)` sends an event through the durable
    queue; `active_set(device, alarms)` hands the sinks the device's active alarms."""

    def __init__(
        self,
        path: Path,
        publish: Callable[[str, dict[str, Any]], None],
        active_set: Callable[[str, list[dict[str, Any]]], None],
        board: Any = None,
    ):
        self.path = path
        self.publish = publish
        self.active_set = active_set
        self.board = board  # computed.Board: other devices' latest values
        self.devices: dict[str, _Device] = {}
        self.raised = 0
        self.cleared = 0
        self.acked = 0
        self._saved = self._load()

    # ---- configuration ----

    def add_device(
        self,
        device: str,
        alarms: Sequence[DeviceAlarm],
        points: Sequence[DictionaryEntry],
        devices: Sequence[str],
    ) -> None:
        """The device's alarms (again, at a reload: the state of alarms that stay is kept)."""
        old = self.devices.get(device)
        index = {e.id: i for i, e in enumerate(points)}
        mine = _Device()
        for a in alarms:
            when = parse(a.alarm.when, devices)
            clear = parse(a.alarm.clear, devices) if a.alarm.clear is not None else None
            refs = sorted(when.refs | (clear.refs if clear else frozenset()), key=str)
            for r in refs:
                if r.device is not None and self.board is not None:
                    self.board.want(r.device, r.point)
            own_first = next((index[r.point] for r in sorted(when.refs, key=str) if r.device is None), None)
            message = a.alarm.message
            alarm = _Alarm(
                device,
                a.alarm.id,
                a.alarm.severity,
                message,
                compile_expr(when),
                compile_expr(clear) if clear is not None else None,
                a.alarm.for_,
                tuple((r, index.get(r.point) if r.device is None else None) for r in refs),
                own_first,
            )
            before = old.alarms.get(a.alarm.id) if old is not None else None
            saved = self._saved.get(device, {}).get(a.alarm.id)
            if before is not None:
                _take_state(alarm, before)
            elif saved is not None:  # active before the restart: active still, not raised again
                alarm.active = True
                alarm.ts = saved.get("ts")
                alarm.value = saved.get("value")
                alarm.acked = bool(saved.get("acked"))
                alarm.acked_at = saved.get("acked_at")
            mine.alarms[a.alarm.id] = alarm
        if not mine.alarms:
            self.devices.pop(device, None)
        else:
            self.devices[device] = mine
        if old is not None and set(old.alarms) - set(mine.alarms):
            self._save()
        self.active_set(device, self.active(device))

    def remove_device(self, device: str) -> None:
        if self.devices.pop(device, None) is not None:
            self._save()

    # ---- evaluation ----

    def on_readings(self, device: str, readings: Sequence[Reading]) -> None:
        """Evaluate the device's alarms on its latest readings (one per point, in order)."""
        dev = self.devices.get(device)
        if dev is None or not readings:
            return
        changed = False
        now = time.monotonic()
        for a in dev.alarms.values():
            env: dict[Ref, object] = {}
            bad = None
            for ref, at in a.inputs:
                if at is not None:
                    r = readings[at]
                    if r.q == BAD:
                        bad = f"input {ref} is bad" + (f": {r.reason}" if r.reason else "")
                        break
                    env[ref] = r.v
                else:
                    got = self.board.values.get((ref.device, ref.point)) if self.board is not None else None
                    if got is None or got[1] == BAD:
                        bad = f"input {ref} is bad" + (f": {got[2]}" if got is not None and got[2] else "")
                        break
                    env[ref] = got[0]
            if bad is not None:
                a.since = None
                if a.active and a.input_bad is None:
                    a.input_bad = bad
                    self._event(a, "active")
                a.input_bad = bad
                continue
            if a.input_bad is not None:
                a.input_bad = None
            try:
                holds = bool(a.when(env))
                clears = bool(a.clear(env)) if a.clear is not None else not holds
            except EvalError:
                continue  # a value the condition cannot judge (division by zero): no change
            value = readings[a.value_at].v if a.value_at is not None else None
            if not a.active:
                if not holds:
                    a.since = None
                    continue
                if a.since is None:
                    a.since = now
                if now - a.since >= a.hold:
                    a.active, a.ts, a.value = True, now_ms(), value
                    a.acked, a.acked_at, a.acked_by = False, None, None
                    self.raised += 1
                    changed = True
                    event(
                        log, logging.WARNING, "alarm active", device=device, alarm=a.id, severity=a.severity
                    )
                    self._event(a, "active")
            elif clears:
                a.active, a.since, a.value = False, None, value
                self.cleared += 1
                changed = True
                event(log, logging.INFO, "alarm cleared", device=device, alarm=a.id)
                self._event(a, "cleared")
                a.acked, a.acked_at, a.acked_by = False, None, None
        if changed:
            self._save()
            self.active_set(device, self.active(device))

    def _event(self, a: _Alarm, state: str) -> None:
        self.publish(a.device, a.body(state))

    # ---- operators ----

    def active(self, device: str | None = None) -> list[dict[str, Any]]:
        """The active alarms of a device (or of all, each with `device`), highest severity first."""
        out = []
        for dev_id, dev in self.devices.items():
            if device is not None and dev_id != device:
                continue
            for a in dev.alarms.values():
                if a.active:
                    body = a.body("active")
                    if device is None:
                        body = {"device": dev_id, **body}
                    out.append(body)
        out.sort(key=lambda b: (-SEVERITY_RANK[b["severity"]], b["ts"] or 0))
        return out

    def ack(self, device: str, alarm_id: str, who: str) -> dict[str, Any]:
        """Acknowledge an active alarm. KeyError: no such alarm; ValueError: not active."""
        a = self.devices[device].alarms[alarm_id]
        if not a.active:
            raise ValueError(f"alarm {alarm_id} of {device} is not active")
        if not a.acked:
            a.acked, a.acked_at, a.acked_by = True, now_ms(), who
            self.acked += 1
            event(log, logging.INFO, "alarm acknowledged", device=device, alarm=alarm_id, by=who)
            self._event(a, "acked")
            self._save()
            self.active_set(device, self.active(device))
        return {"device": device, **a.body("active")}

    def counts(self) -> dict[str, int]:
        active = sum(a.active for d in self.devices.values() for a in d.alarms.values())
        unacked = sum(a.active and not a.acked for d in self.devices.values() for a in d.alarms.values())
        return {"active": active, "unacknowledged": unacked, "raised": self.raised, "cleared": self.cleared}

    # ---- persistence ----

    def _load(self) -> dict[str, dict[str, dict[str, Any]]]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            event(log, logging.WARNING, "alarm state unreadable; starting with none active", error=str(exc))
            return {}
        if not isinstance(data, dict):
            return {}
        # a file edited by hand or by another version: only the shape written by _save is taken
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for device, alarms in data.items():
            if not isinstance(alarms, dict):
                continue
            for alarm, st in alarms.items():
                if isinstance(st, dict):
                    out.setdefault(device, {})[alarm] = {
                        "ts": _ms(st.get("ts")),
                        "value": st.get("value"),
                        "acked": st.get("acked") is True,
                        "acked_at": _ms(st.get("acked_at")),
                    }
        return out

    def _save(self) -> None:
        state: dict[str, dict[str, Any]] = {}
        for dev_id, dev in self.devices.items():
            active = {
                a.id: {"ts": a.ts, "value": a.value, "acked": a.acked, "acked_at": a.acked_at}
                for a in dev.alarms.values()
                if a.active
            }
            if active:
                state[dev_id] = active
        tmp = self.path.with_suffix(".tmp")
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(state, f, default=str)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:  # a full disk: the state in memory goes on, the next change retries
            event(log, logging.ERROR, "cannot save the alarm state", error=str(exc))
        self._saved = state


def _ms(v: object) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _take_state(new: _Alarm, old: _Alarm) -> None:
    new.active, new.since, new.ts, new.value = old.active, old.since, old.ts, old.value
    new.acked, new.acked_at, new.acked_by, new.input_bad = (
        old.acked,
        old.acked_at,
        old.acked_by,
        old.input_bad,
    )
