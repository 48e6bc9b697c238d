"""The Sparkplug B edge node against the Eclipse Sparkplug TCK's edge-node assertions, one test
per assertion, each naming the specification's requirement id (Sparkplug 3.0, chapters 4-6).

Real components: Mosquitto on a free port, `edgegw simulate` (Modbus TCP devices with a fault
API), `edgegw run` with `northbound.sparkplug`, and a host (tests/sparkplug/host.py) that decodes
payloads with its own protobuf reader. The session's traffic is recorded once per module by a
scripted plant (start, a device going offline and back, a Rebirth request, a DCMD, kill -9 and
a restart); each test checks one requirement on the record.
"""

from __future__ import annotations

import itertools
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from harness import EDGEGW, ROOT, Proc, free_port, start_mosquitto, wait_for, wait_port
from host import Host, Msg, encode_rebirth, encode_write

GROUP, NODE = "plant-jinan", "gw-spb"
NS = f"spBv1.0/{GROUP}"


def config(tmp: Path, mqtt: int, sim: int, extra: str = "") -> str:
    return f"""
include: {ROOT}/configs/models/*.yaml
gateway: {{id: {NODE}, data_dir: {tmp}/data}}
devices:
  - id: em-1
    model: energy-meter-3ph
    protocol: modbus-tcp
    connection: {{host: 127.0.0.1, port: {sim}, unit_id: 1, timeout: 300ms}}
    poll: {{interval: 200ms, backoff_max: 500ms}}
  - id: im-1
    model: injection-molder
    protocol: modbus-tcp
    connection: {{host: 127.0.0.1, port: {sim}, unit_id: 2, timeout: 300ms}}
    poll: {{interval: 200ms, backoff_max: 500ms}}
northbound:
  sparkplug: {{host: 127.0.0.1, port: {mqtt}, group_id: {GROUP}, commands: true{extra}}}
api: {{listen: "127.0.0.1:{free_port()}", token: "t0ken-for-tests-0123456789"}}
"""


class Record:
    """What the host saw, and when the script did what."""

    def __init__(self) -> None:
        self.marks: dict[str, float] = {}
        self.host: Host
        self.sim_values: dict[str, Any] = {}


@pytest.fixture(scope="module")
def record(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Record]:
    tmp = tmp_path_factory.mktemp("spb")
    mqtt, sim, control = free_port(), free_port(), free_port()
    cfg = tmp / "c.yaml"
    cfg.write_text(config(tmp, mqtt, sim))
    broker = start_mosquitto(tmp, mqtt)
    simulator = Proc(
        [*EDGEGW, "simulate", "-c", str(cfg), "--control", f"127.0.0.1:{control}"], tmp / "sim.log"
    )
    wait_port(control, 20)
    rec = Record()
    rec.host = host = Host(mqtt)
    gw = Proc([*EDGEGW, "run", "-c", str(cfg)], tmp / "gw.log")

    def ctl(method: str, path: str, body: Any = None) -> Any:
        r = httpx.request(method, f"http://127.0.0.1:{control}{path}", json=body, timeout=10)
        r.raise_for_status()
        return r.json()

    try:
        wait_for(lambda: len(host.of("DDATA", "im-1")) >= 5, 20, "DDATA from im-1")
        # a device goes offline and comes back
        rec.marks["offline"] = time.monotonic()
        ctl("PUT", "/devices/em-1/fault", {"mode": "drop"})
        wait_for(lambda: host.of("DDEATH", "em-1"), 10, "DDEATH of em-1")
        ctl("DELETE", "/devices/em-1/fault")
        wait_for(lambda: len(host.of("DBIRTH", "em-1")) >= 2, 10, "DBIRTH of em-1 again")
        time.sleep(0.5)
        # Rebirth
        rec.marks["rebirth"] = time.monotonic()
        host.publish(f"{NS}/NCMD/{NODE}", encode_rebirth())
        wait_for(lambda: len(host.of("NBIRTH")) >= 2, 5, "NBIRTH after Rebirth")
        time.sleep(0.5)
        # DCMD: write the setpoint of im-1 (rw, float) through the gateway's write path
        host.publish(f"{NS}/DCMD/{NODE}/im-1", encode_write("barrel_setpoint_1", 10, 215.5))
        host.publish(f"{NS}/DCMD/{NODE}/im-1", b"\xff\xfe not a payload")
        wait_for(
            lambda: abs(ctl("GET", "/devices/im-1/values")["barrel_setpoint_1"] - 215.5) < 1e-6,
            10,
            "DCMD written",
        )
        rec.sim_values = ctl("GET", "/devices/im-1/values")
        # a retained Rebirth (commands are never retained): answered once, not at every barrier
        births = len(host.of("NBIRTH"))
        rec.marks["retained"] = time.monotonic()
        host.publish(f"{NS}/NCMD/{NODE}", encode_rebirth(), qos=1, retain=True)
        time.sleep(1.5)
        rec.marks["retained_births"] = len(host.of("NBIRTH")) - births
        host.publish(f"{NS}/NCMD/{NODE}", b"", qos=1, retain=True)  # clear it
        # out of range (uncertain), then a Modbus exception (bad, the device still answering)
        rec.marks["quality"] = time.monotonic()
        ctl("PUT", "/devices/em-1/points/voltage_l1", {"value": 400.0})
        time.sleep(1.0)
        ctl("DELETE", "/devices/em-1/points/voltage_l1")
        ctl("PUT", "/devices/em-1/fault", {"mode": "exception", "code": 2})
        time.sleep(1.0)
        ctl("DELETE", "/devices/em-1/fault")
        time.sleep(0.5)
        # kill -9: the broker sends the will
        rec.marks["kill"] = time.monotonic()
        gw.signal(signal.SIGKILL)
        gw.stop()
        wait_for(lambda: host.of("NDEATH"), 10, "NDEATH will")
        # restart: the next bdSeq
        rec.marks["restart"] = time.monotonic()
        births = len(host.of("NBIRTH"))
        gw = Proc([*EDGEGW, "run", "-c", str(cfg)], tmp / "gw2.log")
        wait_for(lambda: len(host.of("NBIRTH")) > births, 20, "NBIRTH after restart")
        time.sleep(1.0)
        # an orderly stop: the node publishes its NDEATH itself before it disconnects
        rec.marks["stop"] = time.monotonic()
        gw.stop()
        wait_for(lambda: len(host.of("NDEATH")) >= 2, 10, "NDEATH on an orderly stop")
        yield rec
    finally:
        gw.stop()
        simulator.stop()
        host.stop()
        broker.kill()


def sessions(host: Host) -> list[list[Msg]]:
    """The node's messages split at each NBIRTH (NCMD/DCMD/STATE left out)."""
    out: list[list[Msg]] = []
    for m in list(host.messages):
        if m.verb in ("NCMD", "DCMD", "STATE"):
            continue
        if m.verb == "NBIRTH":
            out.append([])
        if out:
            out[-1].append(m)
    return out


def named(m: Msg) -> dict[str, dict[str, Any]]:
    return {x["name"]: x for x in m.decoded["metrics"] if "name" in x}


# ---- topics and QoS ----


def test_topics_are_the_namespace_group_verb_node_device(record: Record) -> None:
    """[tck-id-topic-structure] spBv1.0/group_id/message_type/edge_node_id[/device_id]; [tck-id-topics-nbirth-topic], [tck-id-topics-dbirth-topic], [tck-id-topics-ddata-topic]."""
    for m in record.host.messages:
        parts = m.topic.split("/")
        assert parts[0] == "spBv1.0" and parts[1] == GROUP and parts[3] == NODE
        assert len(parts) == (5 if m.verb in ("DBIRTH", "DDATA", "DDEATH", "DCMD") else 4)


def test_births_and_data_are_qos0_not_retained(record: Record) -> None:
    """[tck-id-topics-nbirth-qos], [tck-id-topics-dbirth-qos], [tck-id-topics-ddata-qos], [tck-id-topics-ddeath-qos]: QoS 0, retain false."""
    h = record.host
    for verb in ("NBIRTH", "DBIRTH", "DDATA", "DDEATH"):
        msgs = h.of(verb)
        assert msgs, verb
        assert all(m.qos == 0 and not m.retain for m in msgs), verb


def test_will_is_ndeath_qos1_not_retained(record: Record) -> None:
    """[tck-id-message-flow-edge-node-birth-publish-will-message], [...-will-message-topic], [...-will-message-qos]: the will is NDEATH at QoS 1, not retained."""
    death = record.host.of("NDEATH")[0]
    assert death.topic == f"{NS}/NDEATH/{NODE}"
    assert death.qos == 1 and not death.retain


# ---- NBIRTH ----


def test_nbirth_seq_is_zero(record: Record) -> None:
    """[tck-id-payloads-nbirth-seq]: NBIRTH seq is 0."""
    assert all(m.decoded["seq"] == 0 for m in record.host.of("NBIRTH"))


def test_nbirth_carries_bdseq_int64(record: Record) -> None:
    """[tck-id-topics-nbirth-bdseq-included], [tck-id-message-flow-edge-node-birth-publish-nbirth-payload-bdSeq]: a 'bdSeq' metric of datatype Int64."""
    for m in record.host.of("NBIRTH"):
        bd = named(m)["bdSeq"]
        assert bd["datatype"] == 4 and isinstance(bd["value"], int)


def test_nbirth_carries_rebirth_control(record: Record) -> None:
    """[tck-id-topics-nbirth-rebirth-metric], [tck-id-operational-behavior-data-commands-rebirth-datatype], [...-rebirth-value], [...-rebirth-name-aliases]: 'Node Control/Rebirth', Boolean, false, no alias."""
    for m in record.host.of("NBIRTH"):
        rb = named(m)["Node Control/Rebirth"]
        assert rb["datatype"] == 11 and rb["value"] is False and "alias" not in rb


def test_will_bdseq_matches_the_sessions_nbirth(record: Record) -> None:
    """[tck-id-topics-nbirth-bdseq-matching], [tck-id-payloads-ndeath-bdseq]: the NDEATH's bdSeq is the NBIRTH's of that connection."""
    births = [m for m in record.host.of("NBIRTH") if m.at < record.marks["kill"]]
    death = record.host.of("NDEATH")[0]
    assert named(death)["bdSeq"]["value"] == named(births[-1])["bdSeq"]["value"]
    assert "seq" not in death.decoded  # [tck-id-topics-ndeath-seq]
    assert [x["name"] for x in death.decoded["metrics"]] == ["bdSeq"]  # [tck-id-topics-ndeath-payload]


def test_bdseq_starts_at_zero_and_increments_per_connect(record: Record) -> None:
    """[tck-id-topics-nbirth-bdseq-increment]: 0 on the first CONNECT, +1 on each new one; [tck-id-operational-behavior-data-commands-rebirth-action-3]: a Rebirth keeps it."""
    values = [named(m)["bdSeq"]["value"] for m in record.host.of("NBIRTH")]
    assert values == [0, 0, 0, 1]  # start, two Rebirths (same connection), restart after kill -9


# ---- DBIRTH ----


def test_dbirth_has_every_metric_with_name_alias_datatype(record: Record) -> None:
    """[tck-id-topics-dbirth-metrics], [tck-id-payloads-dbirth-alias-uniqueness]: every metric the device reports, each with a name, an alias unique across the node, and a datatype."""
    aliases: dict[int, str] = {}
    for device, n in (("im-1", None), ("em-1", 12)):
        m = record.host.of("DBIRTH", device)[0]
        metrics = m.decoded["metrics"]
        if n is not None:
            assert len(metrics) == n
        for x in metrics:
            assert x["name"] and isinstance(x["alias"], int) and x["datatype"] in range(1, 15)
            assert aliases.setdefault(x["alias"], f"{device}/{x['name']}") == f"{device}/{x['name']}"


def test_dbirth_properties_carry_the_dictionary(record: Record) -> None:
    """DESIGN 5a: engUnit (Rec 20 symbol), engLow/engHigh (range), Quality (Int32), description (en / zh)."""
    m = [
        x
        for x in record.host.of("DBIRTH", "em-1")
        if record.marks["offline"] < x.at < record.marks["rebirth"]
    ][-1]
    v1 = named(m)["voltage_l1"]
    p = v1["properties"]
    assert p["engUnit"] == (12, "V")
    assert p["engLow"] == (10, 0.0) and p["engHigh"] == (10, 300.0)
    assert p["Quality"] == (3, 192)
    assert p["description"][1] == "Voltage L1-N / A相电压"


def test_dbirth_follows_nbirth_in_its_session(record: Record) -> None:
    """[tck-id-message-flow-device-dbirth-after-nbirth]: no device message before the node's NBIRTH."""
    first = record.host.messages[0]
    assert first.verb in ("NBIRTH", "STATE")
    for session in sessions(record.host):
        born: set[str] = set()
        for m in session:
            if m.verb == "DBIRTH":
                born.add(m.device or "")
            elif m.verb == "DDEATH":
                born.discard(m.device or "")
            elif m.verb == "DDATA":
                assert m.device in born, f"DDATA of {m.device} without its DBIRTH"


# ---- seq and DDATA ----


def test_seq_runs_across_the_nodes_messages(record: Record) -> None:
    """[tck-id-payloads-sequence-num-incrementing], [tck-id-payloads-sequence-num-always-included]: one seq, +1 per message, wrapping at 256."""
    for session in sessions(record.host):
        seqs = [m.decoded["seq"] for m in session if m.verb != "NDEATH"]
        assert seqs[0] == 0
        assert all(b == (a + 1) % 256 for a, b in itertools.pairwise(seqs)), seqs[:40]


def test_ddata_by_alias_only_with_timestamps(record: Record) -> None:
    """[tck-id-payloads-alias-data-cmd-requirement]: DDATA metrics by alias, no name, no datatype; each with its own timestamp."""
    for m in record.host.of("DDATA"):
        for x in m.decoded["metrics"]:
            assert "alias" in x and "name" not in x and x["datatype"] is None
            assert isinstance(x.get("timestamp"), int)


def test_ddata_values_are_the_dictionarys(record: Record) -> None:
    """A DDATA value decodes to the point's engineering value, of the DBIRTH's datatype."""
    birth = record.host.of("DBIRTH", "im-1")[0]
    by_alias = {x["alias"]: x for x in birth.decoded["metrics"]}
    data = record.host.of("DDATA", "im-1")[-1]
    for x in data.decoded["metrics"]:
        b = by_alias[x["alias"]]
        if x.get("is_null"):
            continue
        if b["datatype"] in (9, 10):
            assert isinstance(x["value"], float)
        elif b["datatype"] == 11:
            assert isinstance(x["value"], bool)
        elif b["datatype"] == 12:
            assert isinstance(x["value"], str)


# ---- device death and rebirth ----


def test_ddeath_when_a_device_goes_offline_and_dbirth_when_it_returns(record: Record) -> None:
    """[tck-id-topics-ddeath-topic], [tck-id-operational-behavior-device-ddeath]: DDEATH when the device is lost; a new DBIRTH before its data resumes."""
    deaths = [m for m in record.host.of("DDEATH", "em-1") if m.at > record.marks["offline"]]
    assert deaths
    after = [m for m in record.host.messages if m.at > deaths[0].at and m.device == "em-1"]
    assert after[0].verb == "DBIRTH"


def test_rebirth_answered_with_nbirth_and_dbirths_within_a_second(record: Record) -> None:
    """[tck-id-operational-behavior-data-commands-rebirth-action-1], [...-action-2]: a Rebirth NCMD stops DATA and sends NBIRTH and every DBIRTH; within 1 s."""
    t = record.marks["rebirth"]
    nb = next(m for m in record.host.of("NBIRTH") if m.at > t)
    assert nb.at - t < 1.0
    after = [m for m in record.host.messages if m.at >= nb.at and m.verb in ("DBIRTH", "DDATA")]
    dbirths = [m.device for m in after[:2]]
    assert sorted(dbirths) == ["em-1", "im-1"] and all(m.verb == "DBIRTH" for m in after[:2])


# ---- commands ----


def test_dcmd_writes_an_rw_point_and_garbage_is_ignored(record: Record) -> None:
    """DESIGN 5a: DCMD writes rw points through the gateway's write path (commands: true); a DCMD that is not a payload is logged and ignored, and the node goes on."""
    assert abs(record.sim_values["barrel_setpoint_1"] - 215.5) < 1e-6
    assert (
        record.host.of("DDATA", "im-1")[-1].at > record.marks["kill"]
    )  # publishing went on after a restart anyway
    data = [
        m for m in record.host.of("DDATA", "im-1") if record.marks["rebirth"] < m.at < record.marks["kill"]
    ]
    assert data


def test_ncmd_and_dcmd_subscribed_before_nbirth(record: Record) -> None:
    """[tck-id-message-flow-edge-node-ncmd-subscribe]: the node takes NCMD from its first NBIRTH on (the Rebirth of this module's script was answered)."""
    assert (
        len(
            [m for m in record.host.of("NBIRTH") if record.marks["rebirth"] < m.at < record.marks["retained"]]
        )
        == 1
    )


def test_after_a_crash_queued_data_is_historical(record: Record) -> None:
    """DESIGN 5a: what was queued before a session's births goes after them with is_historical and its original timestamps."""
    restart = next(m for m in record.host.of("NBIRTH") if m.at > record.marks["restart"])
    after = [m for m in record.host.of("DDATA") if m.at > restart.at]
    flagged = [x for m in after for x in m.decoded["metrics"] if x.get("is_historical")]
    live = [x for m in after for x in m.decoded["metrics"] if not x.get("is_historical")]
    assert live, "live data after the restart"
    for x in flagged:
        assert x["timestamp"] < restart.decoded["timestamp"]
    _ = os  # the module's processes are stopped by PID in the fixture


# ---- dictionary: classification and quality ----


def test_core_points_never_leave_the_gateway(record: Record) -> None:
    """DESIGN 5a: max_classification applies: a core point (recipe_code) is in no birth and no data."""
    for m in record.host.of("DBIRTH", "im-1"):
        assert "recipe_code" not in named(m)
        assert "barrel_temp_1" in named(m)


def test_quality_uncertain_is_192_with_detail_and_bad_is_null_with_0(record: Record) -> None:
    """DESIGN 5a: Quality is 192 or 0 (uncertain: 192 plus qualityDetail 'uncertain'); a bad value is is_null with Quality 0."""
    birth = [m for m in record.host.of("DBIRTH", "em-1") if m.at < record.marks["quality"]][-1]
    alias = named(birth)["voltage_l1"]["alias"]
    after = [m for m in record.host.of("DDATA", "em-1") if m.at > record.marks["quality"]]
    mine = [x for m in after for x in m.decoded["metrics"] if x["alias"] == alias]
    uncertain = [x for x in mine if x.get("properties", {}).get("qualityDetail") == (12, "uncertain")]
    assert uncertain and all(
        x["properties"]["Quality"] == (3, 192) and x["value"] == 400.0 for x in uncertain
    )
    bad = [x for x in mine if x.get("is_null")]
    assert bad and all(x["properties"]["Quality"] == (3, 0) and "value" not in x for x in bad)
    assert all(x["properties"]["Quality"][1] in (0, 192) for x in mine if "properties" in x)


def test_a_retained_command_is_ignored(record: Record) -> None:
    """[tck-id-payloads-ncmd-retain] NCMD is never retained: a retained one (left by a faulty host) is answered once, when it is published, and its retained copy, which every re-subscription brings back, is ignored."""
    assert record.marks["retained_births"] == 1


def test_an_orderly_stop_publishes_ndeath(record: Record) -> None:
    """[tck-id-operational-behavior-edge-node-intentional-disconnect-ndeath]: an Edge Node that disconnects on purpose publishes its NDEATH first, with the session's bdSeq."""
    deaths = [m for m in record.host.of("NDEATH") if m.at > record.marks["stop"]]
    assert len(deaths) == 1
    last_birth = record.host.of("NBIRTH")[-1]
    assert named(deaths[0])["bdSeq"]["value"] == named(last_birth)["bdSeq"]["value"] == 1
