"""YAML reading that remembers where every key came from.

Config errors must name `FILE:LINE: key.path`, so the loader keeps, for every path in the
merged document, the file and line it was written on. `${NAME}` substitution happens after
parsing, on scalar strings only, so a variable's content can never change the YAML structure.
"""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

Path_ = tuple[str | int, ...]

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True, slots=True)
class Location:
    file: str
    line: int


@dataclass(slots=True)
class ConfigIssue:
    """One problem with a config, located in its source."""

    location: Location
    path: Path_
    message: str

    def __str__(self) -> str:
        return f"{self.location.file}:{self.location.line}: {format_path(self.path)}: {self.message}"


class ConfigError(Exception):
    """Raised with every issue found in a config, never just the first one."""

    def __init__(self, issues: list[ConfigIssue]):
        self.issues = sorted(issues, key=lambda i: (i.location.file, i.location.line))
        super().__init__("\n".join(str(i) for i in self.issues))


def format_path(path: Path_) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


@dataclass
class SourceMap:
    """Maps a path in the loaded document to the place it was written."""

    locations: dict[Path_, Location] = field(default_factory=dict)
    secret_paths: set[Path_] = field(default_factory=set)

    def locate(self, path: Path_) -> Location:
        for end in range(len(path), -1, -1):
            loc = self.locations.get(tuple(path[:end]))
            if loc is not None:
                return loc
        return Location("<config>", 1)

    def issue(self, path: Path_, message: str) -> ConfigIssue:
        return ConfigIssue(self.locate(path), tuple(path), message)


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """The safe loader, on libyaml when PyYAML has it (a 100,000-point config parses in a
    fraction of the time); nodes keep their line marks either way."""


def _node_to_python(
    node: yaml.Node,
    loader: _Loader,
    path: Path_,
    file: str,
    smap: SourceMap,
    issues: list[ConfigIssue],
    env: dict[str, str],
) -> Any:
    smap.locations[path] = Location(file, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if isinstance(key, int | float | bool) or key is None:
                key = str(key) if key is not None else "null"
            child = (*path, key)
            if key in out:
                issues.append(
                    ConfigIssue(
                        Location(file, key_node.start_mark.line + 1),
                        child,
                        f"duplicate key '{key}' (first written on line {smap.locations[child].line})",
                    )
                )
                continue
            out[key] = _node_to_python(value_node, loader, child, file, smap, issues, env)
            # the key's own line is more useful than the value's for block mappings
            smap.locations[child] = Location(file, key_node.start_mark.line + 1)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [
            _node_to_python(item, loader, (*path, i), file, smap, issues, env)
            for i, item in enumerate(node.value)
        ]
    value = loader.construct_object(node, deep=True)
    if isinstance(value, str) and "${" in value:

        def sub(m: re.Match[str]) -> str:
            name = m.group(1)
            if name not in env:
                issues.append(
                    ConfigIssue(
                        Location(file, node.start_mark.line + 1),
                        path,
                        f"environment variable {name} is not set",
                    )
                )
                return ""
            smap.secret_paths.add(path)
            return env[name]

        value = _ENV.sub(sub, value)
    return value


def read_yaml(
    file: Path, smap: SourceMap, issues: list[ConfigIssue], env: dict[str, str], base: Path_ = ()
) -> Any:
    name = str(file)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        issues.append(ConfigIssue(Location(name, 1), base, "file not found"))
        return None
    except (OSError, UnicodeDecodeError) as exc:
        issues.append(ConfigIssue(Location(name, 1), base, f"cannot read file: {exc}"))
        return None
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        issues.append(ConfigIssue(Location(name, line), base, f"YAML syntax: {exc.problem}"))
        return None
    finally:
        loader.dispose()
    if node is None:
        smap.locations[base] = Location(name, 1)
        return {}
    return _node_to_python(node, loader, base, name, smap, issues, env)


def load_document(
    file: str | os.PathLike[str], env: dict[str, str] | None = None
) -> tuple[dict[str, Any], SourceMap, list[ConfigIssue]]:
    """Read a config file and its `include:`s into one document, with a source map."""
    env = dict(os.environ) if env is None else env
    smap = SourceMap()
    issues: list[ConfigIssue] = []
    root = Path(file)
    doc = read_yaml(root, smap, issues, env)
    if doc is None:
        return {}, smap, issues
    if not isinstance(doc, dict):
        issues.append(smap.issue((), "the config must be a mapping (gateway:, models:, devices:, …)"))
        return {}, smap, issues
    includes = doc.pop("include", None)
    if includes is None:
        return doc, smap, issues
    if isinstance(includes, str):
        includes = [includes]
    if not isinstance(includes, list):
        issues.append(smap.issue(("include",), "expected a file pattern or a list of them"))
        return doc, smap, issues
    models = doc.setdefault("models", {})
    if not isinstance(models, dict):
        return doc, smap, issues
    for i, pattern in enumerate(includes):
        if not isinstance(pattern, str):
            issues.append(smap.issue(("include", i), "expected a file pattern"))
            continue
        full = pattern if os.path.isabs(pattern) else str(root.parent / pattern)
        matches = sorted(glob.glob(full))
        if not matches:
            issues.append(smap.issue(("include", i), f"no file matches '{pattern}'"))
            continue
        for match in matches:
            sub_map = SourceMap()
            sub = read_yaml(Path(match), sub_map, issues, env)
            if sub is None:
                continue
            if not isinstance(sub, dict) or set(sub) - {"models"}:
                extra = sorted(set(sub) - {"models"}) if isinstance(sub, dict) else []
                issues.append(
                    sub_map.issue(
                        (extra[0],) if extra else (),
                        "an included file may only contain 'models:'",
                    )
                )
                continue
            for model_id, model in (sub.get("models") or {}).items():
                if model_id in models:
                    first = smap.locate(("models", model_id))
                    issues.append(
                        sub_map.issue(
                            ("models", model_id),
                            f"model '{model_id}' is already defined at {first.file}:{first.line}",
                        )
                    )
                    continue
                models[model_id] = model
                for p, loc in sub_map.locations.items():
                    if p[:2] == ("models", model_id):
                        smap.locations[p] = loc
                smap.secret_paths |= {p for p in sub_map.secret_paths if p[:2] == ("models", model_id)}
    return doc, smap, issues
