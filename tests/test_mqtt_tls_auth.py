"""The MQTT sink over TLS with username/password, against a real Mosquitto that requires both.

Certificates are made for the test with openssl (a throwaway CA and a server certificate for
127.0.0.1); the password file with mosquitto_passwd. The password comes from ${ENV} and must
never appear in the gateway's log.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from harness import EDGEGW, ROOT, Proc, Subscriber, free_port, mosquitto_binary, wait_for, wait_port

pytestmark = pytest.mark.skipif(
    not (shutil.which("openssl") and shutil.which("mosquitto_passwd")),
    reason="needs openssl and mosquitto-clients",
)
SECRET = "s3cret-Line-1"
# mosquitto started as root drops to its own user, which cannot read the test's private tmp dir
KEEP_USER = "user root\n" if os.geteuid() == 0 else ""


def meter_config(tmp: Path, gateway_id: str, sim_port: int, northbound: str) -> Path:
    """One simulated energy meter polled every 200 ms, and the given northbound section."""
    cfg = tmp / "gw.yaml"
    cfg.write_text(
        f"include: {ROOT}/configs/models/*.yaml\n"
        f"gateway: {{id: {gateway_id}, data_dir: {tmp}/data}}\n"
        "devices:\n"
        f"  - {{id: em-1, model: energy-meter-3ph, protocol: modbus-tcp, "
        f"connection: {{host: 127.0.0.1, port: {sim_port}}}, poll: {{interval: 200ms}}}}\n"
        "northbound:\n" + northbound.lstrip("\n")
    )
    return cfg


def make_certs(d: Path) -> None:
    def run(*args: str) -> None:
        subprocess.run(args, cwd=d, check=True, capture_output=True)

    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=edgegw test CA",
        "-keyout", "ca.key", "-out", "ca.pem")  # fmt: skip
    run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
        "-keyout", "server.key", "-out", "server.csr")  # fmt: skip
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    run("openssl", "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-days", "2", "-extfile", "san.ext", "-out", "server.pem")  # fmt: skip


def test_publishes_over_tls_with_password_and_keeps_it_out_of_logs(tmp_path: Path) -> None:
    make_certs(tmp_path)
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(tmp_path / "passwd"), "gw", SECRET], check=True)
    tls_port, plain_port = free_port(), free_port()
    (tmp_path / "mosquitto.conf").write_text(
        f"{KEEP_USER}per_listener_settings true\n"
        f"listener {tls_port} 127.0.0.1\ncafile {tmp_path}/ca.pem\ncertfile {tmp_path}/server.pem\n"
        f"keyfile {tmp_path}/server.key\nallow_anonymous false\npassword_file {tmp_path}/passwd\n"
        f"listener {plain_port} 127.0.0.1\nallow_anonymous true\n"
    )
    broker = Proc([mosquitto_binary(), "-c", str(tmp_path / "mosquitto.conf")], tmp_path / "mosquitto.log")
    sim = gw = None
    try:
        wait_port(tls_port)
        wait_port(plain_port)
        sim_port = free_port()
        cfg = meter_config(
            tmp_path,
            "gw-tls",
            sim_port,
            f"""
  mqtt:
    host: 127.0.0.1
    port: {tls_port}
    tls: {{ca: ca.pem}}
    username: gw
    password: ${{MQTT_PASSWORD}}
""",
        )
        sim = Proc([*EDGEGW, "simulate", "-c", str(cfg)], tmp_path / "sim.log", env={"MQTT_PASSWORD": "x"})
        wait_port(sim_port, 15)
        sub = Subscriber(plain_port, "edgegw/gw-tls/#")
        gw = Proc([*EDGEGW, "run", "-c", str(cfg)], tmp_path / "gw.log", env={"MQTT_PASSWORD": SECRET})
        wait_for(lambda: len(sub.data("em-1")) >= 3, 20, "data over TLS")
        assert sub.json("/gw-tls/status")[-1]["state"] == "online"
        sub.stop()
        assert gw.stop() == 0
        log = gw.output()
        assert "connected to broker" in log
        assert SECRET not in log
    finally:
        for p in (gw, sim, broker):
            if p is not None:
                p.kill()


def test_wrong_password_is_reported_and_data_stays_queued(tmp_path: Path) -> None:
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(tmp_path / "passwd"), "gw", SECRET], check=True)
    port = free_port()
    (tmp_path / "mosquitto.conf").write_text(
        f"{KEEP_USER}listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {tmp_path}/passwd\n"
    )
    broker = Proc([mosquitto_binary(), "-c", str(tmp_path / "mosquitto.conf")], tmp_path / "mosquitto.log")
    sim = gw = None
    try:
        wait_port(port)
        sim_port = free_port()
        cfg = meter_config(
            tmp_path,
            "gw-auth",
            sim_port,
            f'  mqtt: {{host: 127.0.0.1, port: {port}, username: gw, password: "${{MQTT_PASSWORD}}"}}\n',
        )
        sim = Proc([*EDGEGW, "simulate", "-c", str(cfg)], tmp_path / "sim.log", env={"MQTT_PASSWORD": "x"})
        wait_port(sim_port, 15)
        gw = Proc(
            [*EDGEGW, "run", "-c", str(cfg)], tmp_path / "gw.log", env={"MQTT_PASSWORD": "wrong-password"}
        )
        wait_for(lambda: "broker refused the connection" in gw.output(), 15, "refusal logged")
        # the first poll comes up to a second after start (polls are spread over the interval)
        wait_for(lambda: "device online" in gw.output(), 15, "a first poll, queued")
        assert gw.stop() == 0
        assert "wrong-password" not in gw.output()
        assert "messages kept in the queue for the next start" in gw.output()
    finally:
        for p in (gw, sim, broker):
            if p is not None:
                p.kill()
