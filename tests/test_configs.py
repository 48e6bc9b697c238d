"""Every config shipped in configs/ validates, and `edgegw schema` is valid JSON Schema."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from edgegw.gateway.config import load_config

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = sorted(p for p in (ROOT / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_config_validates(path: Path):
    loaded = load_config(path)
    assert loaded.devices


def test_model_files_are_included_and_used():
    models = {p.stem for p in (ROOT / "configs" / "models").glob("*.yaml")}
    assert models
    loaded = load_config(ROOT / "configs" / "demo.yaml")
    assert len(loaded.config.models) >= len(models)


def test_schema_command_prints_json_schema():
    out = subprocess.run(
        [sys.executable, "-m", "edgegw.gateway.cli", "schema"], capture_output=True, text=True, check=True
    )
    schema = json.loads(out.stdout)
    assert schema["title"] == "edgegw config"
    assert set(schema["properties"]) >= {
        "gateway",
        "models",
        "devices",
        "northbound",
        "identifier",
        "api",
        "include",
    }


def test_validate_summary(tmp_path: Path):
    out = subprocess.run(
        [sys.executable, "-m", "edgegw.gateway.cli", "validate", "-c", str(ROOT / "configs" / "demo.yaml")],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert "10 devices, 113 points" in out.stdout
    assert "s7: 1 read requests per poll cycle" in out.stdout
    assert "read requests per poll cycle" in out.stdout


def test_env_substitution_and_missing_file(tmp_path: Path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "gateway: {id: gw}\n"
        "devices:\n"
        "  - {id: d, protocol: modbus-tcp, connection: {host: '${PLC_HOST}'},\n"
        "     points: [{id: a, type: int16, modbus: {address: 40001}}]}\n"
    )
    loaded = load_config(cfg, env={"PLC_HOST": "10.0.0.7"})
    assert loaded.config.devices[0].connection.host == "10.0.0.7"
    out = subprocess.run(
        [sys.executable, "-m", "edgegw.gateway.cli", "validate", "-c", str(tmp_path / "nope.yaml")],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2 and "file not found" in out.stderr and "Traceback" not in out.stderr


def test_config_reference_matches_the_schema():
    from edgegw.gateway.config.reference import render

    committed = (ROOT / "docs" / "config-reference.md").read_text()
    assert committed == render(), (
        "docs/config-reference.md is stale: python -m edgegw.gateway.config.reference"
    )
