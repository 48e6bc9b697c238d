"""Mutation test of config loading: whatever the file holds, `load_config` either returns a
config or raises ConfigError whose issues each render as one `FILE:LINE: key.path: message`
line, and `edgegw validate` exits 0 or 2 without a traceback.

Seeds are the shipped configs (configs/*.yaml with the model files they include) and the
configs of tests/cases/ and drivers/*/cases/. Each mutant is a copy of one seed, with its includes, in a folder of
its own, changed at the text level (lines deleted, duplicated, swapped or re-indented,
characters and YAML fragments inserted, numbers and durations changed, `include:` changed,
truncation, alias bombs, deep nesting, bad bytes) and/or at the structure level (loaded, a value
replaced by another type, None, a huge string or a deep list, written back). `include:` globs
only see the mutant's folder, and `${NAME}` sees a fixed environment. Mutant i of seed S is the
same on every run, so a failure names what to replay.

Environment: EDGEGW_FUZZ_MUTANTS (in-process mutants, default 250), EDGEGW_FUZZ_CLI (mutants
run through `edgegw validate`, default 8), EDGEGW_FUZZ_SEED (default 1), EDGEGW_FUZZ_TIMEOUT
(seconds one load may take, default 10).

    .venv/bin/python tests/test_config_fuzz.py 5000    # a long run: counts by class
"""

from __future__ import annotations

import contextlib
import datetime as dt
import glob as _glob
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import yaml
from edgegw.gateway.config import ConfigError, load_config
from edgegw.gateway.config import source as config_source

ROOT = Path(__file__).resolve().parent.parent
MUTANTS = int(os.environ.get("EDGEGW_FUZZ_MUTANTS", "250"))
CLI_MUTANTS = int(os.environ.get("EDGEGW_FUZZ_CLI", "8"))
SEED = int(os.environ.get("EDGEGW_FUZZ_SEED", "1"))
TIMEOUT = float(os.environ.get("EDGEGW_FUZZ_TIMEOUT", "10"))

# one issue, one line: FILE:LINE: key.path: message, with no control character in it
_TEXT = "[^\x00-\x1f\x7f\x85\u2028\u2029]"
ISSUE = re.compile(f"^(?P<file>{_TEXT}+?):(?P<line>[1-9][0-9]*): (?P<path>{_TEXT}+?): (?P<message>{_TEXT}+)$")
# the environment of every load, in-process and through the CLI, so both see the same `${NAME}`
ENV = {
    "EDGEGW_FUZZ_HOST": "10.0.0.9",
    "EDGEGW_FUZZ_TEXT": "a: [b\n- c: {",
    "LANG": "C.UTF-8",
    "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
}


# -- seeds -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Seed:
    name: str
    files: dict[str, bytes]  # relative path -> content; "config.yaml" is the one loaded


def _included(config: Path) -> list[Path]:
    try:
        doc = yaml.safe_load(config.read_text(encoding="utf-8"))
    except yaml.YAMLError:
        return []
    patterns = doc.get("include") if isinstance(doc, dict) else None
    if isinstance(patterns, str):
        patterns = [patterns]
    out: list[Path] = []
    for pattern in patterns if isinstance(patterns, list) else []:
        if isinstance(pattern, str) and not os.path.isabs(pattern) and ".." not in pattern:
            out += sorted(Path(p) for p in _glob.glob(str(config.parent / pattern)))
    return out


def seeds() -> list[Seed]:
    configs = sorted((ROOT / "configs").glob("*.yaml")) + sorted(
        [*(ROOT / "tests" / "cases").glob("*/config.yaml"), *ROOT.glob("drivers/*/cases/*/config.yaml")]
    )
    out = []
    for config in configs:
        files = {"config.yaml": config.read_bytes()}
        for inc in _included(config):
            files[str(inc.relative_to(config.parent))] = inc.read_bytes()
        out.append(Seed(str(config.relative_to(ROOT)), files))
    return out


# -- text mutations --------------------------------------------------------------------------

_CHARS = [chr(c) for c in range(32)] + ["\x7f", "\x85", "\u2028", "\ufeff", "\ufffe", "é", "中", "\U0001f600"]
_CHARS += list(":-?[]{},#&*!|>'\"%@` \t\\")
_FRAGMENTS = [
    "!!set ",
    "!!python/object:os.system ",
    "!!python/name:os.system ",
    "!!python/object/apply:os.system ['true'] ",
    "!!binary ",
    "!!int ",
    "!!float ",
    "!!str ",
    "!!bool ",
    "!!null ",
    "!!map ",
    "!!seq ",
    "!!omap ",
    "!!pairs ",
    "!!timestamp ",
    "!!merge ",
    "!foo ",
    "!<tag:x.org,2000:y> ",
    "&a ",
    "*a",
    "*nope",
    "&a [*a]",
    "&b {k: *b}",
    "? [a, b]\n: 1\n",
    "? {a: 1}\n: x\n",
    "[a, b]: 1",
    "<<: *a\n",
    "<<: {a: 1}\n",
    "---\n",
    "...\n",
    "%YAML 1.1\n",
    "%TAG ! tag:x.org,2000:\n",
    "${EDGEGW_FUZZ_HOST}",
    "${EDGEGW_FUZZ_TEXT}",
    "${EDGEGW_FUZZ_UNSET}",
    "${",
    "\t",
    "\x00",
    "'",
    '"',
    "|\n",
    ">-\n",
    "~",
    "null",
    "[]",
    "{}",
    "- ",
    ": ",
    "0s",
    "-1s",
    "nan",
    "1e999",
]
_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?:e[+-]?\d+)?(?![\w.])")
_DURATION = re.compile(r"\b\d+(?:\.\d+)?(?:ms|s|m|h|d)\b")
_SIZE = re.compile(r"\b\d+(?:\.\d+)?(?:B|KB|MB|GB|KiB|MiB|GiB)\b")
_NUMBERS = [
    "0",
    "-1",
    "-0",
    "0.0",
    "1e999",
    "-1e999",
    ".nan",
    "nan",
    ".inf",
    "-.inf",
    "1e308",
    "1e-320",
    "99999999999999999999999999",
    "0x10",
    "0o17",
    "1_000",
    "2.5",
    "true",
]
_DURATIONS = ["0s", "0ms", "0.0s", "0.0001ms", "-1s", "1e999s", "99999999999999999999d", "0h", "0.5ms", "s"]
_SIZES = ["0", "0B", "1B", "0MiB", "1KiB", "-1MiB", "99999999999999999999GiB", "0.1B", "1e999"]


def _line_span(text: str, rng: random.Random) -> tuple[list[str], int]:
    lines = text.split("\n")
    return lines, rng.randrange(len(lines))


def _delete_line(text: str, rng: random.Random) -> str:
    lines, i = _line_span(text, rng)
    del lines[i]
    return "\n".join(lines)


def _duplicate_line(text: str, rng: random.Random) -> str:
    lines, i = _line_span(text, rng)
    lines.insert(i, lines[i])
    return "\n".join(lines)


def _swap_lines(text: str, rng: random.Random) -> str:
    lines, i = _line_span(text, rng)
    j = rng.randrange(len(lines))
    lines[i], lines[j] = lines[j], lines[i]
    return "\n".join(lines)


def _reindent(text: str, rng: random.Random) -> str:
    lines, i = _line_span(text, rng)
    if rng.random() < 0.5:
        lines[i] = " " * rng.randint(1, 3) + lines[i]
    else:
        lines[i] = lines[i][rng.randint(1, 3) :] if lines[i].startswith(" ") else "\t" + lines[i]
    return "\n".join(lines)


def _insert(text: str, rng: random.Random, what: str) -> str:
    at = rng.randint(0, len(text))
    return text[:at] + what + text[at:]


def _insert_chars(text: str, rng: random.Random) -> str:
    return _insert(text, rng, "".join(rng.choice(_CHARS) for _ in range(rng.randint(1, 4))))


def _insert_fragment(text: str, rng: random.Random) -> str:
    fragment = rng.choice(_FRAGMENTS)
    if rng.random() < 0.5:
        # right after a key, where a tag or an anchor binds to a value
        keys = [m.end() for m in re.finditer(r": ", text)]
        if keys:
            at = rng.choice(keys)
            return text[:at] + fragment + text[at:]
    return _insert(text, rng, fragment)


def _replace_match(text: str, rng: random.Random, pattern: re.Pattern[str], choices: list[str]) -> str:
    found = list(pattern.finditer(text))
    if not found:
        return _insert_fragment(text, rng)
    m = rng.choice(found)
    return text[: m.start()] + rng.choice(choices) + text[m.end() :]


def _change_number(text: str, rng: random.Random) -> str:
    return _replace_match(text, rng, _NUMBER, _NUMBERS)


def _change_duration(text: str, rng: random.Random) -> str:
    return _replace_match(text, rng, _DURATION, _DURATIONS)


def _change_size(text: str, rng: random.Random) -> str:
    return _replace_match(text, rng, _SIZE, _SIZES)


def _truncate(text: str, rng: random.Random) -> str:
    return text[: rng.randint(0, len(text))]


def _alias_bomb(text: str, rng: random.Random) -> str:
    """Aliases of aliases: fan^depth nodes from a few lines."""
    depth, fan = rng.randint(2, 5), rng.randint(2, 10)
    lines = [f"lol0: &lol0 [{', '.join(['lol'] * fan)}]"]
    for d in range(1, depth + 1):
        lines.append(f"lol{d}: &lol{d} [{', '.join([f'*lol{d - 1}'] * fan)}]")
    if rng.random() < 0.5:
        return "\n".join(lines) + "\n" + text
    # below a key of the config, so that the expansion lands where the schema looks
    m = re.search(r"^(\s+)\w+:\s*$", text, re.M)
    if m is None:
        return "\n".join(lines) + "\n" + text
    indent = m.group(1) + "  "
    return text[: m.end()] + "\n" + "\n".join(indent + ln for ln in lines) + text[m.end() :]


def _deep_nesting(text: str, rng: random.Random) -> str:
    n = rng.choice([50, 200, 500, 990, 1200, 3000])
    nested = "[" * n + "]" * n if rng.random() < 0.5 else "{a: " * n + "}" * n
    keys = [m.end() for m in re.finditer(r": ", text)]
    at = rng.choice(keys) if keys else 0
    return text[:at] + nested + text[at:]


_INCLUDES = [
    "models/[",
    "models/**/*.yaml",
    "models",
    "models/*",
    "config.yaml",
    "*.yaml",
    "../*.yaml",
    "/etc/hostname",
    "",
    "'${EDGEGW_FUZZ_TEXT}'",
    '"models/\\0.yaml"',
    '"models/\\x00.yaml"',
    "[models/*.yaml, 1, null, [x]]",
    "{models: x}",
    "models/*.yaml\ninclude: models/*.yaml",
]


def _change_include(text: str, rng: random.Random) -> str:
    """Another `include:` (the folder's globs are confined to the mutant's folder)."""
    value = rng.choice(_INCLUDES)
    m = re.search(r"^include:.*$", text, re.M)
    if m is None:
        return f"include: {value}\n{text}"
    return text[: m.start()] + f"include: {value}" + text[m.end() :]


def _crlf(text: str, rng: random.Random) -> str:
    return text.replace("\n", rng.choice(["\r\n", "\r", "\x85", "\u2028"]))


def _bom(text: str, rng: random.Random) -> str:
    return "\ufeff" + text


TEXT_MUTATIONS: list[tuple[Callable[[str, random.Random], str], int]] = [
    (_delete_line, 10),
    (_duplicate_line, 10),
    (_swap_lines, 8),
    (_reindent, 6),
    (_insert_chars, 12),
    (_insert_fragment, 16),
    (_change_number, 12),
    (_change_duration, 10),
    (_change_size, 3),
    (_truncate, 5),
    (_alias_bomb, 2),
    (_deep_nesting, 2),
    (_change_include, 2),
    (_crlf, 1),
    (_bom, 1),
]


# -- structure mutations ---------------------------------------------------------------------


def _slots(doc: Any) -> list[tuple[Any, Any]]:
    """Every (container, key or index) of a document, each container once (a mutant may
    have made the document recursive)."""
    out: list[tuple[Any, Any]] = []
    seen: set[int] = set()
    todo = [doc]
    while todo:
        cur = todo.pop()
        if id(cur) in seen or not isinstance(cur, dict | list):
            continue
        seen.add(id(cur))
        keys = list(cur) if isinstance(cur, dict) else range(len(cur))
        for k in keys:
            out.append((cur, k))
            todo.append(cur[k])
    return out


def _weird_value(rng: random.Random, doc: Any) -> Any:
    choice = rng.randrange(22)
    if choice == 0:
        return None
    if choice == 1:
        return ""
    if choice == 2:
        return rng.choice([True, False])
    if choice == 3:
        return rng.choice([0, -1, 1, 2**63, -(2**64), 10**40])
    if choice == 4:
        return rng.choice([0.0, -0.0, -1.5, float("nan"), float("inf"), float("-inf"), 1e-320])
    if choice == 5:
        return "x" * rng.choice([1000, 70_000, 300_000])
    if choice == 6:
        value: Any = "deep"
        for _ in range(rng.randint(1, 120)):
            value = [value]
        return value
    if choice == 7:
        value = "deep"
        for _ in range(rng.randint(1, 120)):
            value = {"k": value}
        return value
    if choice == 8:
        return []
    if choice == 9:
        return {}
    if choice == 10:
        return {"unexpected": rng.choice([1, "x", None, [1]])}
    if choice == 11:
        return [None, 1, "x", [], {}]
    if choice == 12:
        return "".join(rng.choice(_CHARS) for _ in range(rng.randint(1, 12)))
    if choice == 13:
        return rng.choice(["${EDGEGW_FUZZ_HOST}", "${EDGEGW_FUZZ_TEXT}", "${EDGEGW_FUZZ_UNSET}", "${"])
    if choice == 14:
        return rng.choice(["0s", "-1s", "0ms", "1e999s", "0", "nan", "0MiB", "1B"])
    if choice == 15:
        return rng.choice([dt.date(2024, 2, 29), dt.datetime(2024, 1, 1, 12, 0)])
    if choice == 16:
        return rng.choice([b"\x00\xff", b""])
    if choice == 17:
        return rng.choice([[0, 0], [1, -1], [float("nan"), 1], [float("-inf"), float("inf")], [1], [1, 2, 3]])
    if choice == 18:
        return rng.choice(["hr:0", "hr:65535", "hr:65536", "40001.16", "co:-1", "hr:0.99", 400001])
    if choice == 19:
        return rng.choice(["modbus-tcp", "modbus-rtu", "serial", "opcua", "bacnet", ""])
    # a value from elsewhere in the document: the right shape in the wrong place
    slots = _slots(doc)
    if slots:
        container, key = rng.choice(slots)
        return container[key]
    return None


def _mutate_structure(text: str, rng: random.Random) -> str | None:
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    slots = _slots(doc)
    if not slots:
        return None
    for _ in range(rng.randint(1, 3)):
        slots = _slots(doc)
        if not slots:
            break
        container, key = rng.choice(slots)
        action = rng.randrange(8)
        if action < 4:
            container[key] = _weird_value(rng, doc)
        elif action == 4:
            del container[key]
        elif action == 5 and isinstance(container, list):
            container.insert(key, container[key])
        elif action == 5 or action == 6:
            if isinstance(container, dict):
                value = container.pop(key)
                new = rng.choice([f"{key}x", str(key)[:-1], "unknown", 1, None, True, "", "a.b"])
                container[new] = value
        else:
            other_container, other_key = rng.choice(slots)
            container[key], other_container[other_key] = other_container[other_key], container[key]
    try:
        return yaml.safe_dump(
            doc,
            sort_keys=False,
            allow_unicode=rng.random() < 0.5,
            default_flow_style=rng.choice([False, None, True]),
            width=rng.choice([80, 100_000]),
        )
    except (yaml.YAMLError, RecursionError, TypeError, ValueError):
        return None


# -- mutants ---------------------------------------------------------------------------------


@dataclass
class Mutant:
    seed: str
    index: int
    files: dict[str, bytes]
    steps: list[str] = field(default_factory=list)

    def write(self, folder: Path) -> Path:
        for rel, content in self.files.items():
            path = folder / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
        return folder / "config.yaml"

    @property
    def name(self) -> str:
        return f"{self.seed}#{self.index}"


def make_mutant(all_seeds: list[Seed], seed: int, index: int) -> Mutant:
    rng = random.Random(f"{seed}:{index}")
    base = rng.choice(all_seeds)
    files = dict(base.files)
    target = "config.yaml" if len(files) == 1 or rng.random() < 0.75 else rng.choice(sorted(files)[1:])
    text = files[target].decode("utf-8")
    mutant = Mutant(base.name, index, files)
    if rng.random() < 0.4:
        changed = _mutate_structure(text, rng)
        if changed is not None:
            text = changed
            mutant.steps.append("structure")
    names = [m for m, _ in TEXT_MUTATIONS]
    weights = [w for _, w in TEXT_MUTATIONS]
    for _ in range(rng.choice([0, 1, 1, 2, 3]) if mutant.steps else rng.choice([1, 1, 2, 3])):
        mutation = rng.choices(names, weights)[0]
        text = mutation(text, rng)
        mutant.steps.append(mutation.__name__.lstrip("_"))
    data = text.encode("utf-8", errors="surrogatepass")
    if rng.random() < 0.02 and data:
        at = rng.randrange(len(data))
        data = data[:at] + bytes([rng.choice([0x80, 0xC3, 0xFF, 0xFE])]) + data[at + 1 :]
        mutant.steps.append("bad_byte")
    files[target] = data
    return mutant


# -- running ---------------------------------------------------------------------------------


class _Timeout(BaseException):
    pass


@contextlib.contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    if not hasattr(signal, "setitimer"):
        yield
        return

    def expire(signum: int, frame: object) -> None:
        raise _Timeout

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def confined_glob(folder: Path) -> Iterator[list[str]]:
    """`include:` globs see only the mutant's folder; a pattern that reaches out is recorded."""
    escaped: list[str] = []
    inside = str(folder.resolve()) + os.sep

    def glob(pattern: str, **kwargs: Any) -> list[str]:
        out = []
        for match in _glob.glob(pattern, **kwargs):
            if os.path.realpath(match).startswith(inside):
                out.append(match)
            else:
                escaped.append(match)
        if not os.path.realpath(pattern).startswith(inside):
            escaped.append(pattern)
        return out

    saved = config_source.glob
    config_source.glob = SimpleNamespace(glob=glob)  # type: ignore[assignment]
    try:
        yield escaped
    finally:
        config_source.glob = saved


def _where(exc: BaseException) -> str:
    """The innermost frame of the product in a traceback: what names a class of crash."""
    frames = traceback.extract_tb(exc.__traceback__)
    mine = [
        f
        for f in frames
        if any(f"{os.sep}{d}{os.sep}" in f.filename for d in ("gateway", "drivers", "identifier"))
    ]
    if not (mine or frames):
        return "?"
    frame = (mine or frames)[-1]
    file = Path(frame.filename)
    return f"{file.relative_to(ROOT) if file.is_relative_to(ROOT) else file.name}:{frame.name}"


def check_issues(exc: ConfigError, folder: Path) -> str | None:
    """What is wrong with how a ConfigError reports, or None."""
    if not exc.issues:
        return "ConfigError without issues"
    if len(exc.issues) > 1000:
        return f"{len(exc.issues)} issues: the same problem reported over and over?"
    lines: dict[str, int] = {}
    for issue in exc.issues:
        line = str(issue)
        m = ISSUE.match(line)
        if m is None:
            return f"not FILE:LINE: path: message: {line[:300]!r}"
        if m.group("file") not in lines:
            try:
                text = Path(m.group("file")).read_bytes().decode("utf-8", errors="replace")
            except OSError:
                return f"names a file that is not there: {line[:300]!r}"
            lines[m.group("file")] = len(text.splitlines())
        if int(m.group("line")) > lines[m.group("file")] + 1:
            return f"line beyond the end of the file: {line[:300]!r}"
        if not os.path.realpath(m.group("file")).startswith(str(folder.resolve())):
            return f"names a file outside the config's folder: {line[:300]!r}"
    return None


@dataclass
class Outcome:
    kind: str  # "ok", "errors" or a failure class
    detail: str = ""
    escaped: bool = False
    seconds: float = 0.0

    @property
    def failed(self) -> bool:
        return self.kind not in ("ok", "errors")


def run_in_process(config: Path, timeout: float = TIMEOUT) -> Outcome:
    start = time.perf_counter()
    with confined_glob(config.parent) as escaped:
        try:
            with _time_limit(timeout):
                load_config(config, env=dict(ENV))
        except ConfigError as exc:
            bad = check_issues(exc, config.parent)
            out = Outcome("bad report", bad) if bad else Outcome("errors")
        except _Timeout:
            out = Outcome(f"slow (over {timeout:g}s)")
        except Exception as exc:
            out = Outcome(
                f"{type(exc).__name__} in {_where(exc)}", "".join(traceback.format_exception(exc))[-3000:]
            )
        else:
            out = Outcome("ok")
    out.escaped = bool(escaped)
    out.seconds = time.perf_counter() - start
    return out


def run_cli(config: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "edgegw.gateway.cli", "validate", "-c", config.name],
        cwd=config.parent,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
    )


def cli_problem(proc: subprocess.Popen[str], config: Path) -> str | None:
    try:
        _, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return "edgegw validate ran for over 120 s"
    if proc.returncode not in (0, 2) or "Traceback" in err:
        return f"exit {proc.returncode}: {err[-2000:]}"
    if proc.returncode == 2:
        *lines, summary = err.splitlines() or [""]
        if not re.fullmatch(r"config\.yaml: \d+ errors?", summary):
            return f"no summary line: {err[-2000:]}"
        for line in lines:
            if not ISSUE.match(line):
                return f"not FILE:LINE: path: message: {line[:300]!r}"
    return None


@dataclass
class Report:
    mutants: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    examples: dict[str, tuple[Mutant, Outcome, Path]] = field(default_factory=dict)
    slowest: tuple[float, str] = (0.0, "")

    @property
    def failures(self) -> dict[str, int]:
        return {k: n for k, n in self.outcomes.items() if k not in ("ok", "errors")}

    def summary(self) -> str:
        lines = [f"{self.mutants} mutants: " + ", ".join(f"{k} {n}" for k, n in self.outcomes.most_common())]
        lines.append(f"slowest load {self.slowest[0]:.2f}s ({self.slowest[1]})")
        for kind, (mutant, outcome, kept) in self.examples.items():
            lines.append(f"\n== {kind}: {mutant.name} ({', '.join(mutant.steps)}), kept in {kept}")
            lines.append(outcome.detail[-1500:])
        return "\n".join(lines)


def fuzz(count: int, seed: int, workdir: Path, timeout: float = TIMEOUT) -> Report:
    all_seeds = seeds()
    report = Report()
    for i in range(count):
        mutant = make_mutant(all_seeds, seed, i)
        folder = workdir / f"m{i}"
        config = mutant.write(folder)
        outcome = run_in_process(config, timeout)
        report.mutants += 1
        report.outcomes[outcome.kind] += 1
        report.slowest = max(report.slowest, (outcome.seconds, mutant.name))
        if outcome.failed and outcome.kind not in report.examples:
            report.examples[outcome.kind] = (mutant, outcome, folder)
        else:
            shutil.rmtree(folder)
    return report


# -- tests -----------------------------------------------------------------------------------


def test_seeds_are_there() -> None:
    names = {s.name for s in seeds()}
    assert "configs/demo.yaml" in names and any(n.startswith("tests/cases/") for n in names)
    demo = next(s for s in seeds() if s.name == "configs/demo.yaml")
    assert any(rel.startswith("models/") for rel in demo.files), "the seeds carry their includes"


def test_mutants_are_reproducible() -> None:
    all_seeds = seeds()
    assert make_mutant(all_seeds, SEED, 7).files == make_mutant(all_seeds, SEED, 7).files


def test_a_large_config_with_aliases_loads_fast(tmp_path: Path) -> None:
    """The limits on aliases and nesting leave big honest configs alone: 1,000 devices of one
    model, their poll settings shared through an anchor."""
    lines = ["gateway: {id: gw-1}", "models:", "  meter:", "    points:"]
    lines += [
        f"      - {{id: p{i}, type: int16, unit: CEL, modbus: {{address: 'hr:{i}'}}}}" for i in range(100)
    ]
    lines += ["devices:"]
    for d in range(1000):
        settings = "poll: &poll {interval: 1s, backoff_max: 30s}" if d == 0 else "poll: *poll"
        lines.append(
            f"  - {{id: meter-{d}, model: meter, protocol: modbus-tcp, {settings},"
            f" connection: {{host: 10.0.{d // 250}.{d % 250 + 1}}}}}"
        )
    config = tmp_path / "config.yaml"
    config.write_text("\n".join(lines) + "\n")
    start = time.perf_counter()
    loaded = load_config(config, env={})
    assert len(loaded.devices) == 1000 and loaded.config.devices[999].poll.backoff_max == 30.0
    assert time.perf_counter() - start < 10


def test_mutants_load_or_report_every_error(tmp_path: Path) -> None:
    report = fuzz(MUTANTS, SEED, tmp_path)
    assert not report.failures, report.summary()
    # the mutants exercised both ends: configs that still load and configs with errors
    assert report.outcomes["errors"] > MUTANTS // 4, report.summary()


def test_mutants_through_the_cli(tmp_path: Path) -> None:
    """A few mutants through `edgegw validate` itself, two at a time: exit 0 or 2, no traceback."""
    all_seeds = seeds()
    chosen: list[tuple[Mutant, Path]] = []
    i = 0
    while len(chosen) < CLI_MUTANTS and i < CLI_MUTANTS * 20:
        mutant = make_mutant(all_seeds, SEED + 1_000_003, i)
        i += 1
        config = mutant.write(tmp_path / f"c{i}")
        if run_in_process(config).escaped:
            continue  # its includes reach outside the folder: not run where globs are not confined
        chosen.append((mutant, config))
    problems = []
    for k in range(0, len(chosen), 2):
        running = [(m, c, run_cli(c)) for m, c in chosen[k : k + 2]]
        for mutant, config, proc in running:
            problem = cli_problem(proc, config)
            if problem:
                problems.append(f"{mutant.name} ({', '.join(mutant.steps)}) in {config.parent}: {problem}")
    assert not problems, "\n\n".join(problems)


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="run many config mutants and count outcomes by class")
    ap.add_argument("count", type=int, nargs="?", default=MUTANTS)
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--timeout", type=float, default=TIMEOUT)
    ap.add_argument("--keep", help="folder that keeps one failing mutant of each class")
    args = ap.parse_args()
    with contextlib.suppress(ImportError, ValueError, OSError):
        import resource

        # an expansion that runs away fails here as MemoryError instead of swapping the machine
        resource.setrlimit(resource.RLIMIT_AS, (3 * 1024**3, resource.RLIM_INFINITY))
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="edgegw-fuzz-"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    result = fuzz(args.count, args.seed, work, args.timeout)
    print(result.summary())
    print(f"\n{time.perf_counter() - started:.1f}s")
    raise SystemExit(1 if result.failures else 0)
