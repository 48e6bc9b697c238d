"""Line-protocol instruments end to end over real pseudo-terminals: `edgegw simulate` prints
scale and barcode lines on socat pty pairs, `edgegw run` reads them, a subscriber on a real
Mosquitto checks what is published, and the HTTP API shows the rejected frames by kind."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from harness import ROOT, SimPlant, free_port, seq_report, wait_for

pytestmark = pytest.mark.skipif(not shutil.which("socat"), reason="needs socat (apt-get install -y socat)")
TOKEN = "serial-test-token"


class Line(SimPlant):
    def __init__(self, tmp: Path):
        mqtt_port, self.api = free_port(), free_port()
        self.scale_port = str(tmp / "ttyUSB-scale")
        config = f"""
include: {ROOT}/configs/models/weighing-scale.yaml
gateway: {{id: gw-serial, data_dir: {tmp}/data}}
devices:
  - id: scale-1
    model: weighing-scale
    protocol: serial
    connection: {{port: {self.scale_port}, baudrate: 9600}}
    framing:
      terminator: "\\r\\n"
      pattern: '^(?P<stability>ST|US),(?P<weighing_mode>GS|NT),(?P<weight>[ +-][ \\d.]{{7}}),kg$'
      partial_timeout: 300ms
      max_line: 64
    poll: {{interval: 150ms, backoff_max: 1s}}
    idle_timeout: 1500ms
  - id: scale-2
    protocol: serial
    connection: {{port: {tmp}/ttyUSB-scale2, timeout: 400ms}}
    framing: {{terminator: '\\r\\n', pattern: '^S S\\s+(?P<weight>-?\\d+\\.\\d+) kg$'}}
    mode: poll
    request: 'SI\\r\\n'
    poll: {{interval: 250ms, backoff_max: 1s}}
    points: [{{id: weight, type: float64, unit: KGM}}]
  - id: scanner-1
    protocol: serial
    connection: {{port: {tmp}/ttyACM-scanner}}
    framing: {{terminator: "\\r", pattern: '^\\n?(?P<scanned_id>SN-\\d{{6}})$'}}
    poll: {{interval: 300ms, backoff_max: 1s}}
    points: [{{id: scanned_id, type: string}}]
northbound:
  mqtt: {{host: 127.0.0.1, port: {mqtt_port}}}
api: {{listen: 127.0.0.1:{self.api}, token: {TOKEN}}}
"""
        super().__init__(
            tmp, config, "gw-serial", ["scale-1", "scale-2", "scanner-1"], mqtt_port, free_port()
        )

    def device(self, device: str) -> dict[str, Any]:
        r = httpx.get(f"http://127.0.0.1:{self.api}/api/v1/devices/{device}", timeout=5)
        r.raise_for_status()
        return r.json()  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def line(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Line]:
    s = Line(tmp_path_factory.mktemp("serial"))
    yield s
    s.stop()


def test_scale_lines_become_typed_values(line: Line) -> None:
    out = line.sim.output()
    assert f"simulating scale-1: serial instrument on {line.scale_port} (a line every 0.15s" in out
    assert "simulating scale-2: serial instrument on" in out and "answering requests" in out
    listed = line.ctl("GET", "/devices")
    assert listed["scale-1"]["port"] == line.scale_port and listed["scale-1"]["fault"] == "none"
    line.ctl("PUT", "/devices/scale-1/points/weight", {"value": 12.34})
    line.ctl("PUT", "/devices/scale-2/points/weight", {"value": -3.125})
    n1, n2 = len(line.sub.data("scale-1")), len(line.sub.data("scale-2"))
    wait_for(lambda: len(line.good("scale-1", n1)) > 3 and len(line.good("scale-2", n2)) > 3, 10, "new lines")
    p1 = line.good("scale-1", n1)[-1]["points"]
    assert p1["weight"]["v"] == 12.34 and p1["stability"]["v"] == "ST" and p1["weighing_mode"]["v"] == "GS"
    assert line.good("scale-2", n2)[-1]["points"]["weight"]["v"] == -3.125
    # polled: the answer's round trip is measured; stream: every line a sample, none lost
    assert line.device("scale-2")["counters"]["request_latency"]["count"] > 3
    for d in ("scale-1", "scale-2"):
        missing, dups = seq_report(line.sub.data(d))
        assert not missing and not dups


def test_each_scan_is_one_sample(line: Line) -> None:
    n = len(line.sub.data("scanner-1"))
    wait_for(lambda: len(line.good("scanner-1", n)) >= 5, 10, "five scans")
    codes = [m["points"]["scanned_id"]["v"] for m in line.good("scanner-1", n)]
    numbers = [int(c.removeprefix("SN-")) for c in codes]
    # consecutive serial numbers: each scan arrives once, none skipped, none repeated
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), codes
    assert all(len(m["points"]) == 1 for m in line.sub.data("scanner-1")[n:])


def test_garbage_between_lines_is_counted_and_never_published(line: Line) -> None:
    line.ctl("PUT", "/devices/scale-1/points/weight", {"value": 12.34})
    before = line.device("scale-1")["counters"]["frame_errors"]
    n = len(line.sub.data("scale-1"))
    line.ctl("PUT", "/devices/scale-1/fault", {"mode": "garbage"})
    try:
        # the simulator sends in turn: bytes that are not UTF-8, a line the pattern does not
        # match, a line cut in two around a pause, a run longer than max_line; twice round
        def all_kinds_twice() -> bool:
            now = line.device("scale-1")["counters"]["frame_errors"]
            return all(now[k] - before[k] >= 2 for k in ("encoding", "no_match", "partial", "overlong"))

        wait_for(all_kinds_twice, 20, "every kind of garbage twice")
    finally:
        line.ctl("DELETE", "/devices/scale-1/fault")
    during = line.sub.data("scale-1")[n:]
    assert len(during) >= 6  # a good line follows each bad frame: at least 8 were sent
    # only the valid lines were published, with exactly the value the scale printed; the halves
    # of the cut line (" 12.34" cut after "ST,GS,  " and missing a byte) were never joined
    weights = [m["points"]["weight"] for m in during]
    assert all(w == {"v": 12.34, "q": "good"} for w in weights), weights
    statuses = line.sub.json("/scale-1/status")
    assert statuses[-1]["state"] == "online"
    assert "serial frame rejected" in line.gw.output()
    metrics = httpx.get(f"http://127.0.0.1:{line.api}/metrics", timeout=5).text
    assert 'edgegw_serial_frames_rejected_total{device="scale-1",kind="overlong"}' in metrics


def test_a_stalled_scale_goes_offline_and_comes_back(line: Line) -> None:
    line.ctl("PUT", "/devices/scale-1/fault", {"mode": "stall"})
    try:
        wait_for(lambda: line.device("scale-1")["state"] == "offline", 10, "offline after the idle timeout")
        info = line.device("scale-1")
        assert info["reason"] == "nothing received from the instrument for 1.5s"
        last = line.sub.data("scale-1")[-1]["points"]
        assert last["weight"] == {"v": None, "q": "bad", "reason": info["reason"]}
    finally:
        line.ctl("DELETE", "/devices/scale-1/fault")
    n = len(line.sub.data("scale-1"))
    wait_for(lambda: len(line.good("scale-1", n)) > 2, 10, "lines again")
    assert line.device("scale-1")["state"] == "online"


def test_port_vanishes_and_comes_back(line: Line) -> None:
    n_scan = len(line.sub.data("scanner-1"))
    line.ctl("DELETE", "/devices/scale-1/port")
    assert not Path(line.scale_port).exists()
    try:
        wait_for(
            lambda: any(
                s["state"] == "offline" and "not found" in s.get("reason", "")
                for s in line.sub.json("/scale-1/status")
            ),
            10,
            "scale-1 offline: port not found",
        )
        # the scanner on its own port is not disturbed
        wait_for(lambda: len(line.good("scanner-1", n_scan)) > 2, 10, "scanner still read")
        time.sleep(1.5)  # a few retries with the port gone
    finally:
        line.ctl("PUT", "/devices/scale-1/port")
    assert Path(line.scale_port).exists()
    n = len(line.sub.data("scale-1"))
    wait_for(lambda: len(line.good("scale-1", n)) > 3, 15, "data resuming")
    assert line.sub.json("/scale-1/status")[-1]["state"] == "online"
    assert line.gw.p.poll() is None  # no restart was needed
    assert "Traceback" not in line.gw.output() + line.sim.output()
