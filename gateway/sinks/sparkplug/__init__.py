"""The Sparkplug B sink: an edge node (spBv1.0 topics, protobuf payloads) on the durable queue."""

from .sink import SparkplugSink, create

__all__ = ["SparkplugSink", "create"]
