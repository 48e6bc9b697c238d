"""What the two MQTT sinks (the JSON contract and Sparkplug B) share about their broker: the
paho client's credentials and TLS, and the jittered reconnect back-off."""

from __future__ import annotations

import random
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import paho.mqtt.client as paho


class BrokerSettings(Protocol):
    username: str | None
    password: Any  # SecretStr | None
    tls: Any  # TlsFiles | None
    reconnect_min: float
    reconnect_max: float


def configure(client: paho.Client, s: BrokerSettings, resolve: Callable[[str], Path | str] | None) -> None:
    """Credentials and TLS from the settings; `resolve` turns a file named in the config into
    a path (relative to the config's folder)."""
    client.reconnect_delay_set(min_delay=s.reconnect_min, max_delay=s.reconnect_min)  # type: ignore[arg-type]
    if s.username:
        client.username_pw_set(s.username, s.password.get_secret_value() if s.password else None)
    if s.tls is not None:
        path = resolve or (lambda p: p)
        client.tls_set(
            ca_certs=str(path(s.tls.ca)) if s.tls.ca else None,
            certfile=str(path(s.tls.cert)) if s.tls.cert else None,
            keyfile=str(path(s.tls.key)) if s.tls.key else None,
            cert_reqs=ssl.CERT_REQUIRED,
        )
        client.tls_insecure_set(s.tls.insecure)


def next_reconnect_delay(client: paho.Client, s: BrokerSettings, attempt: int) -> float:
    """paho waits min_delay before its next attempt: set it to this attempt's delay, doubling
    from reconnect_min to reconnect_max and drawn from the upper half (so a plant's gateways do
    not reconnect in lock-step after a broker restart)."""
    ceiling = min(s.reconnect_max, s.reconnect_min * 2 ** min(attempt - 1, 30))
    delay = random.uniform(ceiling / 2, ceiling)
    client.reconnect_delay_set(min_delay=delay, max_delay=delay)  # type: ignore[arg-type]
    return delay
