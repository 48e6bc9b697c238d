"""Loading a config: YAML with a source map -> one pydantic schema -> cross-key checks.

The names below load on first use (PEP 562), so that a protocol plugin can import the schema's
building blocks (`config.base`, `config.types`) without loading the whole schema, which is
made from the plugins.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .loader import ConfigError, ConfigIssue, LoadedConfig, load_config

__all__ = ["ConfigError", "ConfigIssue", "LoadedConfig", "load_config"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import loader

        return getattr(loader, name)
    raise AttributeError(name)
