"""The running gateway: wires drivers, scheduler, normalisation and sinks, and stops cleanly."""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import signal
from pathlib import Path
from typing import Any

from . import __version__
from .config import LoadedConfig
from .durable_queue import DurableQueue
from .logs import event
from .normalise import Normaliser, Sample
from .scheduler import DeviceRunner, PollGroup
from .sinks.mqtt import MqttSink
from .wiring import build_driver

log = logging.getLogger("edgegw")


class AlreadyRunning(Exception):
    pass


class Gateway:
    def __init__(self, loaded: LoadedConfig):
        self.loaded = loaded
        self.cfg = loaded.config
        self.runners: dict[str, DeviceRunner] = {}
        self.queue: DurableQueue | None = None
        self.mqtt: MqttSink | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def _emit(self, sample: Sample) -> None:
        if self.mqtt is not None:
            self.mqtt.submit(sample)

    def _status(self, device: str, state: str, reason: str | None) -> None:
        if self.mqtt is not None:
            self.mqtt.device_status(device, state, reason)

    def _lock(self, data_dir: Path) -> None:
        # Two gateways on one data_dir would interleave seq numbers and steal each other's
        # MQTT session: refuse the second one.
        self._lock_file = open(data_dir / "edgegw.lock", "w")  # noqa: SIM115
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AlreadyRunning(f"another edgegw is running with data_dir {data_dir}") from None
        self._lock_file.write(f"{os.getpid()}\n")
        self._lock_file.flush()

    async def start(self) -> None:
        data_dir = self.loaded.data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        self._lock(data_dir)
        mq = self.cfg.northbound.mqtt
        event(
            log,
            logging.INFO,
            "starting",
            version=__version__,
            gateway=self.cfg.gateway.id,
            config=str(self.loaded.path),
            data_dir=str(data_dir),
        )
        if mq is not None:
            self.queue = DurableQueue(data_dir / "queue.sqlite3", mq.buffer.max_bytes, mq.buffer.fsync)
            if self.queue.depth:
                event(
                    log,
                    logging.INFO,
                    "queued messages from the previous run will be sent",
                    count=self.queue.depth,
                    bytes=self.queue.bytes,
                )
            self.mqtt = MqttSink(mq, self.cfg.gateway.id, self.queue, self.loaded.relative)
            await self.mqtt.start()
        else:
            event(log, logging.WARNING, "no northbound sink configured: values are polled but not published")
        location = self.cfg.gateway.location.model_dump(exclude_none=True)
        for resolved in self.loaded.devices:
            dev = self.cfg.devices[resolved.index]
            if not dev.enabled:
                continue
            if self.mqtt is not None:
                meta: dict[str, Any] = {
                    "model": dev.model,
                    "protocol": dev.protocol,
                    "location": {**location, **(dev.location or {})},
                }
                self.mqtt.add_device(dev.id, meta, resolved.points)
            group = PollGroup(dev.id, dev.poll.interval, dev.poll.backoff_max, dev.poll.offline_after)
            runner = DeviceRunner(
                group,
                build_driver(self.loaded, resolved),
                Normaliser(resolved.points, dev.publish, dev.heartbeat),
                self._emit,
                self._status,
            )
            self.runners[dev.id] = runner
            self._tasks.append(asyncio.create_task(runner.run(), name=f"poll-{dev.id}"))
        event(
            log,
            logging.INFO,
            "polling",
            devices=len(self.runners),
            points=sum(len(r.normaliser.entries) for r in self.runners.values()),
        )

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for r in self.runners.values():
            await r.driver.close()
        if self.mqtt is not None:
            await self.mqtt.stop(list(self.runners))
        if self.queue is not None:
            self.queue.close()
        event(log, logging.INFO, "stopped")


async def run(loaded: LoadedConfig) -> int:
    gw = Gateway(loaded)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await gw.start()
    except AlreadyRunning as exc:
        event(log, logging.ERROR, str(exc))
        return 1
    await stop.wait()
    event(log, logging.INFO, "stopping")
    await gw.stop()
    return 0
