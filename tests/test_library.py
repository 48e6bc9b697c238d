"""The device model library: every file in configs/models/ validates, configs/library.yaml uses
every model, and each model runs end to end for a few seconds: `edgegw simulate` serves it
(Modbus TCP, Modbus RTU on pseudo-terminals, OPC UA, serial lines), the gateway polls it and
publishes to Mosquitto, and every point of every model that may leave the gateway arrives `good`."""

import json
import re
from pathlib import Path

import yaml
from edgegw.gateway.config import load_config
from harness import EDGEGW, Proc, Subscriber, free_port, start_mosquitto, wait_for

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "configs" / "models"
LIBRARY = ROOT / "configs" / "library.yaml"


def test_every_model_file_validates_and_says_where_its_map_comes_from():
    for path in sorted(MODELS.glob("*.yaml")):
        text = path.read_text()
        header = "".join(line for line in text.splitlines(keepends=True) if line.startswith("#"))
        # each file cites its source or says plainly that its map is illustrative
        assert re.search(r"(?i)source:|manual|illustrative|no register map", header), path.name
        doc = yaml.safe_load(text)
        assert set(doc) == {"models"}, path.name
    loaded = load_config(LIBRARY)
    used = {loaded.config.devices[r.index].model for r in loaded.devices}
    defined = set()
    for path in MODELS.glob("*.yaml"):
        defined |= set(yaml.safe_load(path.read_text())["models"])
    assert used == defined, f"models without a device in library.yaml: {defined - used}"


def _retarget(tmp: Path, mqtt_port: int) -> Path:
    """library.yaml with its own ports, folders and broker, for one test run."""
    text = LIBRARY.read_text()
    text = text.replace("include: models/*.yaml", f"include: {MODELS}/*.yaml")
    text = text.replace("../var/library", str(tmp / "lib"))
    text = text.replace("port: 1883", f"port: {mqtt_port}")
    for port in sorted(set(re.findall(r"(?:port: |127\.0\.0\.1:)(1[45]\d{3})\b", text))):
        text = re.sub(rf"\b{port}\b", str(free_port()), text)
    out = tmp / "library.yaml"
    out.write_text(text)
    return out


def test_every_model_simulates_end_to_end(tmp_path: Path):
    mqtt_port = free_port()
    broker = start_mosquitto(tmp_path, mqtt_port)
    cfg = _retarget(tmp_path, mqtt_port)
    loaded = load_config(cfg)
    # `core` points never leave the gateway (northbound.mqtt.max_classification: important)
    expected = {
        loaded.config.devices[r.index].id: {e.id for e in r.points if e.classification != "core"}
        for r in loaded.devices
    }
    sub = Subscriber(mqtt_port, "edgegw/gw-library/+/data")
    sim = Proc([*EDGEGW, "simulate", "-c", str(cfg)], tmp_path / "sim.log")
    gw = None
    try:
        wait_for(lambda: (tmp_path / "lib" / "tty" / "scanner-01").exists(), 30, "simulated serial ports")
        gw = Proc([*EDGEGW, "run", "-c", str(cfg)], tmp_path / "gw.log")
        good: dict[str, set[str]] = {d: set() for d in expected}

        def all_good() -> bool:
            with sub.lock:
                msgs = list(sub.messages)
            for topic, payload, _ in msgs:
                device = topic.split("/")[-2]
                for pid, p in json.loads(payload)["points"].items():
                    if p["q"] == "good":
                        good[device].add(pid)
            return all(good[d] >= expected[d] for d in expected)

        try:
            wait_for(all_good, 45, "every point of every model good")
        except AssertionError:
            missing = {d: sorted(expected[d] - good[d]) for d in expected if expected[d] - good[d]}
            raise AssertionError(f"points never good: {missing}\n{gw.output()[-3000:]}") from None
    finally:
        if gw is not None:
            gw.stop()
        sim.stop()
        sub.stop()
        broker.kill()
