"""The alarm state file (data_dir/alarms.json) is read back whatever it holds: a file edited by
hand, truncated or written by another version starts the engine, keeps what has the right
shape and never makes the API's list fail."""

from __future__ import annotations

import json
from pathlib import Path

from edgegw.gateway.alarms import AlarmEngine
from edgegw.gateway.config.base import Alarm
from edgegw.gateway.config.expressions import DeviceAlarm
from edgegw.gateway.dictionary import DictionaryEntry
from edgegw.gateway.normalise import Reading

POINTS = [DictionaryEntry(id="current", type="float32")]
ALARMS = [
    DeviceAlarm(Alarm(id="hi", when="current > 80", severity="high"), ("devices", 0, "alarms", 0)),
    DeviceAlarm(Alarm(id="lo", when="current < 1"), ("devices", 0, "alarms", 1)),
]


def engine(path: Path) -> tuple[AlarmEngine, list[tuple[str, dict]]]:
    events: list[tuple[str, dict]] = []
    e = AlarmEngine(path, lambda d, b: events.append((d, b)), lambda d, a: None)
    e.add_device("m1", ALARMS, POINTS, ["m1"])
    return e, events


def test_malformed_state_files_start_and_keep_what_has_the_right_shape(tmp_path: Path) -> None:
    path = tmp_path / "alarms.json"
    for text in (
        "{",
        "[1, 2]",
        '{"m1": [1]}',
        '{"m1": {"hi": 7}}',
        '{"m1": {"hi": {"ts": "yesterday", "acked": "yes", "acked_at": [1]}, "lo": {"ts": 5}}}',
    ):
        path.write_text(text)
        e, _ = engine(path)
        listed = e.active()  # sorts by severity and ts: must not meet a string ts
        assert all(isinstance(a["ts"], int | None) for a in listed), listed
        assert all(a["acked"] in (True, False) for a in listed)
    assert {a["id"] for a in listed} == {"hi", "lo"}
    assert next(a for a in listed if a["id"] == "hi")["acked"] is False


def test_state_survives_a_new_engine_and_nothing_is_raised_twice(tmp_path: Path) -> None:
    path = tmp_path / "alarms.json"
    e, events = engine(path)
    e.on_readings("m1", [Reading("current", 90.0, "good")])
    assert [b["state"] for _, b in events] == ["active"]
    e.ack("m1", "hi", "op")
    again, events2 = engine(path)
    again.on_readings("m1", [Reading("current", 95.0, "good")])
    assert events2 == []
    assert again.active()[0]["acked"] is True
    assert json.loads(path.read_text())["m1"]["hi"]["acked"] is True
