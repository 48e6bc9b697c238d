"""Deployment files: install/uninstall scripts (dry-run actions asserted, uninstall really run on
a staged tree), the systemd unit (systemd-analyze verify), the starter and compose configs,
the container files."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from edgegw.gateway.config import load_config

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"


def sh(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", *args], capture_output=True, text=True, timeout=60)


def actions(out: str) -> list[str]:
    return [line[2:] for line in out.splitlines() if line.startswith("+ ")]


def test_install_dry_run_on_a_fresh_system(tmp_path: Path):
    r = sh(str(DEPLOY / "install.sh"), "--dry-run", "--root", str(tmp_path))
    assert r.returncode == 0, r.stderr
    acts = actions(r.stdout)
    t = str(tmp_path)
    assert (
        f"useradd --root {t} --system --user-group --home-dir /var/lib/edgegw --no-create-home "
        "--shell /usr/sbin/nologin edgegw"
    ) in acts
    assert f"usermod --root {t} -a -G dialout edgegw" in acts
    assert any(a.endswith(f"-m venv {t}/opt/edgegw/venv") for a in acts)
    assert f"{t}/opt/edgegw/venv/bin/pip install --upgrade {ROOT}" in acts
    assert f"install -m 0640 {DEPLOY}/edgegw.yaml {t}/etc/edgegw/edgegw.yaml" in acts
    assert f"install -m 0640 {DEPLOY}/edgegw.env {t}/etc/edgegw/edgegw.env" in acts
    assert f"install -d -m 0750 {t}/var/lib/edgegw" in acts
    assert f"install -m 0644 {DEPLOY}/systemd/edgegw.service {t}/etc/systemd/system/edgegw.service" in acts
    models = sorted(p.name for p in (ROOT / "configs" / "models").glob("*.yaml"))
    assert [a.rsplit("/", 1)[1] for a in acts if "/etc/edgegw/models/" in a and a.endswith(".yaml")] == models
    assert not any(a.startswith("systemctl") for a in acts)  # a staged tree has no running systemd
    assert not list(tmp_path.iterdir()), "a dry run must not change anything"


def test_install_dry_run_on_this_system_would_own_files_and_enable_the_unit(tmp_path: Path):
    r = sh(str(DEPLOY / "install.sh"), "--dry-run")
    assert r.returncode == 0, r.stderr
    acts = actions(r.stdout)
    assert "install -d -m 0750 -o root -g edgegw /etc/edgegw" in acts
    assert "install -d -m 0750 -o edgegw -g edgegw /var/lib/edgegw" in acts or "= /var/lib" in r.stdout
    assert "systemctl daemon-reload" in acts and "systemctl enable edgegw.service" in acts
    assert "systemctl restart edgegw.service" not in acts  # only with --start


def test_install_again_keeps_config_secrets_and_user(tmp_path: Path):
    (tmp_path / "etc" / "edgegw").mkdir(parents=True)
    (tmp_path / "etc" / "edgegw" / "edgegw.yaml").write_text("mine\n")
    (tmp_path / "etc" / "edgegw" / "edgegw.env").write_text("MQTT_PASSWORD=mine\n")
    (tmp_path / "etc" / "passwd").write_text("edgegw:x:990:990::/var/lib/edgegw:/usr/sbin/nologin\n")
    (tmp_path / "etc" / "group").write_text("dialout:x:20:edgegw\nedgegw:x:990:\n")
    venv = tmp_path / "opt" / "edgegw" / "venv" / "bin"
    venv.mkdir(parents=True)
    (venv / "python").write_text("#!/bin/sh\n")
    (venv / "python").chmod(0o755)
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    r = sh(str(DEPLOY / "install.sh"), "--dry-run", "--root", str(tmp_path), "--wheels", str(wheels))
    assert r.returncode == 0, r.stderr
    acts = actions(r.stdout)
    assert not any(a.startswith(("useradd", "usermod")) for a in acts)
    assert not any("-m venv" in a for a in acts)
    assert not any(a.endswith(("/etc/edgegw/edgegw.yaml", "/etc/edgegw/edgegw.env")) for a in acts)
    assert "= /etc/edgegw/edgegw.yaml kept" in r.stdout and "= /etc/edgegw/edgegw.env kept" in r.stdout
    # offline: only the carried wheels
    assert f"{venv}/pip install --no-index --find-links {wheels} --upgrade edgegw" in acts


def test_install_refuses_bad_arguments_without_doing_anything(tmp_path: Path):
    r = sh(str(DEPLOY / "install.sh"), "--dry-run", "--wheels", str(tmp_path / "nowhere"))
    assert r.returncode == 2 and "is not a directory" in r.stderr
    r = sh(str(DEPLOY / "install.sh"), "--frobnicate")
    assert r.returncode == 2 and "unknown option" in r.stderr


def _staged(tmp_path: Path) -> Path:
    for d in ("opt/edgegw/venv/bin", "etc/edgegw/models", "var/lib/edgegw", "etc/systemd/system"):
        (tmp_path / d).mkdir(parents=True)
    (tmp_path / "etc/systemd/system/edgegw.service").write_text("[Unit]\n")
    (tmp_path / "etc/edgegw/edgegw.yaml").write_text("config\n")
    (tmp_path / "var/lib/edgegw/queue.sqlite3").write_bytes(b"unsent data")
    return tmp_path


def test_uninstall_keeps_config_and_data_unless_purged(tmp_path: Path):
    root = _staged(tmp_path)
    r = sh(str(DEPLOY / "uninstall.sh"), "--root", str(root))  # for real, on the staged tree
    assert r.returncode == 0, r.stderr
    assert not (root / "opt/edgegw").exists()
    assert not (root / "etc/systemd/system/edgegw.service").exists()
    assert (root / "var/lib/edgegw/queue.sqlite3").read_bytes() == b"unsent data"
    assert (root / "etc/edgegw/edgegw.yaml").exists()
    assert "--purge" in r.stdout

    dry = sh(str(DEPLOY / "uninstall.sh"), "--root", str(root), "--purge", "--dry-run")
    assert f"rm -rf {root}/var/lib/edgegw" in actions(dry.stdout)
    assert (root / "var/lib/edgegw/queue.sqlite3").exists(), "a dry run must not delete"

    r = sh(str(DEPLOY / "uninstall.sh"), "--root", str(root), "--purge")
    assert r.returncode == 0, r.stderr
    assert not (root / "var/lib/edgegw").exists() and not (root / "etc/edgegw").exists()


def test_systemd_unit_verifies(tmp_path: Path):
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is needed (apt-get install systemd)"
    text = (DEPLOY / "systemd" / "edgegw.service").read_text()
    for key in ("Type=notify", "WatchdogSec=", "Restart=on-failure", "ProtectSystem=strict",
                "ReadWritePaths=/var/lib/edgegw", "NoNewPrivileges=yes", "PrivateTmp=yes",
                "CapabilityBoundingSet=", "EnvironmentFile=", "ExecReload=", "SupplementaryGroups=dialout"):  # fmt: skip
        assert re.search(rf"^{re.escape(key)}", text, re.M), key
    # the unit names the installed venv; here it is this checkout's, the only change
    unit = tmp_path / "edgegw.service"
    unit.write_text(text.replace("/opt/edgegw/venv/bin/edgegw", str(Path(sys.executable).parent / "edgegw")))
    r = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr


def _installed_layout(tmp_path: Path, config: Path) -> Path:
    shutil.copytree(ROOT / "configs" / "models", tmp_path / "models")
    dest = tmp_path / "edgegw.yaml"
    shutil.copy(config, dest)
    return dest


def test_starter_config_validates_where_install_puts_it(tmp_path: Path):
    cfg = _installed_layout(tmp_path, DEPLOY / "edgegw.yaml")
    env = dict(
        line.split("=", 1)
        for line in (DEPLOY / "edgegw.env").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    loaded = load_config(cfg, env=env)
    assert loaded.config.gateway.data_dir == "/var/lib/edgegw"
    assert loaded.config.api is not None and loaded.config.api.listen.startswith("127.0.0.1:")


def test_compose_stack_is_complete_and_loopback_only(tmp_path: Path):
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"edgegw", "mosquitto", "influxdb", "simulators"}
    for name, svc in services.items():
        for port in svc.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
        for vol in svc.get("volumes", []):
            src = vol.split(":", 1)[0]
            if src.startswith("./"):
                assert (DEPLOY / src).exists(), f"{name}: {src} missing"
    build = services["edgegw"]["build"]
    assert (DEPLOY / build["context"] / build["dockerfile"]).exists()
    dockerfile = (DEPLOY / "docker" / "Dockerfile").read_text()
    assert re.search(r"^USER edgegw$", dockerfile, re.M)
    assert "HEALTHCHECK" in dockerfile and "/healthz" in dockerfile
    assert "-slim" in dockerfile
    cfg = _installed_layout(tmp_path, DEPLOY / "docker" / "edgegw.yaml")
    loaded = load_config(cfg, env={"INFLUX_TOKEN": "t", "SNMS_PASSWORD": "p", "EDGEGW_API_TOKEN": "a"})
    assert {d.id for d in loaded.config.devices} >= {"im-01", "cnc-01"}


@pytest.mark.skipif(
    subprocess.run(["docker", "compose", "version"], capture_output=True).returncode != 0
    if shutil.which("docker")
    else True,
    reason="docker compose is not installed here",
)
def test_docker_compose_config_accepts_the_file():
    r = subprocess.run(
        ["docker", "compose", "-f", str(DEPLOY / "compose.yaml"), "config", "-q"],
        capture_output=True,
        text=True,
        env={**os.environ},
    )
    assert r.returncode == 0, r.stderr
