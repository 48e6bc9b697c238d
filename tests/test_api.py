"""The local HTTP API over real HTTP against a running gateway with simulators: every route,
write-back reaching the simulator's registers, the rejections, MQTT `set`, and /metrics."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

import httpx
import paho.mqtt.publish as mqtt_publish
from api_plant import PREFIX, TOKEN, TOPIC, ApiPlant
from harness import wait_for
from prometheus_client.parser import text_string_to_metric_families

SETPOINT = "/api/v1/devices/im-a/points/barrel_setpoint_1"


def test_health_readiness_and_openapi(api_plant: ApiPlant) -> None:
    p = api_plant
    r = p.get("/healthz")
    assert r.status_code == 200 and r.json()["status"] == "ok"
    wait_for(lambda: p.get("/readyz").status_code == 200, 10, "readiness")
    assert p.get("/readyz").json() == {"ready": True}
    # the route overview is served by the gateway itself: no script, nothing from the internet
    docs = p.get("/docs")
    assert docs.status_code == 200 and "/api/v1/devices/{device}/points/{point}" in docs.text
    assert "<script" not in docs.text and "https://" not in docs.text and "http://" not in docs.text
    assert p.get("/redoc").status_code == 404
    paths = p.get("/openapi.json").json()["paths"]
    for path in (
        "/healthz",
        "/readyz",
        "/metrics",
        "/api/v1/devices",
        "/api/v1/devices/{device}",
        "/api/v1/devices/{device}/points",
        "/api/v1/devices/{device}/points/{point}",
        "/api/v1/identifiers",
        "/api/v1/identifiers/{handle}",
    ):
        assert path in paths, path
    assert "put" in paths["/api/v1/devices/{device}/points/{point}"]


def test_devices_status_and_points(api_plant: ApiPlant) -> None:
    p = api_plant
    devices = {d["id"]: d for d in p.get("/api/v1/devices").json()}
    assert set(devices) == {"im-a", "em-c"}
    assert devices["im-a"]["state"] == "online" and devices["im-a"]["protocol"] == "modbus-tcp"
    one = p.get("/api/v1/devices/em-c").json()
    assert one["model"] == "energy-meter-3ph"
    assert one["counters"]["polls"] > 0 and one["counters"]["requests"] >= one["counters"]["polls"]
    assert one["counters"]["request_latency"]["count"] > 0
    pts = p.get("/api/v1/devices/im-a/points").json()
    assert pts["device"] == "im-a" and pts["ts"] > 1.6e12
    temp = pts["points"]["barrel_temp_1"]
    assert temp["q"] == "good" and isinstance(temp["v"], float)
    assert temp["unit"] == "CEL" and temp["symbol"] == "°C" and temp["name"]["zh"] == "料筒温度1区"
    # a device that stops answering: its state and last error show it, the other is untouched
    p.fault("em-c", "silent")
    try:
        wait_for(lambda: p.get("/api/v1/devices/em-c").json()["state"] == "offline", 15, "em-c offline")
        em = p.get("/api/v1/devices/em-c").json()
        assert "no response" in em["last_error"] and em["reason"]
        bad = p.get("/api/v1/devices/em-c/points").json()["points"]["voltage_l1"]
        assert bad["q"] == "bad" and bad["v"] is None and bad["reason"]
        assert p.get("/api/v1/devices/im-a").json()["state"] == "online"
    finally:
        p.fault("em-c", None)
    wait_for(lambda: p.get("/api/v1/devices/em-c").json()["state"] == "online", 15, "em-c back online")
    r = p.get("/api/v1/devices/nope")
    assert r.status_code == 404 and r.json() == {
        "status": 404,
        "error": "no device 'nope' in the configuration",
    }
    assert p.get("/api/v1/devices/nope/points").status_code == 404


def test_write_reaches_the_simulators_register(api_plant: ApiPlant) -> None:
    p = api_plant
    r = p.put(SETPOINT, {"value": 231.4})
    assert r.status_code == 200, r.text
    assert r.json() == {"ok": True, "device": "im-a", "point": "barrel_setpoint_1", "value": 231.4}
    # the simulator decodes its holding register hr:150 (int16, scale 0.1)
    assert abs(p.sim_values("im-a")["barrel_setpoint_1"] - 231.4) < 1e-6
    # the gateway reads it back on its next polls: API and MQTT agree
    wait_for(
        lambda: p.get("/api/v1/devices/im-a/points").json()["points"]["barrel_setpoint_1"]["v"] == 231.4,
        5,
        "the written value read back",
    )
    wait_for(
        lambda: any(m["points"].get("barrel_setpoint_1", {}).get("v") == 231.4 for m in p.sub.data("im-a")),
        5,
        "the written value on MQTT",
    )
    # an integer register takes the nearest value its scale can hold; the answer says which
    r = p.put(SETPOINT, {"value": 200.04})
    assert r.status_code == 200 and r.json()["value"] == 200.0
    assert abs(p.sim_values("im-a")["barrel_setpoint_1"] - 200.0) < 1e-6
    out = p.gw.output()
    assert "msg=write device=im-a point=barrel_setpoint_1 value=231.4 by=token@127.0.0.1 via=http" in out
    assert TOKEN not in out


def test_writes_refused_before_the_device(api_plant: ApiPlant) -> None:
    p = api_plant
    assert p.put(SETPOINT, {"value": 210.0}).status_code == 200
    cases = [
        ("/api/v1/devices/im-a/points/barrel_temp_1", {"value": 200}, TOKEN, 409, "read-only"),
        (SETPOINT, {"value": 401}, TOKEN, 422, "outside the point's range [0, 400]"),
        (SETPOINT, {"value": "hot"}, TOKEN, 422, "send a number"),
        (SETPOINT, {"value": True}, TOKEN, 422, "send a number"),
        (SETPOINT, {}, TOKEN, 422, "value"),
        (SETPOINT, {"value": 200}, None, 401, "Bearer token is required"),
        (SETPOINT, {"value": 200}, "wrong", 403, "not valid"),
        ("/api/v1/devices/im-a/points/nope", {"value": 1}, TOKEN, 404, "no point 'nope'"),
        ("/api/v1/devices/zz/points/barrel_setpoint_1", {"value": 1}, TOKEN, 404, "no device 'zz'"),
    ]
    for path, body, token, status, reason in cases:
        r = p.put(path, body, token)
        assert r.status_code == status, (path, body, r.text)
        assert r.json()["status"] == status and reason in r.json()["error"], r.text
        if status == 401:
            assert r.headers["www-authenticate"] == "Bearer"
    # nothing reached the device
    assert abs(p.sim_values("im-a")["barrel_setpoint_1"] - 210.0) < 1e-6


def test_write_answers_with_the_devices_outcome(api_plant: ApiPlant) -> None:
    p = api_plant
    p.fault("im-a", "exception", code=2)
    try:
        r = p.put(SETPOINT, {"value": 150})
        assert r.status_code == 502 and "modbus exception 2 (illegal data address)" in r.json()["error"]
    finally:
        p.fault("im-a", None)
    p.fault("im-a", "silent")
    try:
        t0 = time.monotonic()
        r = p.put(SETPOINT, {"value": 150})
        assert r.status_code == 504 and "did not answer" in r.json()["error"], r.text
        assert time.monotonic() - t0 < 5
    finally:
        p.fault("im-a", None)
    wait_for(lambda: p.put(SETPOINT, {"value": 150}).status_code == 200, 10, "writes working again")
    wait_for(lambda: p.get("/api/v1/devices/im-a").json()["state"] == "online", 15, "im-a polled again")
    counters = p.get("/api/v1/devices/im-a").json()["counters"]
    assert counters["failed_writes"] >= 2 and counters["writes"] > counters["failed_writes"]


def test_mqtt_set_command(api_plant: ApiPlant) -> None:
    p = api_plant

    def result(req_id: str) -> dict[str, Any] | None:
        return next((m for m in p.sub.json("/im-a/set/result") if m.get("id") == req_id), None)

    topic = f"{TOPIC}/im-a/set"
    mqtt_publish.single(
        topic, json.dumps({"id": "r1", "points": {"barrel_setpoint_1": 245.5}}), qos=1, port=p.mqtt_port
    )
    assert wait_for(lambda: result("r1"), 10, "set/result r1") == {"id": "r1", "ok": True}
    assert abs(p.sim_values("im-a")["barrel_setpoint_1"] - 245.5) < 1e-6
    mqtt_publish.single(
        topic,
        json.dumps({"id": "r2", "points": {"barrel_setpoint_1": 500, "mold_temp": 20}}),
        qos=1,
        port=p.mqtt_port,
    )
    r2 = wait_for(lambda: result("r2"), 10, "set/result r2")
    assert r2["ok"] is False
    assert (
        "outside the point's range" in r2["error"]
        and "mold_temp" in r2["error"]
        and "read-only" in r2["error"]
    )
    mqtt_publish.single(topic, b"not json", qos=1, port=p.mqtt_port)
    bad = wait_for(
        lambda: [m for m in p.sub.json("/im-a/set/result") if m.get("id") is None], 10, "bad request"
    )
    assert bad[0]["ok"] is False and "bad request" in bad[0]["error"]
    assert abs(p.sim_values("im-a")["barrel_setpoint_1"] - 245.5) < 1e-6
    assert "via=mqtt" in p.gw.output()


def _families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_metrics(api_plant: ApiPlant) -> None:
    p = api_plant
    r = p.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    fam = _families(r.text)

    def value(name: str, **labels: str) -> float:
        for s in fam[name].samples:
            wanted = s.name.endswith(("_total", "_count")) or s.name == name
            if wanted and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
        raise AssertionError(f"{name} {labels} not exported")

    assert value("edgegw_device_polls", device="im-a", protocol="modbus-tcp") > 5
    assert value("edgegw_device_up", device="im-a") == 1.0
    assert value("edgegw_device_poll_errors", device="em-c") >= 0
    assert value("edgegw_device_requests", device="im-a") > 5
    assert fam["edgegw_request_duration_seconds"].type == "histogram"
    assert value("edgegw_request_duration_seconds", protocol="modbus-tcp") > 5
    assert value("edgegw_poll_duration_seconds", protocol="modbus-tcp") > 5
    assert value("edgegw_samples") > 5 and value("edgegw_point_values") > value("edgegw_samples")
    for stream in ("mqtt", "identifier", "influxdb"):
        assert value("edgegw_queue_messages", stream=stream) >= 0
    assert value("edgegw_mqtt_connected") == 1.0
    assert value("edgegw_mqtt_acked") > 5
    assert value("edgegw_mqtt_publish_latency_seconds") > 5
    assert value("edgegw_mqtt_sample_latency_seconds") > 5  # poll end -> broker acknowledgement
    fam_lat = fam["edgegw_mqtt_sample_latency_seconds"]
    buckets = {s.labels["le"]: s.value for s in fam_lat.samples if s.name.endswith("_bucket")}
    assert buckets["+Inf"] > buckets["0.0005"]  # real durations, not all zero
    assert value("edgegw_influxdb_lines_written") > 0
    assert value("process_cpu_seconds") > 0
    assert value("process_resident_memory_bytes") > 10e6
    # counters move between scrapes
    before = value("edgegw_samples")
    time.sleep(0.6)
    fam = _families(p.get("/metrics").text)
    assert value("edgegw_samples") > before


def test_identifier_routes(api_plant: ApiPlant) -> None:
    p = api_plant
    serial = f"API-{int(time.time() * 1000) % 10**9}"
    p.hold("im-a", "product_serial", serial)
    handle = f"{PREFIX}/{serial}"
    wait_for(
        lambda: any(i["handle"] == handle for i in p.get("/api/v1/identifiers?state=registered").json()),
        15,
        "the registration listed",
    )
    listed = next(i for i in p.get("/api/v1/identifiers").json() if i["handle"] == handle)
    assert listed["state"] == "registered" and listed["ts"] > 1.6e12
    assert all(i["state"] == "failed" for i in p.get("/api/v1/identifiers?state=failed").json())
    record = p.get(f"/api/v1/identifiers/{handle}").json()
    assert record["handle"] == handle and record["templateVersion"] == "1.0"
    values = {v["index"]: v["value"] for v in record["values"]}
    assert values[2000] == serial and values[2001] == "IM-200"
    r = p.get(f"/api/v1/identifiers/{PREFIX}/NEVER-REGISTERED")
    assert r.status_code == 404 and "does not exist" in r.json()["error"]
    r = p.get("/api/v1/identifiers/not an identifier")
    assert r.status_code == 422 and "handle" in r.json()["error"]
    r = p.get(f"/api/v1/identifiers/{PREFIX}/.starts-with-a-dot")
    assert r.status_code == 422 and "is not an identifier" in r.json()["error"]
    assert p.get("/api/v1/identifiers?state=bogus").status_code == 422


def test_status_route_and_event_stream(api_plant: ApiPlant) -> None:
    p = api_plant
    s = p.get("/api/v1/status").json()
    assert s["gateway"] == "gw-api" and s["mqtt"]["connected"] is True and s["influxdb"]["healthy"] is True
    assert s["devices"] == {"configured": 2, "online": 2}
    assert set(s["queues"]) >= {"mqtt", "identifier", "influxdb", "dropped"}
    snapshots = []
    with httpx.stream("GET", p.base + "/api/v1/events", timeout=10) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: "):
                snapshots.append(json.loads(line[6:]))
                if len(snapshots) == 2:
                    break
    a, b = snapshots
    assert {d["id"] for d in a["devices"]} == {"im-a", "em-c"}
    assert b["summary"]["samples"] > a["summary"]["samples"]


def test_read_token_and_token_rotation_by_reload(api_plant: ApiPlant) -> None:
    p = api_plant
    p.reload("  read_requires_token: true\n")
    try:
        assert p.get("/api/v1/devices").status_code == 401
        assert p.get("/metrics").status_code == 401
        auth = {"Authorization": f"Bearer {TOKEN}"}
        assert p.get("/api/v1/devices", headers=auth).status_code == 200
        # the token is never taken from a URL (it would end up in logs and browser history)
        r = p.get("/api/v1/status", params={"access_token": TOKEN})
        assert r.status_code == 401 and "not accepted" in r.json()["error"]
        assert p.get("/healthz").status_code == 200  # liveness stays open for supervisors
    finally:
        p.reload()
    assert p.get("/api/v1/devices").status_code == 200
    assert p.get("/api/v1/devices/im-a").json()["state"] == "online"  # the reload left the device polling


def test_openapi_fuzzing_finds_no_server_error(api_plant: ApiPlant) -> None:
    """schemathesis generates requests from the OpenAPI spec (valid and invalid, with the
    token, so writes reach the simulated device) and fails on any 5xx except the device's own
    answers that the spec documents (502/504)."""
    p = api_plant
    config = p.tmp / "schemathesis.toml"
    # known ids, so that generated requests get past the 404s and reach the checks and the device
    config.write_text('[parameters]\n"path.device" = "im-a"\n"path.point" = "barrel_setpoint_1"\n')
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "--config-file",
            str(config),
            "run",
            f"{p.base}/openapi.json",
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance",
            "--exclude-path",
            "/api/v1/events",
            "--max-examples",
            "6",
            "--seed",
            "7",
            "-H",
            f"Authorization: Bearer {TOKEN}",
            "--request-timeout",
            "10",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    print(out.stdout[-3000:])
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]
