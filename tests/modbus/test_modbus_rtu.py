"""Modbus RTU end to end over real pseudo-terminals: `edgegw simulate` makes a socat pty pair
per serial port and serves the units on it with pymodbus' serial server; `edgegw run` polls
them through one shared bus; a subscriber on a real Mosquitto checks what arrives."""

from __future__ import annotations

import contextlib
import math
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import ROOT, SimPlant, free_port, seq_report, wait_for

pytestmark = pytest.mark.skipif(not shutil.which("socat"), reason="needs socat (apt-get install -y socat)")


class Bus(SimPlant):
    def __init__(self, tmp: Path):
        self.port = str(tmp / "ttyRS485")
        mqtt_port = free_port()
        # two meters on one RS-485 line (units 5 and 6), and a moulding machine alone on another
        config = f"""
include: {ROOT}/configs/models/*.yaml
gateway: {{id: gw-rtu, data_dir: {tmp}/data}}
devices:
  - id: em-5
    model: energy-meter-3ph
    protocol: modbus-rtu
    connection: {{port: {self.port}, baudrate: 38400, stopbits: 2, unit_id: 5, timeout: 300ms}}
    poll: {{interval: 300ms, backoff_max: 1s}}
  - id: em-6
    model: energy-meter-3ph
    protocol: modbus-rtu
    connection: {{port: {self.port}, baudrate: 38400, stopbits: 2, unit_id: 6, timeout: 300ms, inter_frame: 5ms}}
    poll: {{interval: 300ms, backoff_max: 1s}}
  - id: im-9
    model: injection-molder
    protocol: modbus-rtu
    connection: {{port: {tmp}/ttyUSB1, baudrate: 19200, unit_id: 9, timeout: 300ms}}
    poll: {{interval: 300ms, backoff_max: 1s}}
northbound:
  mqtt: {{host: 127.0.0.1, port: {mqtt_port}}}
"""
        super().__init__(tmp, config, "gw-rtu", ["em-5", "em-6", "im-9"], mqtt_port, free_port())


@pytest.fixture(scope="module")
def bus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bus]:
    b = Bus(tmp_path_factory.mktemp("rtu"))
    yield b
    b.stop()


def test_values_decoded_from_two_units_on_one_bus(bus: Bus) -> None:
    out = bus.sim.output()
    assert (
        f"simulating em-5: modbus-rtu on {bus.port}" in out
        and f"simulating em-6: modbus-rtu on {bus.port}" in out
    )
    # the simulator holds values; what the gateway publishes is them, decoded (float32 CDAB, scaled uint32)
    bus.ctl("PUT", "/devices/em-5/points/voltage_l1", {"value": 231.5})
    bus.ctl("PUT", "/devices/em-6/points/voltage_l1", {"value": 228.25})
    bus.ctl("PUT", "/devices/em-6/points/active_energy", {"value": 12345.67})
    bus.ctl("PUT", "/devices/im-9/points/product_serial", {"value": "SN-RTU-9"})
    n5, n6 = len(bus.sub.data("em-5")), len(bus.sub.data("em-6"))
    wait_for(lambda: len(bus.good("em-5", n5)) > 2 and len(bus.good("em-6", n6)) > 2, 10, "new polls")
    m5, m6 = bus.good("em-5", n5)[-1]["points"], bus.good("em-6", n6)[-1]["points"]
    assert m5["voltage_l1"]["v"] == 231.5 and m6["voltage_l1"]["v"] == 228.25
    assert math.isclose(m6["active_energy"]["v"], 12345.67)
    assert m5["serial_number"]["v"] != m6["serial_number"]["v"]  # two units, two answers
    wait_for(
        lambda: any(m["points"]["product_serial"]["v"] == "SN-RTU-9" for m in bus.good("im-9")),
        10,
        "the string",
    )
    sim_values = bus.ctl("GET", "/devices/em-5/values")
    last = bus.good("em-5")[-1]["points"]
    assert abs(last["frequency"]["v"] - sim_values["frequency"]) < 1.0
    for d in ("em-5", "em-6", "im-9"):
        missing, dups = seq_report(bus.sub.data(d))
        assert not missing and not dups


def test_crc_errors_mark_only_that_device_bad(bus: Bus) -> None:
    n5, n6 = len(bus.sub.data("em-5")), len(bus.sub.data("em-6"))
    bus.ctl("PUT", "/devices/em-6/fault", {"mode": "crc"})
    try:
        wait_for(lambda: len(bus.sub.data("em-6")) > n6 + 4, 10, "polls during the fault")
        time.sleep(0.5)
        during6 = bus.sub.data("em-6")[n6 + 1 :]
        reasons = {p.get("reason") for m in during6 for p in m["points"].values()}
        assert reasons == {"CRC error in the response from unit 6"}, reasons
        assert all(p["v"] is None for m in during6 for p in m["points"].values())
        statuses = [s for s in bus.sub.json("/em-6/status") if s["state"] == "offline"]
        assert statuses and "CRC error" in statuses[-1]["reason"]
        # the other unit on the same wire keeps answering, every poll good
        during5 = bus.sub.data("em-5")[n5 + 1 :]
        assert len(during5) >= 4 and all(m in bus.good("em-5") for m in during5)
    finally:
        bus.ctl("DELETE", "/devices/em-6/fault")
    n6 = len(bus.sub.data("em-6"))
    wait_for(lambda: len(bus.good("em-6", n6)) > 1, 10, "em-6 good again")


def test_port_unplugged_and_back(bus: Bus) -> None:
    n5, n9 = len(bus.sub.data("em-5")), len(bus.sub.data("im-9"))
    bus.ctl("DELETE", "/devices/em-5/port")
    assert not Path(bus.port).exists()
    try:
        wait_for(
            lambda: any(
                s["state"] == "offline" and "not found" in s.get("reason", "")
                for s in bus.sub.json("/em-5/status")
            ),
            10,
            "em-5 offline: port not found",
        )
        wait_for(
            lambda: any(s["state"] == "offline" for s in bus.sub.json("/em-6/status")), 10, "em-6 offline"
        )
        # the moulding machine on its own adapter is not disturbed
        wait_for(lambda: len(bus.good("im-9", n9)) > 3, 10, "im-9 still polled")
        time.sleep(1.5)
    finally:
        bus.ctl("PUT", "/devices/em-5/port")
    assert Path(bus.port).exists()
    n5 = len(bus.sub.data("em-5"))
    wait_for(lambda: len(bus.good("em-5", n5)) > 2 and len(bus.good("em-6")) > 0, 15, "data resuming")
    assert bus.sub.json("/em-5/status")[-1]["state"] == "online"
    assert bus.gw.p.poll() is None  # no restart was needed
    assert "Traceback" not in bus.gw.output()


def _fds_on(pid: int, device: str) -> int:
    """How many of the process's file descriptors are open on `device`."""
    import os

    target = os.path.realpath(device)
    n = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            n += os.readlink(fd) == target
    return n


def test_reload_with_new_line_settings_reopens_the_port(tmp_path: Path) -> None:
    port = str(tmp_path / "ttyRS485")
    mqtt_port = free_port()

    def config(baudrate: int) -> str:
        return f"""
include: {ROOT}/configs/models/*.yaml
gateway: {{id: gw-rtu2, data_dir: {tmp_path}/data}}
devices:
  - id: em-5
    model: energy-meter-3ph
    protocol: modbus-rtu
    connection: {{port: {port}, baudrate: {baudrate}, unit_id: 5, timeout: 300ms}}
    poll: {{interval: 300ms, backoff_max: 1s}}
northbound:
  mqtt: {{host: 127.0.0.1, port: {mqtt_port}}}
"""

    plant = SimPlant(tmp_path, config(19200), "gw-rtu2", ["em-5"], mqtt_port, free_port())
    try:
        assert _fds_on(plant.gw.pid, port) == 1
        plant.config.write_text(config(38400))  # pseudo-terminals carry any baud rate
        plant.gw.signal(1)  # SIGHUP
        wait_for(lambda: "config reloaded" in plant.gw.output(), 20, "the reload")
        before = len(plant.sub.data("em-5"))
        wait_for(lambda: len(plant.good("em-5", before)) > 3, 20, "data with the new settings")
        # the old bus's port was closed, not left open (and locked) beside the new one
        assert _fds_on(plant.gw.pid, port) == 1
    finally:
        plant.stop()
