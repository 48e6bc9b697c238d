"""The protocol plugins of this build: one line per plugin folder.

Adding a protocol is adding its folder under `drivers/`, one line here and its library in
pyproject.toml's dependencies. A plugin module is light to import (see `drivers/plugin.py`).
"""

from __future__ import annotations

import importlib
from functools import cache

from .plugin import ProtocolPlugin

PLUGINS = (
    "edgegw.drivers.dlt645.plugin",
    "edgegw.drivers.mc.plugin",
    "edgegw.drivers.modbus.plugin",
    "edgegw.drivers.opcua.plugin",
    "edgegw.drivers.s7.plugin",
    "edgegw.drivers.serial.plugin",
)


@cache
def plugins() -> tuple[ProtocolPlugin, ...]:
    out: list[ProtocolPlugin] = [importlib.import_module(path).PLUGIN for path in PLUGINS]
    return tuple(out)


@cache
def _by_protocol() -> dict[str, ProtocolPlugin]:
    return {proto: p for p in plugins() for proto in p.protocols}


def protocols() -> list[str]:
    """Every `protocol:` value this build understands, in registry order."""
    return list(_by_protocol())


def plugin_for(protocol: str) -> ProtocolPlugin:
    """The plugin serving a `protocol:` value (KeyError if none: the schema refuses it first)."""
    return _by_protocol()[protocol]
