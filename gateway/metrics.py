"""Prometheus metrics, read from the gateway's own counters at scrape time.

Nothing on the polling path touches prometheus_client: drivers, the scheduler and the sinks keep
plain counters and fixed-bucket histograms, and this collector turns them into metric families
when `/metrics` is scraped. Process CPU and memory come from prometheus_client's process
collector (from /proc).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)

from drivers.base import LatencyHistogram

from . import __version__

if TYPE_CHECKING:
    from .runtime import Gateway


def _buckets(h: LatencyHistogram) -> list[tuple[str, float]]:
    out, total = [], 0
    for bound, n in zip(h.bounds, h.counts, strict=False):
        total += n
        out.append((f"{bound:g}", total))
    out.append(("+Inf", h.count))
    return out


class GatewayCollector:
    def __init__(self, gw: Gateway):
        self.gw = gw

    def collect(self) -> Iterator[Metric]:
        gw = self.gw
        info = InfoMetricFamily("edgegw", "edgegw build and identity")
        info.add_metric([], {"version": __version__, "gateway": gw.cfg.gateway.id})
        yield info

        up = GaugeMetricFamily(
            "edgegw_device_up", "1 while the device answers polls", labels=["device", "protocol"]
        )
        polls = CounterMetricFamily(
            "edgegw_device_polls", "poll cycles started", labels=["device", "protocol"]
        )
        failed = CounterMetricFamily(
            "edgegw_device_poll_errors",
            "poll cycles in which the device could not be read",
            labels=["device", "protocol"],
        )
        overruns = CounterMetricFamily(
            "edgegw_device_overruns",
            "poll deadlines skipped because a poll overran its interval",
            labels=["device"],
        )
        requests = CounterMetricFamily(
            "edgegw_device_requests", "requests sent to the device", labels=["device", "protocol"]
        )
        request_errors = CounterMetricFamily(
            "edgegw_device_request_errors",
            "requests that timed out or were answered with an error",
            labels=["device", "protocol"],
        )
        writes = CounterMetricFamily(
            "edgegw_device_writes", "write-back requests sent to the device", labels=["device"]
        )
        write_errors = CounterMetricFamily(
            "edgegw_device_write_errors",
            "write-back requests the device refused or did not answer",
            labels=["device"],
        )
        per_protocol_req: dict[str, LatencyHistogram] = {}
        per_protocol_poll: dict[str, LatencyHistogram] = {}
        for device, runner in list(gw.runners.items()):
            protocol = gw.protocol_of(device)
            c = runner.group.counters
            up.add_metric([device, protocol], 1.0 if runner.state == "online" else 0.0)
            polls.add_metric([device, protocol], c.polls)
            failed.add_metric([device, protocol], c.failed_polls)
            overruns.add_metric([device], c.overruns)
            writes.add_metric([device], c.writes)
            write_errors.add_metric([device], c.failed_writes)
            d = runner.driver
            requests.add_metric([device, protocol], getattr(d, "request_count", 0))
            request_errors.add_metric([device, protocol], getattr(d, "error_count", 0))
            lat = getattr(d, "latency", None)
            if lat is not None:
                per_protocol_req.setdefault(protocol, LatencyHistogram()).merge(lat)
            per_protocol_poll.setdefault(protocol, LatencyHistogram()).merge(c.poll_latency)
        yield from (up, polls, failed, overruns, requests, request_errors, writes, write_errors)

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
                "messages dropped because the queue reached buffer.max_bytes",
                value=q.dropped,
            )

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
            h = m.publish_latency
            lat = HistogramMetricFamily(
                "edgegw_mqtt_publish_latency_seconds",
                "from handing a message to the broker to its acknowledgement",
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
    registry.register(GatewayCollector(gw))  # type: ignore[arg-type]
    ProcessCollector(registry=registry)
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
