from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import EDGEGW, P, Proc, free_port, start_mosquitto, wait_port


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[tuple[Proc, int]]:
    port = free_port()
    proc = start_mosquitto(tmp_path, port)
    yield proc, port
    proc.kill()


def pytest_terminal_summary(terminalreporter) -> None:  # type: ignore[no-untyped-def]
    from harness import REPORT

    if REPORT:
        terminalreporter.section("delivery under faults")
        for line in REPORT:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def api_plant(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """One running plant shared by the API, metrics, InfluxDB and status page tests."""
    from api_plant import ApiPlant

    plant = ApiPlant(tmp_path_factory.mktemp("api"))
    yield plant
    plant.stop()


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[object]:
    """A 4 MiB tmpfs (root only): fill it for ENOSPC, remount it read-only."""
    from harness import Tmpfs, can_mount

    if not can_mount():
        pytest.skip("mounting a tmpfs needs root")
    fs = Tmpfs(tmp_path / "fs")
    yield fs
    fs.unmount()


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The secondary-node simulator (user ops:pw, prefix P) on a free port; its base URL."""
    port = free_port()
    tmp = tmp_path_factory.mktemp("idnode")
    proc = Proc(
        [*EDGEGW, "simulate", "--idnode", "--port", str(port), "--user", "ops:pw", "--prefix", P],
        tmp / "node.log",
    )
    wait_port(port, 20)
    yield f"http://127.0.0.1:{port}"
    proc.stop()
