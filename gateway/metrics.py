"""Prometheus metrics, read from the gateway's own counters at scrape time.

Nothing on the polling path touches prometheus_client: drivers, the scheduler and the sinks keep
plain counters and fixed-bucket histograms, and this collector turns them into metric families
when `/metrics` is scraped. Process CPU and memory come from prometheus_client's process
collector (from /proc).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from edgegw.drivers.base import LatencyHistogram
from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)

from . import __version__

if TYPE_CHECKING:
    from .runtime import Gateway
    from .scheduler import DeviceRunner


def _buckets(h: LatencyHistogram) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    total = 0
    for bound, n in zip(h.bounds, h.counts, strict=False):
        total += n
        out.append((f"{bound:g}", total))
    out.append(("+Inf", h.count))
    return out


# per-device metrics: (name, help, value from the device's runner), labelled device and protocol
_PER_DEVICE: list[tuple[str, str, Callable[[DeviceRunner], float]]] = [
    ("up", "1 while the device answers polls", lambda r: 1.0 if r.state == "online" else 0.0),
    ("polls", "poll cycles started", lambda r: r.group.counters.polls),
    (
        "poll_errors",
        "poll cycles in which the device could not be read",
        lambda r: r.group.counters.failed_polls,
    ),
    (
        "overruns",
        "poll deadlines skipped because a poll overran its interval",
        lambda r: r.group.counters.overruns,
    ),
    ("requests", "requests sent to the device", lambda r: r.driver.request_count),
    (
        "request_errors",
        "requests that timed out or were answered with an error",
        lambda r: r.driver.error_count,
    ),
    (
        "internal_errors",
        "exceptions in the gateway's own code while serving the device (logged with the device)",
        lambda r: r.group.counters.internal_errors,
    ),
    (
        "task_restarts",
        "times the device's task was restarted after an internal error",
        lambda r: r.group.counters.restarts,
    ),
    ("writes", "write-back requests sent to the device", lambda r: r.group.counters.writes),
    (
        "write_errors",
        "write-back requests the device refused or did not answer",
        lambda r: r.group.counters.failed_writes,
    ),
]


class GatewayCollector:
    def __init__(self, gw: Gateway):
        self.gw = gw

    def collect(self) -> Iterator[Metric]:
        gw = self.gw
        info = InfoMetricFamily("edgegw", "edgegw build and identity")
        info.add_metric([], {"version": __version__, "gateway": gw.cfg.gateway.id})
        yield info

        families = [
            (GaugeMetricFamily(f"edgegw_device_{name}", text, labels=["device", "protocol"]), get)
            if name == "up"
            else (CounterMetricFamily(f"edgegw_device_{name}", text, labels=["device", "protocol"]), get)
            for name, text, get in _PER_DEVICE
        ]
        per_protocol_req: dict[str, LatencyHistogram] = {}
        per_protocol_poll: dict[str, LatencyHistogram] = {}
        for device, runner in list(gw.runners.items()):
            protocol = gw.protocol_of(device)
            for family, get in families:
                family.add_metric([device, protocol], get(runner))
            per_protocol_req.setdefault(protocol, LatencyHistogram()).merge(runner.driver.latency)
            per_protocol_poll.setdefault(protocol, LatencyHistogram()).merge(
                runner.group.counters.poll_latency
            )
        yield from (family for family, _ in families)
        rejected = CounterMetricFamily(
            "edgegw_serial_frames_rejected",
            "frames of a line-protocol instrument that were not values, by kind "
            "(noise, partial, overlong, encoding, no_match, overrun)",
            labels=["device", "kind"],
        )
        for device, runner in list(gw.runners.items()):
            for kind, n in runner.driver.frame_errors.items():
                rejected.add_metric([device, kind], n)
        yield rejected

        req_h = HistogramMetricFamily(
            "edgegw_request_duration_seconds", "round trip of one request to a device", labels=["protocol"]
        )
        for protocol, h in sorted(per_protocol_req.items()):
            req_h.add_metric([protocol], _buckets(h), h.sum)
        yield req_h
        poll_h = HistogramMetricFamily(
            "edgegw_poll_duration_seconds", "time to read all of a device's points once", labels=["protocol"]
        )
        for protocol, h in sorted(per_protocol_poll.items()):
            poll_h.add_metric([protocol], _buckets(h), h.sum)
        yield poll_h

        yield CounterMetricFamily(
            "edgegw_samples", "samples produced (one per device per poll)", value=gw.samples
        )
        yield CounterMetricFamily("edgegw_point_values", "point values produced", value=gw.point_values)

        q = gw.queue
        if q is not None:
            depth = GaugeMetricFamily(
                "edgegw_queue_messages", "messages waiting in the durable queue", labels=["stream"]
            )
            size = GaugeMetricFamily(
                "edgegw_queue_bytes", "bytes waiting in the durable queue", labels=["stream"]
            )
            for stream in sorted({"mqtt", "identifier", "influxdb", *q.depths}):
                depth.add_metric([stream], q.depth_of(stream))
                size.add_metric([stream], q.sizes.get(stream, 0))
            yield depth
            yield size
            yield CounterMetricFamily(
                "edgegw_queue_dropped",
                "messages dropped because the queue reached queue.max_bytes (or, while commits "
                "fail, its memory bound)",
                value=q.dropped,
            )
            yield CounterMetricFamily(
                "edgegw_queue_commit_failures",
                "queue transactions that failed (disk full, read-only, locked); the batch is kept and retried",
                value=q.commit_failures,
            )
            yield GaugeMetricFamily(
                "edgegw_queue_pending_messages",
                "messages in memory waiting for a queue commit to succeed",
                value=q.pending,
            )
            yield GaugeMetricFamily(
                "edgegw_queue_writable", "0 while queue commits fail", value=0.0 if q.failing else 1.0
            )

        al = gw.alarms
        if al is not None and al.devices:
            c = al.counts()
            yield GaugeMetricFamily("edgegw_alarms_active", "alarms active now", value=c["active"])
            yield GaugeMetricFamily(
                "edgegw_alarms_unacknowledged",
                "active alarms no operator acknowledged",
                value=c["unacknowledged"],
            )
            yield CounterMetricFamily("edgegw_alarms_raised", "alarms that became active", value=c["raised"])
            yield CounterMetricFamily("edgegw_alarms_cleared", "alarms that cleared", value=c["cleared"])

        m = gw.mqtt
        if m is not None:
            yield GaugeMetricFamily(
                "edgegw_mqtt_connected", "1 while connected to the broker", value=1.0 if m.connected else 0.0
            )
            yield CounterMetricFamily(
                "edgegw_mqtt_published", "messages handed to the broker", value=m.published
            )
            yield CounterMetricFamily(
                "edgegw_mqtt_acked", "messages acknowledged by the broker", value=m.acked
            )
            yield CounterMetricFamily(
                "edgegw_mqtt_replayed", "messages replayed from the backlog", value=m.replayed
            )
            yield CounterMetricFamily(
                "edgegw_mqtt_commands", "write requests received on P/G/D/set", value=m.commands
            )
            yield CounterMetricFamily(
                "edgegw_mqtt_sink_errors",
                "MQTT sink cycles that failed (queue unreadable or an internal error) and were retried",
                value=m.queue_errors + m.crashes,
            )
            h = m.publish_latency
            lat = HistogramMetricFamily(
                "edgegw_mqtt_publish_latency_seconds",
                "from handing a message to the broker to its acknowledgement",
            )
            lat.add_metric([], _buckets(h), h.sum)
            yield lat
            h = m.sample_latency
            lat = HistogramMetricFamily(
                "edgegw_mqtt_sample_latency_seconds",
                "from the end of the poll that made a data message to the broker's acknowledgement",
            )
            lat.add_metric([], _buckets(h), h.sum)
            yield lat

        r = gw.registrar
        if r is not None:
            ident = CounterMetricFamily(
                "edgegw_identifier_events", "identifier rule outcomes", labels=["outcome"]
            )
            for key, value in r.counters.items():
                ident.add_metric([key], value)
            yield ident
            errors = CounterMetricFamily(
                "edgegw_identifier_errors",
                "registrar cycles that failed and were retried, by kind",
                labels=["kind"],
            )
            errors.add_metric(["queue"], r.queue_errors)
            errors.add_metric(["internal"], r.crashes)
            yield errors
            yield GaugeMetricFamily(
                "edgegw_identifier_queued", "registrations waiting to be sent", value=r.queued
            )
            yield GaugeMetricFamily(
                "edgegw_identifier_max_queued", "identifier.max_queued", value=r.max_queued
            )
            yield GaugeMetricFamily(
                "edgegw_identifier_template_checks_deferred",
                "rules whose template check waits for a readable answer from the node",
                value=len(r.deferred),
            )
            yield GaugeMetricFamily(
                "edgegw_identifier_node_up",
                "1 while the secondary node answers",
                value=1.0 if r.connected else 0.0,
            )

        i = gw.influx
        if i is not None:
            yield CounterMetricFamily(
                "edgegw_influxdb_lines_written", "lines accepted by InfluxDB", value=i.written
            )
            yield CounterMetricFamily(
                "edgegw_influxdb_write_errors", "failed write attempts", value=i.failures
            )
            yield GaugeMetricFamily(
                "edgegw_influxdb_up", "1 while writes succeed", value=1.0 if i.healthy else 0.0
            )


def registry_for(gw: Gateway) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GatewayCollector(gw))
    ProcessCollector(registry=registry)
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
