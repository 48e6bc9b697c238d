"""End to end: Modbus TCP simulators -> gateway process -> real Mosquitto -> a subscriber.

Everything runs as real processes on free loopback ports: `edgegw simulate`, `edgegw run` and
mosquitto. The assertions are made from the MQTT side, as a consumer in the plant would.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from harness import (
    EDGEGW,
    ROOT,
    Proc,
    Subscriber,
    free_port,
    seq_report,
    start_mosquitto,
    wait_for,
    wait_port,
)

PREFIX = "edgegw/gw-test"


class Plant:
    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.mqtt_port = free_port()
        self.sim_ports = (free_port(), free_port())
        self.control = free_port()
        self.config = tmp / "plant.yaml"
        self.config.write_text(
            f"""
include: {ROOT}/configs/models/*.yaml
gateway: {{id: gw-test, data_dir: {tmp}/data, location: {{site: test}}}}
devices:
  - id: im-a
    model: injection-molder
    protocol: modbus-tcp
    connection: {{host: 127.0.0.1, port: {self.sim_ports[0]}, unit_id: 1, timeout: 500ms}}
    poll: {{interval: 200ms, backoff_max: 1s}}
  - id: im-b
    model: injection-molder
    protocol: modbus-tcp
    connection: {{host: 127.0.0.1, port: {self.sim_ports[0]}, unit_id: 2, timeout: 500ms}}
    poll: {{interval: 200ms, backoff_max: 1s}}
  - id: em-c
    model: energy-meter-3ph
    protocol: modbus-tcp
    connection: {{host: 127.0.0.1, port: {self.sim_ports[1]}, unit_id: 7, timeout: 500ms}}
    poll: {{interval: 200ms, backoff_max: 1s}}
northbound:
  mqtt: {{host: 127.0.0.1, port: {self.mqtt_port}, topic_prefix: edgegw, max_classification: important}}
"""
        )
        self.broker = start_mosquitto(tmp, self.mqtt_port)
        self.sub = Subscriber(self.mqtt_port, "edgegw/#")
        self.sim: Proc | None = None
        self.gw: Proc | None = None
        self.start_sim()
        self.start_gateway()

    def start_sim(self) -> None:
        self.sim = Proc(
            [
                *EDGEGW,
                "simulate",
                "-c",
                str(self.config),
                "--control",
                f"127.0.0.1:{self.control}",
                "--period",
                "100000",
            ],
            self.tmp / f"sim-{time.monotonic_ns()}.log",
        )
        for port in (*self.sim_ports, self.control):
            wait_port(port, 15)

    def start_gateway(self) -> None:
        self.gw = Proc([*EDGEGW, "run", "-c", str(self.config)], self.tmp / f"gw-{time.monotonic_ns()}.log")

    def sim_api(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        r = httpx.request(method, f"http://127.0.0.1:{self.control}{path}", json=body, timeout=5)
        r.raise_for_status()
        return r.json()

    def state(self, device: str) -> str | None:
        msgs = self.sub.json(f"/{device}/status")
        return msgs[-1]["state"] if msgs else None

    def close(self) -> None:
        for p in (self.gw, self.sim):
            if p is not None:
                p.kill()
        self.sub.stop()
        self.broker.kill()


@pytest.fixture(scope="module")
def plant(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plant]:
    p = Plant(tmp_path_factory.mktemp("plant"))
    try:
        yield p
    finally:
        p.close()


def test_values_are_decoded_as_the_simulator_holds_them(plant: Plant) -> None:
    wait_for(
        lambda: len(plant.sub.data("im-a")) >= 5 and len(plant.sub.data("em-c")) >= 5, 20, "data messages"
    )
    for device in ("im-a", "em-c"):
        truth = plant.sim_api("GET", f"/devices/{device}/values")
        latest = plant.sub.data(device)[-1]["points"]
        meta = plant.sub.json(f"/{device}/meta")[-1]["points"]
        for pid, expected in truth.items():
            if meta.get(pid) is None:
                continue  # filtered by classification (checked below)
            got = latest[pid]
            assert got["q"] in ("good", "uncertain"), (device, pid, got)
            if isinstance(expected, bool) or meta[pid]["type"] == "bool":
                assert got["v"] == expected, (device, pid)
            elif isinstance(expected, str):
                # serial numbers advance every 5 s: the message may be one step behind
                prefix, n = re.match(r"(\D*)(\d+)$", expected).groups()
                behind = f"{prefix}{int(n) - 1:0{len(n)}d}"
                assert got["v"] in (expected, behind), (device, pid, got, expected)
            else:
                lo, hi = meta[pid].get("range", [0, 10000])
                assert got["v"] == pytest.approx(expected, abs=(hi - lo) * 0.002 + 0.1), (device, pid)


def test_classification_filter_and_retained_birth_meta_status(plant: Plant) -> None:
    wait_for(lambda: plant.sub.data("im-b"), 10, "im-b data")
    late = Subscriber(plant.mqtt_port, f"{PREFIX}/#")
    try:
        wait_for(lambda: len([m for m in late.messages if m[2]]) >= 7, 10, "retained messages")
        retained = {t: json.loads(p) for t, p, r in late.messages if r}
    finally:
        late.stop()
    birth = retained[f"{PREFIX}/status"]
    assert birth["state"] == "online" and birth["version"] and isinstance(birth["ts"], int)
    for device in ("im-a", "im-b", "em-c"):
        assert retained[f"{PREFIX}/{device}/status"]["state"] == "online"
    meta = retained[f"{PREFIX}/im-a/meta"]
    assert meta["model"] == "injection-molder" and meta["protocol"] == "modbus-tcp"
    assert meta["location"] == {"site": "test"}
    assert meta["points"]["barrel_temp_1"]["unit"] == "CEL"
    assert meta["points"]["barrel_temp_1"]["name"]["zh"] == "料筒温度1区"
    assert meta["points"]["barrel_setpoint_1"]["access"] == "rw"
    # recipe_code is classified core: it never leaves the gateway with max_classification important
    assert "recipe_code" not in meta["points"]
    assert all("recipe_code" not in m["points"] for m in plant.sub.data("im-a"))
    assert all(f"{PREFIX}/" in t for t, _, _ in plant.sub.messages)


def test_exception_responses_mark_only_that_device_bad(plant: Plant) -> None:
    plant.sim_api("PUT", "/devices/im-b/fault", {"mode": "exception", "code": 2})
    try:

        def faulted() -> bool:
            msgs = plant.sub.data("im-b")
            return bool(msgs) and all(p["q"] == "bad" for p in msgs[-1]["points"].values())

        wait_for(faulted, 10, "im-b points bad")
        last = plant.sub.data("im-b")[-1]["points"]["barrel_temp_1"]
        assert last == {"v": None, "q": "bad", "reason": "modbus exception 2 (illegal data address)"}
        n_a = len(plant.sub.data("im-a"))
        time.sleep(1.0)
        recent = plant.sub.data("im-a")[n_a:]
        assert len(recent) >= 3
        assert all(m["points"]["barrel_temp_1"]["q"] == "good" for m in recent)
    finally:
        plant.sim_api("DELETE", "/devices/im-b/fault")
    wait_for(
        lambda: plant.sub.data("im-b")[-1]["points"]["barrel_temp_1"]["q"] == "good", 10, "im-b recovers"
    )


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("silent", r"no response within 0\.5s"),
        ("drop", r"connection to .* lost|cannot connect|no response"),
        ("garbage", r"no response|protocol error|bad response|connection"),
        ("partial", r"no response within 0\.5s"),
    ],
)
def test_hanging_or_dropping_device_does_not_disturb_the_others(plant: Plant, mode: str, reason: str) -> None:
    n_a, n_b = len(plant.sub.data("im-a")), len(plant.sub.data("im-b"))
    plant.sim_api("PUT", "/devices/em-c/fault", {"mode": mode})
    started = time.monotonic()
    try:
        wait_for(lambda: plant.state("em-c") == "offline", 10, f"em-c offline ({mode})")
        assert re.search(reason, plant.sub.json("/em-c/status")[-1]["reason"])
        # the data message of the failed poll follows its status through the queue
        wait_for(
            lambda: all(
                p["q"] == "bad" and p["v"] is None for p in plant.sub.data("em-c")[-1]["points"].values()
            ),
            5,
            "em-c points bad",
        )
        time.sleep(max(0.0, 2.0 - (time.monotonic() - started)))
        elapsed = time.monotonic() - started
        # the other devices keep their full poll rate (200 ms): at least 95 % of the samples
        expected = elapsed / 0.2
        for device, before in (("im-a", n_a), ("im-b", n_b)):
            got = plant.sub.data(device)[before:]
            assert len(got) >= 0.95 * expected - 1, (device, len(got), expected)
            assert all(m["points"]["barrel_temp_1"]["q"] == "good" for m in got)
    finally:
        plant.sim_api("DELETE", "/devices/em-c/fault")
    wait_for(lambda: plant.state("em-c") == "online", 10, "em-c back online")


def test_stopped_simulator_makes_devices_offline_with_bad_points_then_recover(plant: Plant) -> None:
    assert plant.sim is not None
    plant.sim.kill()
    wait_for(lambda: plant.state("em-c") == "offline", 10, "em-c offline")
    status = plant.sub.json("/em-c/status")[-1]
    assert re.search(r"cannot connect|connection .* lost|no response", status["reason"]), status
    wait_for(
        lambda: all(
            p["q"] == "bad" and p["v"] is None and p["reason"]
            for p in plant.sub.data("em-c")[-1]["points"].values()
        ),
        5,
        "em-c points bad",
    )
    plant.start_sim()
    wait_for(lambda: plant.state("em-c") == "online", 15, "em-c online again")
    wait_for(
        lambda: plant.sub.data("em-c")[-1]["points"]["voltage_l1"]["q"] == "good", 10, "good values again"
    )


def test_seq_has_no_gap_and_continues_across_a_restart(plant: Plant) -> None:
    assert plant.gw is not None
    before = {d: max(m["seq"] for m in plant.sub.data(d)) for d in ("im-a", "im-b", "em-c")}
    rc = plant.gw.stop()
    assert rc == 0, plant.gw.output()
    assert "Traceback" not in plant.gw.output()
    wait_for(lambda: plant.state("gw-test") == "offline", 5, "offline status")
    last_status = plant.sub.json("/im-a/status")[-1]
    assert last_status["state"] == "offline" and last_status["reason"] == "gateway stopped"
    stopped = {d: max(m["seq"] for m in plant.sub.data(d)) for d in before}
    plant.start_gateway()
    wait_for(
        lambda: all(max(m["seq"] for m in plant.sub.data(d)) > stopped[d] + 3 for d in before), 15, "new data"
    )
    for device in before:
        msgs = plant.sub.data(device)
        missing, dups = seq_report(msgs)
        assert missing == [], (device, missing)
        assert dups == 0, device
        assert min(m["seq"] for m in msgs) == 1
