"""InfluxDB sink (influxdb-client, InfluxDB v2 write API): history beside MQTT.

Line protocol: the measurement is the device's model (the device id when it has none); tags
are gateway, device, quality and the location (gateway's, overridden by the device's); one
field per point. Points of one sample are written as one line per quality (good, uncertain);
`bad` points have no value and are not written (their reason is on MQTT and the HTTP API).
A field's type is fixed by the dictionary (a scaled integer point is a float field), so a
series never changes type.

Batching and memory: lines collect in memory up to `batch_size` or for `flush_interval`, then
the batch is deflated into the gateway's durable queue (stream `influxdb`, same file as MQTT),
and a sender writes queued batches oldest first. So memory holds at most one batch; while
InfluxDB is away the batches wait on disk and count toward `queue.max_bytes`, beyond which the
oldest data is dropped and counted (`edgegw_queue_dropped_total`). Failures: network errors,
timeouts, 429 and 5xx retry with capped exponential backoff (Retry-After honoured); 401/403/404
(token, org or bucket wrong) also retry, logged at a rate limit, so the data survives until the
config is fixed; 400/413/422 (InfluxDB refuses the data itself) drop that batch with the
server's message, because no retry can succeed.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import sqlite3
import time
import zlib
from typing import Any

from edgegw.drivers.base import INT_LIMITS
from influxdb_client import InfluxDBClient, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.rest import ApiException

from ...config.schema import InfluxSettings
from ...dictionary import DictionaryEntry, visible
from ...durable_queue import DurableQueue
from ...logs import RateLimited, event, report_crash, supervise
from ...normalise import Sample
from .. import DeviceInfo, SinkContext

log = logging.getLogger("edgegw.influxdb")
STREAM = "influxdb"
_PERMANENT = {400, 413, 422}

for _name in ("influxdb_client", "urllib3"):
    logging.getLogger(_name).setLevel(logging.CRITICAL)


def _escape_key(text: str) -> str:
    """Measurement names, tag keys and values, field keys: escape comma, equals and space."""
    return text.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def _escape_measurement(text: str) -> str:
    return text.replace("\\", "\\\\").replace(",", "\\,").replace(" ", "\\ ")


def _string_field(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def field_kind(entry: DictionaryEntry) -> str:
    """float | int | bool | string: the field type a point always has."""
    if entry.type == "bool":
        return "bool"
    if entry.type == "string":
        return "string"
    if entry.type in INT_LIMITS and entry.scale == 1.0 and entry.offset == 0.0 and entry.type != "uint64":
        return "int"
    return "float"


def format_field(kind: str, value: object) -> str | None:
    """The field's text, or None for a value that is not a scalar of the field's kind (an OPC
    UA array, a structure, a non-finite float): it is skipped, never a crash."""
    if kind == "string":
        return _string_field(value) if isinstance(value, str) else None
    if not isinstance(value, bool | int | float):
        return None
    if kind == "bool":
        return "true" if value else "false"
    if kind == "int":
        return f"{int(value)}i" if not isinstance(value, float) or value.is_integer() else None
    v = float(value)
    return repr(v) if math.isfinite(v) else None


class DeviceLines:
    """Precomputed line heads and field encodings for one device."""

    def __init__(self, measurement: str, tags: dict[str, str], entries: list[DictionaryEntry], level: str):
        tag_text = ",".join(
            f"{_escape_key(k)}={_escape_key(v)}" for k, v in sorted(tags.items()) if v not in ("", None)
        )
        base = f"{_escape_measurement(measurement)},{tag_text}"
        self.heads = {q: f"{base},quality={q} " for q in ("good", "uncertain")}
        self.fields = {e.id: (_escape_key(e.id), field_kind(e)) for e in entries if visible(e, level)}
        self.skipped = 0  # values that are not scalars of their field's kind

    def lines(self, sample: Sample) -> list[str]:
        groups: dict[str, list[str]] = {}
        fields = self.fields
        for r in sample.readings:
            f = fields.get(r.id)
            if f is None or r.v is None or r.q == "bad":
                continue
            text = format_field(f[1], r.v)
            if text is None:
                self.skipped += 1
                continue
            groups.setdefault(r.q, []).append(f"{f[0]}={text}")
        ts = f" {sample.ts}"
        return [self.heads[q] + ",".join(parts) + ts for q, parts in groups.items()]


class InfluxSink:
    name = "influxdb"

    def __init__(
        self, settings: InfluxSettings, queue: DurableQueue, tls_path: Any = None, gateway_id: str = ""
    ):
        self.s = settings
        self.gateway_id = gateway_id
        self.queue = queue
        self._devices: dict[str, DeviceLines] = {}
        self._lines: list[str] = []
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._ratelimit = RateLimited(log, 30.0)
        self.written = 0
        self.failures = 0
        self.rejected = 0
        self.healthy = False
        self.last_error: str | None = None
        resolve = tls_path or (lambda p: p)
        self.client = InfluxDBClient(
            url=settings.url,
            token=settings.token.get_secret_value() if settings.token else "",
            org=settings.org,
            timeout=int(settings.timeout * 1000),
            enable_gzip=True,
            verify_ssl=settings.verify_tls,
            ssl_ca_cert=str(resolve(settings.ca)) if settings.ca else None,
        )
        self.write_api = self.client.write_api(write_options=SYNCHRONOUS)

    def add_device(self, info: DeviceInfo) -> None:
        tags = {str(k): str(v) for k, v in info.location.items()}
        tags.update(gateway=self.gateway_id, device=info.id)
        self._devices[info.id] = DeviceLines(
            info.model or info.id, tags, info.points, self.s.max_classification
        )

    def remove_device(self, device: str, reason: str = "") -> None:
        self._devices.pop(device, None)

    def device_status(self, device: str, state: str, reason: str | None) -> None:
        return None  # InfluxDB gets values; a device's state is in its points' quality

    def device_alarms(self, device: str, active: list[dict[str, Any]]) -> None:
        return None  # alarms are MQTT events (P/G/D/alarm, retained P/G/D/alarms)

    def publish_event(self, suffix: str, body: dict[str, Any]) -> None:
        return None

    def problem(self) -> str | None:
        return None if self.healthy or not self.failures else f"InfluxDB writes failing: {self.last_error}"

    async def replace(self, settings: InfluxSettings, ctx: SinkContext) -> InfluxSink:
        """Stop (what is queued stays queued for the successor) and start anew. The successor is
        made first: settings it cannot use raise here, and this sink goes on as it was."""
        sink = create(settings, ctx)
        await self.stop([], flush_timeout=0)
        sink._devices.update(self._devices)
        return sink

    def submit(self, sample: Sample) -> None:
        dev = self._devices.get(sample.device)
        if dev is None:
            return
        self._lines += dev.lines(sample)
        if len(self._lines) >= self.s.batch_size:
            self._spill()

    def _spill(self) -> None:
        """The batch in memory -> the durable queue (deflated); the sender takes it from there."""
        if not self._lines:
            return
        lines, self._lines = self._lines, []
        body = zlib.compress("\n".join(lines).encode(), 1)
        self.queue.append(STREAM, str(len(lines)), body)
        self.queue.commit()
        self._wake.set()

    async def start(self) -> None:
        for run, name in ((self._flusher, "influxdb-flush"), (self._sender, "influxdb-send")):
            task = asyncio.create_task(supervise(name, run), name=name)
            task.add_done_callback(report_crash)
            self._tasks.append(task)
        if self.queue.depth_of(STREAM):
            self._wake.set()

    async def _flusher(self) -> None:
        while True:
            await asyncio.sleep(self.s.flush_interval)
            self._spill()

    async def _sender(self) -> None:
        attempt = 0
        done: set[int] = set()  # written but the acknowledgement not yet committed
        while True:
            await self._wake.wait()
            self._wake.clear()
            while True:
                try:
                    rows = [r for r in self.queue.after(STREAM, 0, 1 + len(done)) if r[0] not in done]
                    if not rows and done and self.queue.commit():
                        done.clear()
                except sqlite3.Error as exc:
                    self._ratelimit.log(
                        "queue", logging.ERROR, "cannot read the queue; retrying", error=str(exc)
                    )
                    rows = []
                    self._wake.set()
                    await asyncio.sleep(1.0)
                    break
                if not rows:
                    if done:  # acknowledgements wait for the queue to accept them
                        self._wake.set()
                        await asyncio.sleep(1.0)
                    break
                row_id, count, body = rows[0]
                try:
                    text = zlib.decompress(body)
                except zlib.error:
                    text = None
                delay = await self._write(text, int(count)) if text is not None else None
                if delay is None:  # written, or refused for good
                    attempt = 0
                    self.queue.ack([row_id])
                    done.add(row_id)
                    if self.queue.commit():
                        done.clear()
                    continue
                attempt += 1
                backoff = min(self.s.retry_max, 0.5 * 2 ** min(attempt, 16))
                await asyncio.sleep(max(delay, random.uniform(backoff / 2, backoff)))

    async def _write(self, body: bytes, count: int) -> float | None:
        """Write one batch. None: done with it; a number: retry after at least that long."""
        try:
            await asyncio.to_thread(
                self.write_api.write,
                bucket=self.s.bucket,
                org=self.s.org,
                record=body,
                write_precision=WritePrecision.MS,  # type: ignore[arg-type]  # a str constant in the library
            )
        except ApiException as exc:
            self.failures += 1
            status = int(exc.status or 0)
            reason = _api_reason(exc)
            if status in _PERMANENT:
                self.rejected += count
                event(
                    log,
                    logging.ERROR,
                    "InfluxDB refused a batch; dropped (retrying cannot succeed)",
                    status=status,
                    lines=count,
                    error=reason,
                )
                return None
            self._unhealthy(f"HTTP {status}: {reason}")
            headers: Any = getattr(exc, "headers", None) or {}
            retry_after = headers.get("Retry-After")
            try:
                return float(retry_after) if retry_after else 0.0
            except ValueError:
                return 0.0
        except Exception as exc:  # network: connection refused, timeout, TLS
            self.failures += 1
            self._unhealthy(_network_reason(exc))
            return 0.0
        self.written += count
        if not self.healthy:
            event(log, logging.INFO, "writing to InfluxDB", url=self.s.url, bucket=self.s.bucket)
        self.healthy = True
        self.last_error = None
        return None

    def _unhealthy(self, reason: str) -> None:
        self.healthy = False
        self.last_error = reason
        self._ratelimit.log(
            "write",
            logging.WARNING,
            "cannot write to InfluxDB; batches wait on disk, retrying",
            url=self.s.url,
            error=reason,
            queued_batches=self.queue.depth_of(STREAM),
        )

    async def stop(self, devices: list[str] | None = None, flush_timeout: float = 5.0) -> None:
        """Queue what is in memory, give the sender `flush_timeout` to write it, then stop."""
        self._spill()
        deadline = time.monotonic() + flush_timeout
        while self.healthy and self.queue.depth_of(STREAM) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.queue.commit()
        await asyncio.to_thread(self.client.close)


def _api_reason(exc: ApiException) -> str:
    body = exc.body.decode(errors="replace") if isinstance(exc.body, bytes) else str(exc.body or "")
    return (body or str(exc.reason or "")).strip()[:300]


def _network_reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if "Connection refused" in text:
        return "connection refused"
    if "timed out" in text.lower():
        return "timed out"
    return text.split("\n", 1)[0][:200]


def create(settings: InfluxSettings, ctx: SinkContext) -> InfluxSink:
    return InfluxSink(settings, ctx.queue, ctx.relative, ctx.gateway_id)
