"""The MQTT sink: JSON data, meta, status and events with store-and-forward (the README's
"MQTT contract"); paho-mqtt."""

from .sink import MqttSink, create

__all__ = ["MqttSink", "create"]
