"""`edgegw doctor` against real components: a Mosquitto with a password file, a Modbus TCP
simulator, the secondary-node simulator, a pseudo-terminal; and the failures it must explain."""

import os
import pty
import subprocess
import sys
from pathlib import Path

from harness import EDGEGW, Proc, free_port, mosquitto_binary, wait_port

ROOT = Path(__file__).resolve().parent.parent
KEEP_USER = "user root\n" if os.geteuid() == 0 else ""


def doctor(cfg: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgegw.gateway.cli", "doctor", "-c", str(cfg), "--timeout", "2"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def line_of(out: str, check: str) -> str:
    lines = out.splitlines()
    for i, line in enumerate(lines):
        if line[6:].startswith(check):
            fix = lines[i + 1] if i + 1 < len(lines) and lines[i + 1].startswith("      fix:") else ""
            return line + "\n" + fix
    raise AssertionError(f"no {check!r} line in:\n{out}")


def test_doctor_passes_a_healthy_deployment_and_explains_each_failure(tmp_path: Path):
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(tmp_path / "passwd"), "gw", "s3cret"], check=True)
    mqtt_port, sim_port, node_port, closed_port, api_port = (free_port() for _ in range(5))
    (tmp_path / "mosquitto.conf").write_text(
        f"{KEEP_USER}listener {mqtt_port} 127.0.0.1\nallow_anonymous false\npassword_file {tmp_path}/passwd\n"
    )
    broker = Proc([mosquitto_binary(), "-c", str(tmp_path / "mosquitto.conf")], tmp_path / "mosquitto.log")
    master, slave = pty.openpty()
    tty = os.ttyname(slave)
    cfg = tmp_path / "site.yaml"
    cfg.write_text(
        f"""include: {ROOT}/configs/models/*.yaml
gateway: {{id: gw-doc, data_dir: {tmp_path}/data}}
devices:
  - {{id: em-ok, model: energy-meter-3ph, protocol: modbus-tcp, connection: {{host: 127.0.0.1, port: {sim_port}}}}}
  - {{id: em-gone, model: energy-meter-3ph, protocol: modbus-tcp, connection: {{host: 127.0.0.1, port: {closed_port}}}}}
  - {{id: vfd-ok, model: delta-vfd-el, protocol: modbus-rtu, connection: {{port: {tty}, unit_id: 1}}}}
  - {{id: vfd-unplugged, model: delta-vfd-el, protocol: modbus-rtu, connection: {{port: {tmp_path}/ttyUSB9, unit_id: 1}}}}
northbound:
  mqtt: {{host: 127.0.0.1, port: {mqtt_port}, username: gw, password: "${{MQTT_PASSWORD}}"}}
identifier:
  node: {{kind: snms, url: "http://127.0.0.1:{node_port}", username: ops, password: "${{NODE_PASSWORD}}", prefix: 88.118.8}}
api: {{listen: "127.0.0.1:{api_port}"}}
"""
    )
    sim_cfg = tmp_path / "sim.yaml"
    sim_cfg.write_text(
        f"""include: {ROOT}/configs/models/*.yaml
gateway: {{id: gw-sim, data_dir: {tmp_path}/sim}}
devices:
  - {{id: em-ok, model: energy-meter-3ph, protocol: modbus-tcp, connection: {{host: 127.0.0.1, port: {sim_port}}}}}
"""
    )
    sim = Proc([*EDGEGW, "simulate", "-c", str(sim_cfg)], tmp_path / "sim.log")
    node = Proc(
        [
            *EDGEGW,
            "simulate",
            "--idnode",
            "--port",
            str(node_port),
            "--user",
            "ops:pw",
            "--prefix",
            "88.118.8",
        ],
        tmp_path / "node.log",
    )
    try:
        wait_port(mqtt_port)
        wait_port(sim_port, 30)
        wait_port(node_port, 30)
        good = doctor(cfg, {"MQTT_PASSWORD": "s3cret", "NODE_PASSWORD": "pw"})
        out = good.stdout
        assert good.returncode == 1, out  # two devices are meant to fail
        assert line_of(out, "config").startswith("ok"), out
        assert "4 devices" in line_of(out, "config")
        assert line_of(out, "device em-ok").startswith("ok")
        em_gone = line_of(out, "device em-gone")
        assert em_gone.startswith("FAIL") and f"127.0.0.1:{closed_port}" in em_gone and "fix:" in em_gone
        assert line_of(out, "device vfd-ok").startswith("ok")
        unplugged = line_of(out, "device vfd-unplugged")
        assert (
            unplugged.startswith("FAIL")
            and "no such device" in unplugged
            and "/dev/serial/by-id" in unplugged
        )
        assert line_of(out, "broker").startswith("ok") and "as gw" in line_of(out, "broker")
        assert line_of(out, "identifier node").startswith("ok"), out
        assert line_of(out, "disk").startswith(("ok", "warn"))
        assert line_of(out, "api port").startswith("ok")
        assert line_of(out, "clock").split()[0] in ("ok", "warn")
        assert "s3cret" not in out and "s3cret" not in good.stderr

        bad = doctor(cfg, {"MQTT_PASSWORD": "Wr0ngPa55", "NODE_PASSWORD": "Wr0ngPa55"})
        broker_line = line_of(bad.stdout, "broker")
        assert broker_line.startswith("FAIL") and "refused" in broker_line and "MQTT_PASSWORD" in broker_line
        node_line = line_of(bad.stdout, "identifier node")
        assert node_line.startswith("FAIL") and "login refused" in node_line, bad.stdout
        assert "Wr0ngPa55" not in bad.stdout

        broker.kill()
        gone = doctor(cfg, {"MQTT_PASSWORD": "s3cret", "NODE_PASSWORD": "pw"})
        assert line_of(gone.stdout, "broker").startswith("FAIL")
        assert "Connection refused" in line_of(gone.stdout, "broker")
    finally:
        sim.stop()
        node.stop()
        broker.kill()
        os.close(master)
        os.close(slave)


def test_doctor_reports_every_config_error_and_exits_2(tmp_path: Path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(
        "gateway: {id: gw}\ndevices:\n  - {id: x, protocol: modbus-tcp, connection: {port: 502}}\n"
    )
    r = doctor(cfg)
    assert r.returncode == 2
    assert f"{cfg}:3: devices[0]" in r.stdout
    assert r.stdout.splitlines()[-2].startswith("FAIL  config")
    assert "Traceback" not in r.stdout + r.stderr
