"""OPC UA end to end: `edgegw simulate` serves the devices with asyncua's server on a real
socket, `edgegw run` polls one and subscribes to the other, a subscriber on a real Mosquitto
checks what arrives: typed values with the server's SourceTimestamp, Bad status as `bad` with
the status name, and data again after the server restarts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from edgegw.gateway.opcua import pki
from harness import SimPlant, free_port, seq_report, wait_for


class Cell(SimPlant):
    def __init__(self, tmp: Path):
        mqtt_port, opc, opc_secure = free_port(), free_port(), free_port()
        user = tmp / "user"
        pki.create_certificate(user / "op.der", user / "op.pem", "urn:acme:operator:kim")
        config = f"""
gateway: {{id: gw-opc, data_dir: {tmp}/data}}
devices:
  - id: cnc-1
    protocol: opcua
    connection: {{endpoint: "opc.tcp://127.0.0.1:{opc}", timeout: 2s}}
    mode: poll
    poll: {{interval: 300ms, backoff_max: 1s}}
    points:
      - {{id: spindle_speed, type: float64, unit: RPM, range: [0, 12000], opcua: {{node: "ns=2;s=Spindle.Speed"}}}}
      - {{id: part_count, type: uint32, opcua: {{node: "ns=2;i=1001"}}}}
      - {{id: program, type: string, opcua: {{node: "nsu=urn:acme:cnc;s=Program.Name"}}}}
      - {{id: alarm, type: bool, opcua: {{node: "/Objects/Machine/Alarm"}}}}
  - id: cnc-2
    protocol: opcua
    connection: {{endpoint: "opc.tcp://127.0.0.1:{opc}", timeout: 2s}}
    mode: subscribe
    poll: {{interval: 200ms, backoff_max: 1s}}
    points:
      - {{id: feed_rate, type: float32, unit: MMT, range: [0, 5000], opcua: {{node: "ns=3;s=Feed.Rate"}}}}
      - {{id: x_pos, type: float64, opcua: {{node: "ns=3;s=Axis.X"}}}}
  - id: cnc-3
    protocol: opcua
    connection:
      endpoint: "opc.tcp://127.0.0.1:{opc_secure}"
      security: {{policy: Basic256Sha256, mode: SignAndEncrypt, server_certificate: {tmp}/pinned/sim.der}}
      username: operator
      password: demo-password
    poll: {{interval: 200ms, backoff_max: 1s}}
    points:
      - {{id: spindle_speed, type: float64, range: [0, 12000], opcua: {{node: "ns=2;s=Cnc3.Speed"}}}}
  - id: cnc-4
    protocol: opcua
    connection:
      endpoint: "opc.tcp://127.0.0.1:{opc_secure}"
      security: {{policy: Aes256_Sha256_RsaPss, mode: Sign, server_certificate: {tmp}/pinned/sim.der}}
      user_certificate: {user}/op.der
      user_private_key: {user}/op.pem
    mode: poll
    poll: {{interval: 200ms, backoff_max: 1s}}
    points:
      - {{id: spindle_speed, type: float64, range: [0, 12000], opcua: {{node: "ns=2;s=Cnc4.Speed"}}}}
northbound:
  mqtt: {{host: 127.0.0.1, port: {mqtt_port}}}
"""
        super().__init__(tmp, config, "gw-opc", ["cnc-2", "cnc-3", "cnc-4"], mqtt_port, free_port())
        wait_for(lambda: len(self.sub.data("cnc-1")) > 2, 20, "cnc-1 polled")


@pytest.fixture(scope="module")
def cell(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cell]:
    c = Cell(tmp_path_factory.mktemp("opcua"))
    yield c
    c.stop()


def test_poll_reads_every_node_form_with_source_timestamps(cell: Cell) -> None:
    cell.ctl("PUT", "/devices/cnc-1/points/spindle_speed", {"value": 8500.5})
    cell.ctl("PUT", "/devices/cnc-1/points/program", {"value": "O1234"})
    cell.ctl("PUT", "/devices/cnc-1/points/part_count", {"value": 4711})
    n = len(cell.sub.data("cnc-1"))

    def held() -> list[dict[str, Any]]:  # the three are set one after another: a poll may fall between
        return [
            m["points"]
            for m in cell.sub.data("cnc-1")[n:]
            if m["points"]["program"]["v"] == "O1234" and m["points"]["part_count"]["v"] == 4711
        ]

    wait_for(lambda: held(), 10, "held values")
    last = held()[-1]
    assert last["spindle_speed"]["v"] == 8500.5
    assert last["alarm"]["q"] == "good" and isinstance(last["alarm"]["v"], bool)  # found by browse path
    assert all("ts" in last[p] for p in ("spindle_speed", "part_count", "program", "alarm"))


def test_subscription_delivers_changes_as_batches(cell: Cell) -> None:
    n = len(cell.sub.data("cnc-2"))
    wait_for(lambda: len(cell.good("cnc-2", n)) > 5, 10, "data changes")
    msgs = cell.good("cnc-2", n)
    assert all(set(m["points"]) <= {"feed_rate", "x_pos"} and m["points"] for m in msgs)
    assert len({m["points"]["feed_rate"]["v"] for m in msgs if "feed_rate" in m["points"]}) > 2
    missing, dups = seq_report(cell.sub.data("cnc-2"))
    assert not missing and not dups


def test_bad_status_is_bad_with_its_name(cell: Cell) -> None:
    cell.ctl("PUT", "/devices/cnc-1/fault", {"mode": "bad"})
    try:
        n = len(cell.sub.data("cnc-1"))
        wait_for(
            lambda: any(
                m["points"]["spindle_speed"].get("reason") == "BadSensorFailure"
                for m in cell.sub.data("cnc-1")[n:]
            ),
            10,
            "BadSensorFailure",
        )
    finally:
        cell.ctl("DELETE", "/devices/cnc-1/fault")
    n = len(cell.sub.data("cnc-1"))
    wait_for(
        lambda: any(m["points"]["spindle_speed"]["q"] == "good" for m in cell.sub.data("cnc-1")[n:]),
        10,
        "good",
    )


def test_server_restart_then_data_resumes(cell: Cell) -> None:
    cell.ctl("PUT", "/devices/cnc-2/fault", {"mode": "restart", "delay": 2.0})
    wait_for(
        lambda: any(s["state"] == "offline" for s in cell.sub.json("/cnc-2/status")), 15, "cnc-2 offline"
    )
    n = len(cell.sub.data("cnc-2"))
    wait_for(lambda: len(cell.good("cnc-2", n)) > 3, 20, "subscription data again")
    wait_for(lambda: cell.sub.json("/cnc-2/status")[-1]["state"] == "online", 5, "online")
    assert cell.gw.p.poll() is None


def test_secured_endpoints_with_username_and_user_certificate(cell: Cell) -> None:
    """The simulator offers exactly the configured policies and identities; the gateway reads
    over Basic256Sha256/SignAndEncrypt with a username and Aes256_Sha256_RsaPss/Sign with a
    user certificate, trusting the simulator's pinned certificate and its own made in pki/."""
    for dev in ("cnc-3", "cnc-4"):
        msgs = cell.good(dev)
        assert len(msgs) > 2 and all(0 <= m["points"]["spindle_speed"]["v"] <= 12000 for m in msgs)
    assert (cell.tmp / "data" / "pki" / "edgegw.der").exists()  # made on first connect
    assert pki.uri_of(cell.tmp / "data" / "pki" / "edgegw.der") == "urn:edgegw:gw-opc"
