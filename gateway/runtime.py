"""The running gateway: wires drivers, scheduler, normalisation and sinks, and stops cleanly.

SIGTERM/SIGINT stop it: polling stops, the MQTT sink flushes within `flush_timeout`, statuses
go offline, exit 0. SIGHUP reloads the config file: devices added, removed or changed are
(re)started, the others keep polling untouched; queued data and `seq` are kept. A config that
does not validate is refused with its errors logged, and the running config stays.
"""

from __future__ import annotations

import asyncio
import fcntl
import gc
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgegw.drivers.base import WriteFailed
from edgegw.drivers.registry import plugin_for
from edgegw.identifier.client import from_settings
from edgegw.identifier.registrar import Registrar
from edgegw.identifier.rules import RuleSet, engineering

from . import __version__, logs, systemd
from .alarms import AlarmEngine
from .computed import Board, Computer
from .config import ConfigError, LoadedConfig, load_config
from .config.checks import ResolvedDevice
from .durable_queue import DurableQueue, QueueUnavailable
from .logs import event
from .normalise import Normaliser, Sample
from .scheduler import DeviceRunner, PollGroup
from .sinks import SINKS, DeviceInfo, Sink, SinkContext, create
from .writeback import CheckedWrite, WriteRejected, check_write

if TYPE_CHECKING:
    from .sinks.influxdb import InfluxSink
    from .sinks.mqtt import MqttSink

log = logging.getLogger("edgegw")
LOCK_FILE = "edgegw.lock"


class AlreadyRunning(Exception):
    pass


def _device_shape(loaded: LoadedConfig, resolved: ResolvedDevice) -> tuple[Any, ...]:
    """Everything that decides how a device is polled and published; equal means untouched."""
    return (
        loaded.config.devices[resolved.index],
        resolved.points,
        resolved.plan,
        [a.alarm for a in resolved.alarms],
        loaded.config.gateway.location,
        loaded.relative("."),
    )


def _location(loaded: LoadedConfig, resolved: ResolvedDevice) -> dict[str, Any]:
    dev = loaded.config.devices[resolved.index]
    return {**loaded.config.gateway.location.model_dump(exclude_none=True), **(dev.location or {})}


def _api_socket(cfg: Any) -> tuple[Any, ...] | None:
    return None if cfg.api is None else (cfg.api.listen, cfg.api.tls)


class Gateway:
    def __init__(self, loaded: LoadedConfig):
        self.loaded = loaded
        self.cfg = loaded.config
        self.runners: dict[str, DeviceRunner] = {}
        self.queue: DurableQueue | None = None
        self.sinks: dict[str, Sink] = {}  # by their key under northbound:, in SINKS order
        self.registrar: Registrar | None = None
        self.api: Any = None  # gateway.api.ApiServer, imported only when configured
        self.board = Board()  # the latest values of points that other devices' expressions name
        self.alarms: AlarmEngine | None = None
        self.samples = 0
        self.point_values = 0
        self.stopping = asyncio.Event()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._shapes: dict[str, tuple[Any, ...]] = {}
        self._reload_lock = asyncio.Lock()
        self._index: dict[str, ResolvedDevice] = {}
        self._index_of: LoadedConfig | None = None

    def _computer(self, loaded: LoadedConfig, resolved: ResolvedDevice) -> Computer | None:
        if len(resolved.read_points) == len(resolved.points):
            return None
        devices = [d.id for d in loaded.config.devices]
        return Computer(
            loaded.config.devices[resolved.index].id, resolved.points, devices, self.board, resolved.shared
        )

    def _emit(self, sample: Sample) -> None:
        self.board.put(sample.device, sample.readings, sample.ts)
        self.samples += 1
        self.point_values += len(sample.readings)
        for sink in self.sinks.values():
            sink.submit(sample)
        if self.alarms is not None and sample.device in self.alarms.devices:
            runner = self.runners.get(sample.device)
            if runner is not None:
                self.alarms.on_readings(sample.device, runner.latest)
        if self.registrar is not None:
            runner = self.runners.get(sample.device)
            if runner is not None:
                self.registrar.on_sample(sample.device, runner.latest, sample.ts, self._lookup)

    def _lookup(self, device: str, point: str) -> str:
        """The latest engineering value of a point, for identifier rules ('' if none yet)."""
        runner = self.runners.get(device)
        if runner is None:
            return ""
        for r in runner.latest:
            if r.id == point:
                return engineering(r.v) if r.v is not None else ""
        return ""

    @property
    def mqtt(self) -> MqttSink | None:
        """The MQTT sink, for its own metrics and status (None when not configured)."""
        return self.sinks.get("mqtt")  # type: ignore[return-value]

    @property
    def influx(self) -> InfluxSink | None:
        return self.sinks.get("influxdb")  # type: ignore[return-value]

    def _alarm_event(self, device: str, body: dict[str, Any]) -> None:
        self._publish_event(f"{device}/alarm", body)

    def _alarm_set(self, device: str, active: list[dict[str, Any]]) -> None:
        for sink in self.sinks.values():
            sink.device_alarms(device, active)

    def _publish_event(self, suffix: str, body: dict[str, Any]) -> None:
        for sink in self.sinks.values():
            sink.publish_event(suffix, body)

    def _status(self, device: str, state: str, reason: str | None) -> None:
        for sink in self.sinks.values():
            sink.device_status(device, state, reason)

    def _sink_context(self, loaded: LoadedConfig) -> SinkContext:
        assert self.queue is not None
        return SinkContext(
            loaded.gateway_id,
            self.queue,
            loaded.config.queue.commit_interval,
            loaded.relative,
            self.write_point,
            loaded.data_dir,
        )

    def _sink_settings(self, loaded: LoadedConfig) -> dict[str, Any]:
        """The configured sinks' settings, by their key under northbound:."""
        nb = loaded.config.northbound
        return {name: s for name in SINKS if (s := getattr(nb, name, None)) is not None}

    def _lock(self, data_dir: Path) -> None:
        # Two gateways on one data_dir would interleave seq numbers and steal each other's
        # MQTT session: refuse the second one.
        self._lock_file = open(data_dir / LOCK_FILE, "a+")  # noqa: SIM115
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AlreadyRunning(f"another edgegw is running with data_dir {data_dir}") from None
        self._lock_file.truncate(0)
        self._lock_file.write(f"{os.getpid()}\n")
        self._lock_file.flush()

    async def start(self) -> None:
        data_dir = self.loaded.data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        self._lock(data_dir)
        event(
            log,
            logging.INFO,
            "starting",
            version=__version__,
            gateway=self.cfg.gateway.id,
            config=str(self.loaded.path),
            data_dir=str(data_dir),
        )
        sinks = self._sink_settings(self.loaded)
        if sinks or self.cfg.identifier is not None:
            buf = self.cfg.queue
            self.queue = DurableQueue(
                data_dir / "queue.sqlite3",
                buf.max_bytes,
                buf.fsync,
                droppable=frozenset({"mqtt", "influxdb", "sparkplug"}),
            )
            if self.queue.depth:
                event(
                    log,
                    logging.INFO,
                    "queued messages from the previous run will be sent",
                    count=self.queue.depth,
                    bytes=self.queue.bytes,
                )
        for name, settings in sinks.items():  # a sink's library is imported only when configured
            sink = create(name, settings, self._sink_context(self.loaded))
            self.sinks[name] = sink
            await sink.start()
        if not sinks:
            event(log, logging.WARNING, "no sink configured: values are polled but not published")
        for warning in self.loaded.warnings:
            event(log, logging.WARNING, "config", warning=str(warning))
        if self.cfg.identifier is not None:
            assert self.queue is not None
            await self._start_registrar()
        if self.cfg.api is not None:
            from .api import ApiServer  # FastAPI is imported only when the API is configured

            self.api = ApiServer(self, self.loaded.relative)
            await self.api.start()
        self.alarms = AlarmEngine(data_dir / "alarms.json", self._alarm_event, self._alarm_set, self.board)
        for resolved in self.loaded.devices:
            if self.cfg.devices[resolved.index].enabled:
                self._start_device(self.loaded, resolved)
        event(
            log,
            logging.INFO,
            "polling",
            devices=len(self.runners),
            points=sum(len(r.normaliser.entries) for r in self.runners.values()),
        )

    async def _start_registrar(self) -> None:
        ident = self.cfg.identifier
        assert ident is not None and self.queue is not None
        node = ident.node
        client = from_settings(node, self.loaded.relative)
        registrar = Registrar(
            self.queue,
            client,
            RuleSet(ident.rules, node.prefix),
            self._publish_event,
            ident.batch_size,
            max_queued=ident.max_queued,
        )
        problems = await registrar.check_templates()
        if problems:
            index = {r.name: i for i, r in enumerate(ident.rules)}
            issues = [
                self.loaded.source.issue(("identifier", "rules", index[name], "values"), msg)
                for name, msg in problems
            ]
            await client.close()
            raise ConfigError(issues)
        self.registrar = registrar
        await registrar.start()
        event(
            log,
            logging.INFO,
            "identifier rules active",
            node=node.url,
            kind=node.kind,
            rules=len(ident.rules),
        )

    def _device_info(self, loaded: LoadedConfig, resolved: ResolvedDevice) -> DeviceInfo:
        dev = loaded.config.devices[resolved.index]
        return DeviceInfo(dev.id, dev.model, dev.protocol, _location(loaded, resolved), resolved.points)

    def _start_device(self, loaded: LoadedConfig, resolved: ResolvedDevice) -> None:
        dev = loaded.config.devices[resolved.index]
        info = self._device_info(loaded, resolved)
        for sink in self.sinks.values():
            sink.add_device(info)
        group = PollGroup(dev.id, dev.poll.interval, dev.poll.backoff_max, dev.poll.offline_after)
        runner = DeviceRunner(
            group,
            plugin_for(dev.protocol).build_driver(loaded, dev, resolved.read_points, resolved.plan),
            Normaliser(
                resolved.points, dev.publish, dev.heartbeat, resolved.shared, self._computer(loaded, resolved)
            ),
            self._emit,
            self._status,
        )
        self.runners[dev.id] = runner
        self._shapes[dev.id] = _device_shape(loaded, resolved)
        if self.alarms is not None and (resolved.alarms or dev.id in self.alarms.devices):
            self.alarms.add_device(
                dev.id, resolved.alarms, resolved.points, [d.id for d in loaded.config.devices]
            )
        self._tasks[dev.id] = asyncio.create_task(
            logs.supervise(f"poll-{dev.id}", runner.run, runner.crashed), name=f"poll-{dev.id}"
        )

    async def _stop_device(self, device: str) -> None:
        task = self._tasks.pop(device)
        task.cancel()
        done, _ = await asyncio.wait([task], timeout=2.0)
        if not done:  # a driver that ignores cancellation must not hold up the others
            event(log, logging.WARNING, "device task did not stop within 2 s; left behind", device=device)
        runner = self.runners.pop(device)
        self._shapes.pop(device, None)
        try:
            await asyncio.wait_for(runner.driver.close(), 2.0)
        except (TimeoutError, OSError) as exc:
            event(
                log, logging.WARNING, "closing the device connection failed", device=device, error=repr(exc)
            )

    # ---- write-back (HTTP PUT and MQTT set) ----

    def resolved(self, device: str) -> ResolvedDevice | None:
        """A configured device by id (one dict per loaded config: scrapes and the status feed
        look devices up for every device each time)."""
        if self._index_of is not self.loaded:
            self._index = {self.cfg.devices[r.index].id: r for r in self.loaded.devices}
            self._index_of = self.loaded
        return self._index.get(device)

    def protocol_of(self, device: str) -> str:
        r = self.resolved(device)
        return self.cfg.devices[r.index].protocol if r is not None else "unknown"

    async def write_point(self, device: str, point: str, value: object, who: str, via: str) -> CheckedWrite:
        """Check a value against the dictionary and write it through the device's driver,
        between its polls. Raises WriteRejected (before the device), WriteFailed or TimeoutError."""
        resolved = self.resolved(device)
        if resolved is None:
            raise WriteRejected("unknown", f"no device '{device}' in the configuration")
        entry = next((e for e in resolved.points if e.id == point), None)
        if entry is None:
            raise WriteRejected("unknown", f"device '{device}' has no point '{point}'")
        runner = self.runners.get(device)
        if runner is None:
            raise WriteRejected("read_only", f"device '{device}' is disabled")
        checked = check_write(entry, value)
        timeout = 2 * runner.driver.timeout + 1.0
        try:
            await runner.write(point, checked.raw, timeout)
        except (WriteFailed, TimeoutError) as exc:
            event(
                log,
                logging.WARNING,
                "write failed",
                device=device,
                point=point,
                value=checked.value,
                by=who,
                via=via,
                error=str(exc) or "timeout",
            )
            raise
        event(log, logging.INFO, "write", device=device, point=point, value=checked.value, by=who, via=via)
        return checked

    def not_ready(self) -> list[str]:
        """Why the gateway is not ready (empty when it is): sinks that are not connected."""
        out = []
        if self.queue is not None and self.queue.failing is not None:
            out.append(self.queue.failing)
        if self.registrar is not None and self.registrar.refusing:
            out.append(self.registrar.refusing)
        out += [p for sink in self.sinks.values() if (p := sink.problem()) is not None]
        if self.stopping.is_set():
            out.append("stopping")
        return out

    async def reload(self) -> bool:
        """Apply the config file as it is now. Returns False (and changes nothing) if refused."""
        async with self._reload_lock:
            path = self.loaded.path
            try:
                new = load_config(path)
            except ConfigError as exc:
                for issue in exc.issues:
                    event(log, logging.ERROR, "config error", error=str(issue))
                event(
                    log,
                    logging.ERROR,
                    "reload refused: the config does not validate; the running config stays",
                    errors=len(exc.issues),
                )
                return False
            except OSError as exc:
                event(log, logging.ERROR, "reload refused: cannot read the config", error=str(exc))
                return False
            old_cfg = self.cfg
            cfg = new.config
            needs_restart = [
                key
                for key, before, after in (
                    ("gateway.id", old_cfg.gateway.id, cfg.gateway.id),
                    ("gateway.data_dir", self.loaded.data_dir, new.data_dir),
                    ("northbound.mqtt", old_cfg.northbound.mqtt is None, cfg.northbound.mqtt is None),
                    ("identifier", old_cfg.identifier, cfg.identifier),
                    ("api.listen/api.tls", _api_socket(old_cfg), _api_socket(cfg)),
                )
                if before != after
            ]
            if needs_restart:
                event(
                    log,
                    logging.ERROR,
                    "reload refused: these changes need a restart; the running config stays",
                    keys=",".join(needs_restart),
                )
                return False
            if cfg.gateway.log_level != old_cfg.gateway.log_level:
                logs.set_level(cfg.gateway.log_level)
            wanted = {cfg.devices[r.index].id: r for r in new.devices if cfg.devices[r.index].enabled}
            removed = [d for d in self.runners if d not in wanted]
            added = [d for d in wanted if d not in self.runners]
            changed = [
                d
                for d, r in wanted.items()
                if d in self.runners and self._shapes.get(d) != _device_shape(new, r)
            ]
            for device in removed + changed:
                await self._stop_device(device)
            for device in removed:
                for sink in self.sinks.values():
                    sink.remove_device(device, "removed from the configuration")
                if self.alarms is not None:
                    self.alarms.remove_device(device)
            old_sinks, new_sinks = self._sink_settings(self.loaded), self._sink_settings(new)
            if new.config.queue != old_cfg.queue and self.queue is not None:
                self.queue.configure(cfg.queue.max_bytes, cfg.queue.fsync)
            self.loaded, self.cfg = new, cfg
            changed_sinks = [n for n in SINKS if old_sinks.get(n) != new_sinks.get(n)]
            for name in changed_sinks:
                await self._replace_sink(name, new_sinks.get(name), new)
            for device in added + changed:
                self._start_device(new, wanted[device])
            event(
                log,
                logging.INFO,
                "config reloaded",
                added=",".join(added) or "-",
                removed=",".join(removed) or "-",
                restarted=",".join(changed) or "-",
                untouched=len(self.runners) - len(added) - len(changed),
                sinks_restarted=",".join(changed_sinks) or "-",
            )
            return True

    async def _replace_sink(self, name: str, settings: Any, new: LoadedConfig) -> None:
        """A sink's settings changed at a reload (or it was added or removed): what is queued
        stays queued for its successor."""
        if self.queue is None:
            event(log, logging.ERROR, f"adding the {name} sink to a gateway without a queue needs a restart")
            return
        old = self.sinks.get(name)
        if old is not None and settings is None:
            del self.sinks[name]
            await old.stop([])
            return
        ctx = self._sink_context(new)
        try:
            sink = await old.replace(settings, ctx) if old is not None else create(name, settings, ctx)
        except Exception as exc:  # e.g. a TLS file that is not there: the running sink stays
            event(
                log,
                logging.ERROR,
                f"reload: the new northbound.{name} settings cannot be used; the running sink stays",
                error=f"{type(exc).__name__}: {exc}"[:300],
            )
            return
        for r in new.devices:
            if new.config.devices[r.index].id in self.runners:
                sink.add_device(self._device_info(new, r))
        self.sinks = {n: self.sinks[n] if n != name else sink for n in SINKS if n in self.sinks or n == name}
        await sink.start()

    async def stop(self) -> None:
        self.stopping.set()
        if self.api is not None:
            await self.api.stop()
        devices = list(self.runners)
        await asyncio.gather(*(self._stop_device(d) for d in devices))
        if self.registrar is not None:
            await self.registrar.stop()
        for sink in reversed(self.sinks.values()):
            await sink.stop(devices)
        if self.queue is not None:
            self.queue.close()
        event(log, logging.INFO, "stopped")


GC_THRESHOLD = 20_000


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop when it is installed (and EDGEGW_EVENT_LOOP is not "asyncio"),
    otherwise asyncio's own."""
    if os.environ.get("EDGEGW_EVENT_LOOP", "") == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


async def run(loaded: LoadedConfig) -> int:
    gw = Gateway(loaded)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    reloads: set[asyncio.Task[bool]] = set()

    def on_hup() -> None:
        event(log, logging.INFO, "reload requested (SIGHUP)")
        systemd.reloading()
        task = asyncio.create_task(gw.reload(), name="reload")
        reloads.add(task)
        task.add_done_callback(reloads.discard)
        task.add_done_callback(lambda _t: systemd.notify("READY=1"))

    loop.add_signal_handler(signal.SIGHUP, on_hup)
    try:
        await gw.start()
    except (AlreadyRunning, QueueUnavailable) as exc:
        event(log, logging.ERROR, str(exc))
        await gw.stop()
        return 1
    except OSError as exc:  # e.g. the HTTP API's port is taken
        event(log, logging.ERROR, "cannot start", error=str(exc))
        await gw.stop()
        return 1
    except ConfigError as exc:
        for issue in exc.issues:
            print(issue, file=sys.stderr)
        event(
            log,
            logging.ERROR,
            "the config does not fit the identifier node's templates",
            errors=len(exc.issues),
        )
        await gw.stop()
        return 2
    # What start-up built (config, dictionary, drivers) lives as long as the process: keep it
    # out of the cyclic collector's full passes, which would otherwise walk it every time and
    # stall the event loop for tens of milliseconds at 100,000 values per second.
    gc.collect()
    gc.freeze()
    # Each poll's readings live until the next poll (they are the device's latest), so at the
    # default threshold (700 allocations) every young collection finds 100,000 of them alive
    # and moves them on, and the older generations fill with them: 7 % of the time went to
    # collecting at 100,000 values per second. The hot path makes no reference cycles, so
    # collecting every 20,000 allocations (about once a second) loses nothing.
    gc.set_threshold(GC_THRESHOLD, 10, 10)
    systemd.notify("READY=1", f"STATUS=polling {len(gw.runners)} devices")
    interval = systemd.watchdog_interval()
    watchdog = asyncio.create_task(systemd.keep_alive(interval), name="watchdog") if interval else None
    await stop.wait()
    systemd.notify("STOPPING=1")
    if watchdog is not None:
        watchdog.cancel()
    event(log, logging.INFO, "stopping")
    for task in reloads:
        task.cancel()
    await gw.stop()
    return 0
