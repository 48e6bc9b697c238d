"""Every protocol plugin has a README (drivers/<name>/README.md) whose sample config, its first
```yaml block, is a whole config that `edgegw validate` accepts, using only the plugin's own
protocols."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import yaml
from edgegw.drivers.registry import plugins
from edgegw.gateway import cli

ROOT = Path(__file__).resolve().parent.parent
YAML_BLOCK = re.compile(r"^```yaml\n(.*?)^```", re.MULTILINE | re.DOTALL)
PLUGINS = {p.name: p for p in plugins()}


def sample(name: str) -> str:
    readme = ROOT / "drivers" / name / "README.md"
    assert readme.is_file(), f"{readme.relative_to(ROOT)} is missing"
    m = YAML_BLOCK.search(readme.read_text(encoding="utf-8"))
    assert m is not None, f"{readme.relative_to(ROOT)} has no ```yaml block"
    return m.group(1)


@pytest.mark.parametrize("name", sorted(PLUGINS))
def test_readme_sample_config_validates(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    plugin = PLUGINS[name]
    text = sample(name)
    doc = yaml.safe_load(text)
    devices = doc.get("devices") or []
    assert devices, f"the {name} sample has no devices"
    for dev in devices:
        assert dev["protocol"] in plugin.protocols, (dev["id"], dev["protocol"], plugin.protocols)
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    # the sample must validate on its own: no ${ENV} it needs may come from the caller
    for key in list(os.environ):
        if key.startswith(("OPCUA_", "MQTT_")):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    try:  # `edgegw validate`'s own main, in this process
        code = cli.main(["validate", "-c", str(path)])
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    assert code == 0, out.out + out.err
    if name == "modbus":
        assert "requests per poll" in out.out, out.out
