"""YAML reading that remembers where every key came from.

Config errors must name `FILE:LINE: key.path`, so the loader keeps, for every path in the
merged document, the file and line it was written on. `${NAME}` substitution happens after
parsing, on scalar strings only, so a variable's content can never change the YAML structure.

Whatever a file holds, reading it ends in a document or in located issues, never in an
exception: characters YAML does not allow, tags, complex keys, recursive aliases, nesting and
alias expansion beyond what any config needs are each reported on their line.
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
# what YAML 1.1 allows in a stream (PyYAML refuses the rest, without a line to show)
_NOT_YAML = re.compile("[^\t\n\r\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
# characters of a value that would break an error line apart or hide in it
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")

# Far beyond any real config (the deepest key of the schema is 6 levels down); a file past
# them is refused with one issue rather than followed.
MAX_DEPTH = 64
MAX_ALIAS_VALUES = 100_000  # values that aliases may add to a file beyond one per character
MAX_CHARACTER_ISSUES = 20

_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"
_MERGE = "tag:yaml.org,2002:merge"


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
        line = f"{self.location.file}:{self.location.line}: {format_path(self.path)}: {self.message}"
        return _UNPRINTABLE.sub(_escape, line)


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


def _escape(m: re.Match[str]) -> str:
    return m.group().encode("unicode_escape").decode("ascii")


def short(value: object, limit: int = 40) -> str:
    """A value as it may appear in a message: quoted, escaped, cut to a readable length."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…" + text[0] * (text[0] in "'\"")


@dataclass
class SourceMap:
    """Maps a path in the loaded document to the place it was written."""

    locations: dict[Path_, Location] = field(default_factory=dict)
    secret_paths: set[Path_] = field(default_factory=set)
    # values that could not be read (a bad tag, a recursive alias, …): they are reported once,
    # where they were written, and what the schema then says about them is left out
    unreadable: set[Path_] = field(default_factory=set)

    def locate(self, path: Path_) -> Location:
        for end in range(len(path), -1, -1):
            loc = self.locations.get(tuple(path[:end]))
            if loc is not None:
                return loc
        return Location("<config>", 1)

    def issue(self, path: Path_, message: str) -> ConfigIssue:
        return ConfigIssue(self.locate(path), tuple(path), message)

    def covers(self, path: Path_) -> bool:
        """Whether a path is at or below a value that was reported as unreadable."""
        return any(tuple(path[: len(p)]) == p for p in self.unreadable)


_LIBYAML = hasattr(yaml, "CSafeLoader")


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """The safe loader, on libyaml when PyYAML has it (a 100,000-point config parses in a
    fraction of the time); nodes keep their line marks either way."""


class _Refused(Exception):
    """A file that is not followed further: the issue says why."""

    def __init__(self, path: Path_, message: str):
        super().__init__(message)
        self.path = path
        self.message = message


def _tag(tag: str) -> str:
    return "!!" + tag[len("tag:yaml.org,2002:") :] if tag.startswith("tag:yaml.org,2002:") else tag


def _kind(node: yaml.Node) -> str:
    return "mapping" if isinstance(node, yaml.MappingNode) else "list"


class _Reader:
    """Turns the node graph of one file into plain data, filling the source map. Aliases are
    followed (an alias is a copy of its anchor's value), up to a budget of values."""

    def __init__(
        self,
        loader: _Loader,
        file: str,
        smap: SourceMap,
        issues: list[ConfigIssue],
        env: dict[str, str],
        characters: int,
    ):
        self.loader = loader
        self.file = file
        self.smap = smap
        self.issues = issues
        self.env = env
        self.characters = characters
        # without aliases a file has fewer values than characters: the rest is for aliases
        self.budget = MAX_ALIAS_VALUES + characters
        self.values = 0
        self.open: set[int] = set()  # collections being read: an alias to one of them is recursive
        self.reported: set[tuple[int, str]] = set()  # (node, message) of the issues reported
        # scalars an alias may repeat whose reading is not cheap: substituted, long or unreadable
        self.done: dict[int, tuple[Any, bool]] = {}

    def problem(self, node: yaml.Node, line: int, path: Path_, message: str, unreadable: bool = True) -> None:
        """Report a problem of a node once, however many aliases lead to it; a value that is
        not read is marked at every path it appears."""
        if unreadable:
            self.smap.unreadable.add(path)
        if (id(node), message) not in self.reported:
            self.reported.add((id(node), message))
            self.issues.append(ConfigIssue(Location(self.file, line), path, message))

    def value(self, node: yaml.Node, path: Path_, depth: int, line: int = 0) -> Any:
        """The value of a node; `line` is where it is named (its key's line in a mapping: an
        alias's node carries the line of its anchor)."""
        self.values += 1
        if self.values > self.budget:
            raise _Refused(
                path,
                f"aliases (*name) expand this file to more than {self.budget:,} values, far beyond its "
                f"{self.characters:,} characters: not read (devices share points through models:, not aliases)",
            )
        line = line or node.start_mark.line + 1
        self.smap.locations[path] = Location(self.file, line)
        if isinstance(node, yaml.ScalarNode):
            return self.scalar(node, path, line)
        expected = _MAP if isinstance(node, yaml.MappingNode) else _SEQ
        problem = ""
        if id(node) in self.open:
            problem = "a recursive alias: the value contains itself"
        elif depth >= MAX_DEPTH:
            problem = f"nested more than {MAX_DEPTH} levels deep"
        elif node.tag != expected:
            problem = f"YAML tag {_tag(node.tag)} is not supported: write a plain {_kind(node)}"
        if problem:
            self.problem(node, line, path, problem)
            return None
        self.open.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                return [self.value(item, (*path, i), depth + 1) for i, item in enumerate(node.value)]
            assert isinstance(node, yaml.MappingNode)  # scalars return above
            return self.mapping(node, path, depth)
        finally:
            self.open.discard(id(node))

    def mapping(self, node: yaml.MappingNode, path: Path_, depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = self.key(key_node, path)
            if key is None:
                continue
            child = (*path, key)
            line = key_node.start_mark.line + 1
            if key in out:
                self.problem(
                    key_node,
                    line,
                    child,
                    f"duplicate key {short(key)} (first written on line {self.smap.locations[child].line})",
                    unreadable=False,
                )
                continue
            # the key's own line is more useful than the value's for block mappings
            out[key] = self.value(value_node, child, depth + 1, line)
        return out

    def key(self, node: yaml.Node, path: Path_) -> str | None:
        """A mapping key as a string, or None (reported) for one that cannot be a name."""
        line = node.start_mark.line + 1
        if not isinstance(node, yaml.ScalarNode):
            self.problem(node, line, path, f"a key must be a name, not a {_kind(node)}", unreadable=False)
            return None
        if node.tag == _MERGE:
            self.problem(
                node,
                line,
                path,
                "merge keys (<<: *name) are not supported: write the keys out (devices share points through models:)",
                unreadable=False,
            )
            return None
        try:
            key = self.loader.construct_object(node, deep=True)
        except Exception as exc:  # PyYAML's constructors raise whatever the text makes them raise
            self.problem(node, line, path, _unreadable(node, exc), unreadable=False)
            return None
        if isinstance(key, str):
            return key
        return "null" if key is None else str(key)

    def scalar(self, node: yaml.ScalarNode, path: Path_, line: int) -> Any:
        done = self.done.get(id(node))
        if done is not None:  # an alias to a scalar read before: its issues are reported
            value, secret = done
            if secret:
                self.smap.secret_paths.add(path)
            if value is _UNREADABLE:
                self.smap.unreadable.add(path)
                return None
            return value
        try:
            value = self.loader.construct_object(node, deep=True)
        except Exception as exc:  # PyYAML's constructors raise whatever the text makes them raise
            self.problem(node, line, path, _unreadable(node, exc))
            self.done[id(node)] = (_UNREADABLE, False)
            return None
        if not isinstance(value, str):
            return value
        if "${" not in value:
            if len(value) > 256:  # an alias may repeat it: the next visit takes it from `done`
                self.done[id(node)] = (value, False)
            return value
        secret = False

        def sub(m: re.Match[str]) -> str:
            nonlocal secret
            name = m.group(1)
            secret = True  # from the environment, set or not (an unset one is reported here)
            if name not in self.env:
                self.problem(node, line, path, f"environment variable {name} is not set", unreadable=False)
                return ""
            return self.env[name]

        value = _ENV.sub(sub, value)
        if secret:
            self.smap.secret_paths.add(path)
        self.done[id(node)] = (value, secret)
        return value


_UNREADABLE = object()


def _unreadable(node: yaml.ScalarNode, exc: Exception) -> str:
    if isinstance(exc, yaml.constructor.ConstructorError) and "could not determine a constructor" in str(
        exc.problem
    ):
        return f"YAML tag {_tag(node.tag)} is not supported"
    return f"{short(node.value)} cannot be read as {_tag(node.tag)}"


def _bad_characters(text: str, file: str, base: Path_) -> list[ConfigIssue]:
    """One issue per line holding a character that YAML does not allow (up to a limit)."""
    out: list[ConfigIssue] = []
    last_line = 0
    for m in _NOT_YAML.finditer(text):
        line = text.count("\n", 0, m.start()) + 1
        if line == last_line:
            continue
        last_line = line
        code = ord(m.group())
        what = "a NUL character" if code == 0 else f"the character U+{code:04X}"
        hint = f' (in a double-quoted string, write it as "\\x{code:02x}")' if code < 0x100 else ""
        if len(out) == MAX_CHARACTER_ISSUES - 1:
            out.append(
                ConfigIssue(Location(file, line), base, f"{what} is not allowed in YAML; and more below")
            )
            break
        out.append(ConfigIssue(Location(file, line), base, f"{what} is not allowed in YAML{hint}"))
    return out


def read_yaml(
    file: Path, smap: SourceMap, issues: list[ConfigIssue], env: dict[str, str], base: Path_ = ()
) -> Any:
    name = str(file)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        issues.append(ConfigIssue(Location(name, 1), base, "file not found"))
        return None
    except UnicodeDecodeError as exc:
        try:
            line = file.read_bytes()[: exc.start].count(b"\n") + 1
        except OSError:
            line = 1
        issues.append(
            ConfigIssue(Location(name, line), base, f"not UTF-8 text: {exc.reason} at byte {exc.start}")
        )
        return None
    except (OSError, ValueError) as exc:
        issues.append(ConfigIssue(Location(name, 1), base, f"cannot read file: {exc}"))
        return None
    bad = _bad_characters(text, name, base)
    if bad:
        issues += bad
        return None
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        issues.append(ConfigIssue(Location(name, line), base, f"YAML syntax: {exc.problem or exc.context}"))
        return None
    except yaml.reader.ReaderError as exc:  # what the character scan let through; libyaml counts bytes
        prefix = (
            text.encode("utf-8")[: exc.position].decode("utf-8", "ignore")
            if _LIBYAML
            else text[: exc.position]
        )
        line = prefix.count("\n") + 1
        issues.append(ConfigIssue(Location(name, line), base, f"YAML: {exc.reason}"))
        return None
    except yaml.YAMLError as exc:
        issues.append(ConfigIssue(Location(name, 1), base, f"YAML: {exc}"))
        return None
    except RecursionError:  # the pure-Python parser, on nesting libyaml would refuse
        issues.append(ConfigIssue(Location(name, 1), base, f"nested more than {MAX_DEPTH} levels deep"))
        return None
    finally:
        loader.dispose()
    if node is None:
        smap.locations[base] = Location(name, 1)
        return {}
    reader = _Reader(loader, name, smap, issues, env, len(text))
    try:
        return reader.value(node, base, 0)
    except _Refused as exc:
        where = exc.path[: len(base) + 2]
        issues.append(ConfigIssue(smap.locate(where), where, exc.message))
        return None


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
        if ("include",) not in smap.unreadable:
            issues.append(smap.issue(("include",), "expected a file pattern or a list of them"))
        return doc, smap, issues
    models = doc.setdefault("models", {})
    if not isinstance(models, dict):
        return doc, smap, issues
    for i, pattern in enumerate(includes):
        if not isinstance(pattern, str):
            if ("include", i) not in smap.unreadable:
                issues.append(smap.issue(("include", i), "expected a file pattern"))
            continue
        if "\0" in pattern:
            issues.append(smap.issue(("include", i), "a file pattern cannot hold a NUL character"))
            continue
        full = pattern if os.path.isabs(pattern) else str(root.parent / pattern)
        try:
            matches = sorted(glob.glob(full))
        except (OSError, ValueError) as exc:
            issues.append(smap.issue(("include", i), f"cannot search for '{pattern}': {exc}"))
            continue
        if not matches:
            issues.append(smap.issue(("include", i), f"no file matches '{pattern}'"))
            continue
        for match in matches:
            if not os.path.isfile(match):
                issues.append(smap.issue(("include", i), f"'{match}' is not a file"))
                continue
            sub_map = SourceMap()
            sub = read_yaml(Path(match), sub_map, issues, env)
            if sub is None:
                continue
            sub_models = sub.get("models") if isinstance(sub, dict) else None
            if not isinstance(sub, dict) or set(sub) - {"models"}:
                extra = sorted(set(sub) - {"models"}) if isinstance(sub, dict) else []
                issues.append(
                    sub_map.issue(
                        (extra[0],) if extra else (),
                        "an included file may only contain 'models:'",
                    )
                )
                continue
            if sub_models is None:
                continue
            if not isinstance(sub_models, dict):
                if ("models",) not in sub_map.unreadable:
                    issues.append(sub_map.issue(("models",), "expected a mapping of model ids to models"))
                continue
            for model_id, model in sub_models.items():
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
                smap.unreadable |= {p for p in sub_map.unreadable if p[:2] == ("models", model_id)}
    return doc, smap, issues
