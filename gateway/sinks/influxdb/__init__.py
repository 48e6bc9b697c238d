"""The InfluxDB sink: line protocol over the v2 write API, batches through the durable queue;
influxdb-client, imported only when `northbound.influxdb` is configured."""

from .sink import DeviceLines, InfluxSink, create, field_kind

__all__ = ["DeviceLines", "InfluxSink", "create", "field_kind"]
