"""The HTTP API over TLS with the token from the environment, and the API's start-up errors:
a config that would open the API to the network without a token, and a port already taken."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import sys

import httpx
import pytest
from harness import EDGEGW, ROOT, Proc, free_port, wait_for, wait_port
from test_mqtt_tls_auth import make_certs

TOKEN = "tls-t0ken-from-env"


def _config(tmp, sim_port: int, api: str):  # type: ignore[no-untyped-def]
    cfg = tmp / "gw.yaml"
    cfg.write_text(
        f"include: {ROOT}/configs/models/*.yaml\n"
        f"gateway: {{id: gw-tls, data_dir: {tmp}/data}}\n"
        "devices:\n"
        f"  - {{id: em-1, model: energy-meter-3ph, protocol: modbus-tcp, "
        f"connection: {{host: 127.0.0.1, port: {sim_port}}}, poll: {{interval: 200ms}}}}\n" + api
    )
    return cfg


@pytest.mark.skipif(not shutil.which("openssl"), reason="needs openssl")
def test_api_over_tls_with_token_from_env(tmp_path) -> None:  # type: ignore[no-untyped-def]
    make_certs(tmp_path)
    sim_port, api_port = free_port(), free_port()
    cfg = _config(
        tmp_path,
        sim_port,
        f"api: {{listen: '127.0.0.1:{api_port}', token: '${{API_TOKEN}}', read_requires_token: true,\n"
        f"      tls: {{cert: {tmp_path}/server.pem, key: {tmp_path}/server.key}}}}\n",
    )
    sim = Proc([*EDGEGW, "simulate", "-c", str(cfg)], tmp_path / "sim.log", env={"API_TOKEN": TOKEN})
    wait_port(sim_port, 20)
    gw = Proc([*EDGEGW, "run", "-c", str(cfg)], tmp_path / "gw.log", env={"API_TOKEN": TOKEN})
    try:
        wait_port(api_port, 20)
        base = f"https://127.0.0.1:{api_port}"
        auth = {"Authorization": f"Bearer {TOKEN}"}
        ca = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
        wait_for(
            lambda: (
                httpx.get(f"{base}/api/v1/devices/em-1", headers=auth, verify=ca).json()["state"] == "online"
            ),
            15,
            "the meter online over HTTPS",
        )
        assert httpx.get(f"{base}/api/v1/devices", verify=ca).status_code == 401
        with pytest.raises(httpx.ConnectError):  # a client that does not trust the CA
            httpx.get(f"{base}/healthz")
        with pytest.raises(httpx.HTTPError):  # plain HTTP on the TLS port
            httpx.get(f"http://127.0.0.1:{api_port}/healthz", timeout=3)
        assert "url=https://127.0.0.1" in gw.output()
    finally:
        gw.stop()
        sim.stop()
    assert TOKEN not in gw.output()


def test_api_off_loopback_needs_a_token(tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg = _config(tmp_path, 1502, "api:\n  listen: 0.0.0.0:8080\n")
    out = subprocess.run([*EDGEGW, "validate", "-c", str(cfg)], capture_output=True, text=True)
    assert out.returncode == 2
    assert f"{cfg}:5: api: listening on 0.0.0.0 (not loopback) needs api.token" in out.stderr
    assert "Traceback" not in out.stderr


def test_api_port_taken_is_a_clear_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg = _config(tmp_path, free_port(), f"api: {{listen: '127.0.0.1:{port}'}}\n")
        out = subprocess.run(
            [sys.executable, "-m", "edgegw.gateway.cli", "run", "-c", str(cfg)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert out.returncode == 1
    assert f"the HTTP API cannot listen on 127.0.0.1:{port}" in out.stdout + out.stderr
    assert "Traceback" not in out.stdout + out.stderr
