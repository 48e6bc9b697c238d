"""`queue:` is where the durable queue is sized; `northbound.mqtt.buffer`, its old place, still
works with a deprecation warning, and giving a key in both places is an error."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from edgegw.gateway.config import ConfigError, load_config

HEAD = """gateway: {id: gw-q, data_dir: ./var}
models:
  m: {points: [{id: a, type: int16, modbus: {address: "hr:1"}}]}
devices:
  - {id: d1, protocol: modbus-tcp, model: m, connection: {host: 127.0.0.1}}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(HEAD + text)
    return path


def test_queue_sizes_the_buffer_of_an_influxdb_only_gateway(tmp_path: Path) -> None:
    loaded = load_config(
        write(
            tmp_path,
            "northbound:\n  influxdb: {url: 'http://127.0.0.1:8086', org: o, bucket: b}\n"
            "queue: {max_bytes: 64MiB, fsync: full}\n",
        )
    )
    assert loaded.config.queue.max_bytes == 64 * 1024**2 and loaded.config.queue.fsync == "full"
    assert loaded.warnings == []


def test_the_old_buffer_keys_move_to_their_new_places_with_a_warning(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "northbound:\n  mqtt:\n    host: 127.0.0.1\n"
        "    buffer: {max_bytes: 32MiB, commit_interval: 50ms, inflight: 64, replay: ordered}\n",
    )
    loaded = load_config(path)
    assert loaded.config.queue.max_bytes == 32 * 1024**2 and loaded.config.queue.commit_interval == 0.05
    mq = loaded.config.northbound.mqtt
    assert mq is not None and mq.inflight == 64 and mq.replay == "ordered"
    (warning,) = loaded.warnings
    assert (
        str(warning)
        .replace(str(path), "config.yaml")
        .startswith("config.yaml:9: northbound.mqtt.buffer: deprecated: move max_bytes to queue")
    )
    result = subprocess.run(
        [sys.executable, "-m", "edgegw.gateway.cli", "validate", "-c", str(path)],
        capture_output=True,
        text=True,
    )
    assert (
        result.returncode == 0 and f"warning: {path}:9: northbound.mqtt.buffer: deprecated" in result.stderr
    )


def test_a_key_in_both_places_is_an_error(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "northbound:\n  mqtt: {host: 127.0.0.1, inflight: 8, buffer: {inflight: 64, max_bytes: 8MiB}}\n"
        "queue: {max_bytes: 16MiB}\n",
    )
    with pytest.raises(ConfigError) as err:
        load_config(path)
    messages = sorted(str(i).replace(str(path), "config.yaml") for i in err.value.issues)
    assert messages == [
        "config.yaml:7: northbound.mqtt.buffer.inflight: also given in its new place (northbound.mqtt.inflight): keep one",
        "config.yaml:7: northbound.mqtt.buffer.max_bytes: also given in its new place (queue.max_bytes): keep one",
    ]
