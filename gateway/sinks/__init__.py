"""Northbound sinks: one package or module per sink, one `Sink` interface, one registry.

The runtime fans every sample, device status and event out to the configured sinks through
this interface only. A sink module offers `create(settings, ctx) -> Sink` and is imported only
when `northbound.<name>` is configured (influxdb-client is not loaded for an MQTT-only gateway).
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ..dictionary import DictionaryEntry
    from ..durable_queue import DurableQueue
    from ..normalise import Sample

# northbound.<key> -> the module that serves it, in the order samples are handed out
SINKS = {
    "mqtt": "edgegw.gateway.sinks.mqtt",
    "influxdb": "edgegw.gateway.sinks.influxdb",
    "sparkplug": "edgegw.gateway.sinks.sparkplug",
    "opcua_server": "edgegw.gateway.sinks.opcua_server",
}


# (device, point, value, who, via) -> the checked write; raises WriteRejected, WriteFailed, TimeoutError
WritePoint = Callable[[str, str, object, str, str], Awaitable[object]]


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """What a sink learns of a device when it starts polling."""

    id: str
    model: str | None
    protocol: str
    location: dict[str, Any]
    points: list[DictionaryEntry]


@dataclass(frozen=True, slots=True)
class SinkContext:
    gateway_id: str
    queue: DurableQueue  # what must not be lost waits here while the peer is away
    commit_interval: float  # the queue's batch window (queue.commit_interval)
    relative: Callable[[str], Path]  # a file named in the config, relative to the config
    write: WritePoint  # the gateway's one write path (checks, device, log), for sinks that take writes
    data_dir: Path = Path(".")  # for state a sink keeps beside the queue (Sparkplug's bdSeq)


class Sink(Protocol):
    name: str  # its key under northbound:

    def add_device(self, device: DeviceInfo) -> None:
        """The device starts (or restarts with new settings) polling."""
        ...

    def remove_device(self, device: str, reason: str) -> None:
        """The device left the configuration."""
        ...

    def submit(self, sample: Sample) -> None:
        """Take one sample. Never blocks and never raises: a slow peer never slows polling."""
        ...

    def device_status(self, device: str, state: str, reason: str | None) -> None: ...

    def publish_event(self, suffix: str, body: dict[str, Any]) -> None:
        """An event of the gateway (identifier results, write results, alarms) under `P/G/<suffix>`."""
        ...

    def device_alarms(self, device: str, active: list[dict[str, Any]]) -> None:
        """The device's active alarms now (after each change); a sink without alarms ignores it."""
        ...

    def problem(self) -> str | None:
        """Why the sink is not delivering now (for /readyz), or None."""
        ...

    async def start(self) -> None: ...

    async def stop(self, devices: list[str]) -> None:
        """Flush within the sink's flush time; `devices` were polling until now."""
        ...

    async def replace(self, settings: Any, ctx: SinkContext) -> Sink:
        """New settings at a reload: the successor (not started), nothing queued lost."""
        ...


def create(name: str, settings: Any, ctx: SinkContext) -> Sink:
    sink: Sink = importlib.import_module(SINKS[name]).create(settings, ctx)
    return sink
