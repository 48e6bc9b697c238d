"""InfluxDB sink against a real VictoriaMetrics (InfluxDB v2 write API): the values stored are
the values published on MQTT, with their tags; the classification filter holds; an outage of
the server loses nothing. Line protocol encoding is also checked on its own."""

from __future__ import annotations

import time

from api_plant import ApiPlant
from edgegw.gateway.dictionary import DictionaryEntry
from edgegw.gateway.normalise import Reading, Sample
from edgegw.gateway.sinks.influxdb import DeviceLines, field_kind
from harness import wait_for


def _stored(p: ApiPlant, metric: str, device: str) -> dict[int, float]:
    out: dict[int, float] = {}
    for series in p.vm_export(metric):
        if series["metric"].get("device") == device:
            out.update(zip(series["timestamps"], series["values"], strict=True))
    return out


def _published(p: ApiPlant, device: str, point: str) -> dict[int, float]:
    return {
        m["ts"]: m["points"][point]["v"]
        for m in p.sub.data(device)
        if m["points"].get(point, {}).get("q") == "good"
    }


def test_values_round_trip_through_victoria_metrics(api_plant: ApiPlant) -> None:
    p = api_plant
    metric = "injection-molder_barrel_temp_1"
    wait_for(lambda: len(_stored(p, metric, "im-a")) > 5, 20, "values stored in VictoriaMetrics")
    series = p.vm_export(metric)
    labels = next(s["metric"] for s in series if s["metric"]["device"] == "im-a")
    assert labels == {
        "__name__": metric,
        "gateway": "gw-api",
        "device": "im-a",
        "quality": "good",
        "site": "jinan",
        "line": "line-1",
    }
    # every value published on MQTT more than 2 s ago is stored, at the same timestamp, equal
    stored = _stored(p, metric, "im-a")
    cutoff = time.time() * 1000 - 2000
    published = {
        ts: v for ts, v in _published(p, "im-a", "barrel_temp_1").items() if min(stored) <= ts < cutoff
    }
    assert len(published) > 5
    missing = [ts for ts in published if ts not in stored]
    assert not missing, f"{len(missing)} of {len(published)} published values not in InfluxDB"
    assert all(stored[ts] == v for ts, v in published.items())
    # other devices and types: the meter's float32 voltage, the moulder's bool and counter
    assert len(_stored(p, "energy-meter-3ph_voltage_l1", "em-c")) > 2
    assert set(_stored(p, "injection-molder_heater_on", "im-a").values()) <= {0.0, 1.0}
    assert len(_stored(p, "injection-molder_shot_count", "im-a")) > 2
    # `core` data (recipe_code) stays in the gateway: max_classification is `important`
    assert p.vm_export("injection-molder_recipe_code") == []


def test_influxdb_outage_loses_nothing(api_plant: ApiPlant) -> None:
    p = api_plant
    metric = "energy-meter-3ph_voltage_l1"
    wait_for(lambda: len(_stored(p, metric, "em-c")) > 2, 20, "values stored before the outage")
    down_from, down_to = p.restart_vm(down=4.0)
    wait_for(
        lambda: any(ts > down_to * 1000 + 1000 for ts in _stored(p, metric, "em-c")),
        30,
        "writes resuming after the outage",
    )
    stored = _stored(p, metric, "em-c")
    during = [ts for ts in _published(p, "em-c", "voltage_l1") if down_from * 1000 <= ts <= down_to * 1000]
    assert len(during) >= 4, "the meter kept publishing during the outage"
    missing = [ts for ts in during if ts not in stored]
    assert not missing, f"{len(missing)} of {len(during)} values from the outage never reached InfluxDB"
    metrics = p.get("/metrics").text
    errors = next(
        float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith("edgegw_influxdb_write_errors_total")
    )
    assert errors > 0
    assert "cannot write to InfluxDB; batches wait on disk, retrying" in p.gw.output()
    assert "influx-secret-token" not in p.gw.output()


def test_line_protocol_encoding() -> None:
    entries = [
        DictionaryEntry(id="temp", type="int16", scale=0.1),
        DictionaryEntry(id="count", type="uint32"),
        DictionaryEntry(id="big", type="uint64"),
        DictionaryEntry(id="on", type="bool"),
        DictionaryEntry(id="label", type="string"),
        DictionaryEntry(id="secret", type="float32", classification="core"),
    ]
    assert [field_kind(e) for e in entries] == ["float", "int", "float", "bool", "string", "float"]
    lines = DeviceLines(
        "injection molder",
        {"gateway": "gw 1", "device": "im,01", "site": "a=b", "area": ""},
        entries,
        "important",
    )
    sample = Sample(
        "im,01",
        1795258863272,
        [
            Reading("temp", 215.0, "good"),
            Reading("count", 7, "good"),
            Reading("big", 2**64 - 1, "good"),
            Reading("on", True, "uncertain", "outside range"),
            Reading("label", 'say "hi"\\', "good"),
            Reading("secret", 1.5, "good"),
            Reading("count", None, "bad", "timeout"),
        ],
    )
    assert lines.lines(sample) == [
        r"injection\ molder,device=im\,01,gateway=gw\ 1,site=a\=b,quality=good "
        r'temp=215.0,count=7i,big=1.8446744073709552e+19,label="say \"hi\"\\" 1795258863272',
        r"injection\ molder,device=im\,01,gateway=gw\ 1,site=a\=b,quality=uncertain on=true 1795258863272",
    ]
