"""Data-driven cases: <cases>/<name>/config.yaml with either error.txt (the exact lines
`edgegw validate` must print) or decode.json (registers in, engineering values out), where
<cases> is tests/cases (the core's) or a protocol plugin's drivers/<name>/cases.
Adding a case is adding a folder."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from edgegw.drivers.modbus.address import BIT_AREAS, parse_address
from edgegw.drivers.modbus.codec import BlockDecoder
from edgegw.drivers.modbus.tcp import ModbusTcpDriver
from edgegw.drivers.registry import plugin_for
from edgegw.gateway import cli
from edgegw.gateway.config import load_config
from edgegw.gateway.normalise import Normaliser

ROOT = Path(__file__).resolve().parent.parent
CASE_FOLDERS = [ROOT / "tests" / "cases", *sorted(ROOT.glob("drivers/*/cases"))]
CASES = {
    str(p.parent.relative_to(ROOT)): p.parent for folder in CASE_FOLDERS for p in folder.glob("*/config.yaml")
}
ERROR_CASES = sorted(n for n, p in CASES.items() if (p / "error.txt").exists())
DECODE_CASES = sorted(n for n, p in CASES.items() if (p / "decode.json").exists())


def test_every_plugin_has_cases() -> None:
    from edgegw.drivers.registry import plugins

    for plugin in plugins():
        assert any(n.startswith(f"drivers/{plugin.name}/cases/") for n in CASES), plugin.name


def _expected(case: Path, stderr: str) -> None:
    lines = stderr.splitlines()
    expected = (case / "error.txt").read_text().splitlines()
    assert lines[:-1] == expected
    assert lines[-1] == f"config.yaml: {len(expected)} error{'s' if len(expected) != 1 else ''}"


@pytest.mark.parametrize("name", ERROR_CASES)
def test_config_error_case(
    name: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`edgegw validate` in this process (the CLI's own `main`, as the console script runs it):
    an interpreter per case would cost the suite half a minute; one case below runs the real
    command."""
    case = CASES[name]
    monkeypatch.delenv("EDGEGW_TEST_UNSET_VARIABLE", raising=False)
    monkeypatch.chdir(case)
    try:
        code = cli.main(["validate", "-c", "config.yaml"])
    except SystemExit as exc:  # validate exits with the config error's code
        code = exc.code
    assert code == 2
    _expected(case, capsys.readouterr().err)


def test_a_config_error_case_through_the_installed_command() -> None:
    case = CASES["tests/cases/computed_points"]
    result = subprocess.run(
        [sys.executable, "-m", "edgegw.gateway.cli", "validate", "-c", "config.yaml"],
        cwd=case,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    _expected(case, result.stderr)


@pytest.mark.parametrize("name", DECODE_CASES)
def test_decode_case(name: str) -> None:
    case = CASES[name]
    spec = json.loads((case / "decode.json").read_text())
    loaded = load_config(case / "config.yaml")
    resolved = next(r for r in loaded.devices if loaded.config.devices[r.index].id == spec["device"])
    dev = loaded.config.devices[resolved.index]
    driver = plugin_for(dev.protocol).build_driver(loaded, dev, resolved.points, resolved.plan)
    assert isinstance(driver, ModbusTcpDriver)
    memory: dict[str, dict[int, object]] = {"hr": {}, "ir": {}, "co": {}, "di": {}}
    for addr, values in spec["registers"].items():
        a = parse_address(addr)
        for i, v in enumerate(values):
            memory[a.area][a.offset + i] = v
    raw: list[object] = [None] * len(driver.points)
    for req in driver.requests:
        default: object = False if req.area in BIT_AREAS else 0
        block = [memory[req.area].get(req.start + i, default) for i in range(req.count)]
        decoded = BlockDecoder(req.start, req.count, [driver.points[i] for i in req.points]).decode(block)
        for i, v in zip(req.points, decoded, strict=True):
            raw[i] = v
    readings = {r.id: r for r in Normaliser(resolved.points).normalise(raw)}
    for pid, (value, quality) in spec["expected"].items():
        r = readings[pid]
        assert r.q == quality, (pid, r)
        if isinstance(value, float):
            assert r.v == pytest.approx(value, rel=1e-6), pid
        else:
            assert r.v == value and type(r.v) is type(value), (pid, r.v)
    assert set(spec["expected"]) == set(readings)
