"""The arrows between the packages point one way, and a protocol is only its folder.

A small import graph of the source (every `import`, at module level or inside functions; only
`if TYPE_CHECKING:` blocks are left out, since they never run) is checked against the rules of
docs/adding-a-protocol.md. A forbidden import fails with the file, the line and the rule.
"""

from __future__ import annotations

import ast
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("gateway", "drivers", "identifier", "simulators")

# what a protocol plugin, identifier/ and the shared simulator machinery may use of the gateway
CORE = {
    "edgegw.gateway.config.base",
    "edgegw.gateway.config.types",
    "edgegw.gateway.config.source",
    "edgegw.gateway.config.units",
    "edgegw.gateway.dictionary",
    "edgegw.gateway.logs",
    "edgegw.gateway.writeback",
    "edgegw.gateway.normalise",
    "edgegw.gateway.durable_queue",
    "edgegw.gateway.sequences",
    "edgegw.gateway.opcua",  # the OPC UA driver and server share the certificate and types
    "edgegw.gateway.opcua.pki",
    "edgegw.gateway.opcua.types",
}
# what every plugin may use of drivers/ besides its own folder
SHARED_DRIVERS = {"edgegw.drivers.base", "edgegw.drivers.plugin", "edgegw.drivers.serialport"}
SHARED_SIMULATORS = {"edgegw.simulators.faults", "edgegw.simulators.values"}
# the core reaches plugins only through these
PLUGIN_DOORS = {"edgegw.drivers", "edgegw.drivers.base", "edgegw.drivers.plugin", "edgegw.drivers.registry"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(["edgegw", *parts])


def sources() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING"
    )


def imports(name: str, path: Path, known: set[str]) -> Iterator[tuple[str, int]]:
    """(imported module, line) for every import that runs, resolved to the modules of the repo."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]

    def visit(node: ast.AST) -> Iterator[tuple[str, int]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking(child):
                for other in child.orelse:
                    yield from visit(other)
                continue
            if isinstance(child, ast.Import):
                for alias in child.names:
                    yield alias.name, child.lineno
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[: len(base) - child.level + 1]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                subs = [f"{target}.{a.name}" for a in child.names if f"{target}.{a.name}" in known]
                if len(subs) < len(child.names):  # names of the module itself
                    yield target, child.lineno
                for sub in subs:  # `from . import x` imports the module x (its package is loading)
                    yield sub, child.lineno
            yield from visit(child)

    for target, line in visit(tree):
        if target.startswith("edgegw."):
            yield target, line


def graph() -> dict[str, list[tuple[str, int]]]:
    mods = sources()
    known = set(mods)
    return {name: sorted(set(imports(name, path, known))) for name, path in mods.items()}


def plugin_of(module: str) -> str | None:
    """'edgegw.drivers.modbus.tcp' -> 'modbus'; None for the shared modules of drivers/."""
    parts = module.split(".")
    if len(parts) >= 4 and parts[1] == "drivers":
        return parts[2]
    return None


def forbidden(src: str, dst: str) -> str | None:
    """Why `src` must not import `dst`, or None."""
    if dst == src or dst.startswith(src + "."):
        return None
    if src.startswith("edgegw.drivers."):
        mine = plugin_of(src)
        if dst.startswith("edgegw.drivers."):
            if plugin_of(dst) in (None, mine) or dst in SHARED_DRIVERS:
                return None
            return "a plugin uses another plugin's modules only through drivers/ shared modules"
        if dst in CORE or dst in SHARED_SIMULATORS or dst in ("edgegw.gateway", "edgegw.gateway.config"):
            return None
        return "a driver imports only drivers/ and the shared core (config base/types, dictionary, logs, …)"
    if src.startswith("edgegw.identifier."):
        if dst.startswith("edgegw.identifier") or dst in CORE:
            return None
        if dst.startswith("edgegw.gateway") and dst in ("edgegw.gateway", "edgegw.gateway.config"):
            return None
        return "identifier/ imports only itself and the shared core"
    if src.startswith("edgegw.simulators."):
        if dst.startswith("edgegw.simulators") or dst in CORE or dst in PLUGIN_DOORS:
            return None
        if dst in ("edgegw.gateway", "edgegw.gateway.config", "edgegw.gateway.config.loader"):
            return None
        if dst.startswith("edgegw.identifier"):
            return None  # the secondary-node simulator checks identifiers as a node does
        return "simulators/ reach protocols through the registry and never the runtime or the sinks"
    if src.startswith("edgegw.gateway"):
        if dst.startswith("edgegw.drivers") and dst not in PLUGIN_DOORS:
            return "the core reaches protocols only through drivers/registry.py and drivers/plugin.py"
        if src in CORE and dst.startswith("edgegw.gateway") and dst not in CORE:
            if dst in ("edgegw.gateway", "edgegw.gateway.config"):
                return None
            return "the shared core imports nothing of the runtime, the sinks, the API or the CLI"
        if src.startswith("edgegw.gateway.sinks.") and dst.split(".")[2:3] in (
            ["runtime"],
            ["api"],
            ["cli"],
            ["doctor"],
        ):
            return "a sink never imports the runtime, the API or the CLI"
    return None


def test_imports_follow_the_layers() -> None:
    mods = sources()
    broken = []
    for src, targets in graph().items():
        for dst, line in targets:
            why = forbidden(src, dst)
            if why is not None:
                broken.append(f"{mods[src].relative_to(ROOT)}:{line}: imports {dst}: {why}")
    assert not broken, "\n".join(broken)


def test_no_import_cycles() -> None:
    """Strongly connected components of the module graph (Tarjan); a package's lazy __init__
    (PEP 562 __getattr__) imports nothing at module level and so is not an edge."""
    g = {src: [d for d, _ in targets if d in sources()] for src, targets in graph().items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    cycles: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in g.get(v, []):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in g:
        if v not in index:
            strong(v)
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_the_rules_catch_a_forbidden_import() -> None:
    assert forbidden("edgegw.drivers.modbus.tcp", "edgegw.gateway.runtime") is not None
    assert forbidden("edgegw.drivers.modbus.tcp", "edgegw.drivers.opcua.nodes") is not None
    assert forbidden("edgegw.gateway.runtime", "edgegw.drivers.modbus.tcp") is not None
    assert forbidden("edgegw.identifier.rules", "edgegw.gateway.sinks.mqtt") is not None
    assert forbidden("edgegw.simulators.runner", "edgegw.gateway.runtime") is not None
    assert forbidden("edgegw.gateway.dictionary", "edgegw.gateway.runtime") is not None
    assert forbidden("edgegw.drivers.modbus.tcp", "edgegw.drivers.base") is None


def test_every_package_is_installed_under_edgegw() -> None:
    """pyproject lists the packages one by one (package-dir maps edgegw.X to the folder X): a
    new folder missing from the list would be left out of the wheel."""
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    folders = {module_name(p) for pkg in PACKAGES for p in (ROOT / pkg).rglob("__init__.py")}
    assert folders == listed


def test_no_plain_top_level_imports() -> None:
    """Nothing imports `gateway`, `drivers`, … by their folder names: installed, only edgegw.* exists."""
    plain = re.compile(r"^\s*(from|import) (gateway|drivers|identifier|simulators)[. ]", re.M)
    hits = [
        str(p.relative_to(ROOT))
        for pkg in (*PACKAGES, "tests", "bench", "scripts")
        for p in (ROOT / pkg).rglob("*.py")
        if plain.search(p.read_text())
    ]
    assert not hits


def test_the_wheel_installs_only_under_edgegw(tmp_path: Path) -> None:
    """What `pip install edgegw` puts into site-packages: edgegw/… and its dist-info, nothing
    named plain `gateway` or `drivers`; the status page and every plugin package inside."""
    import subprocess
    import sys
    import zipfile

    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--wheel-dir", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("edgegw-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/", 1)[0] for n in names}
    assert tops == {"edgegw", next(t for t in tops if t.endswith(".dist-info"))}
    assert "edgegw/gateway/api/status.html" in names
    assert "edgegw/__init__.py" not in names  # a namespace: other edgegw.* distributions may join it
    for plugin in ("modbus", "opcua", "serial"):
        assert f"edgegw/drivers/{plugin}/plugin.py" in names
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "edgegw = edgegw.gateway.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()
