"""Small value types of the config file: durations and byte sizes.

Every duration of the schema is bounded: from 1ms (a poll, a timeout or a back-off of 0 is no
pause at all: a loop that spins, a division by zero) to 365 days (beyond, the operating
system's timers overflow). A few settings where 0 means something take `DurationOrZero`.
"""

from __future__ import annotations

import math
import re
from functools import partial
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

from .source import short

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|KiB|MiB|GiB)?\s*$")
_SIZE_UNITS = {
    None: 1,
    "B": 1,
    "KB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
    "KiB": 1024,
    "MiB": 1024**2,
    "GiB": 1024**3,
}

MIN_DURATION = 0.001
MAX_DURATION = 365 * 86400.0
MIB = 1024**2


def parse_duration(value: Any, minimum: float = 0.0, maximum: float = math.inf, why: str = "") -> float:
    """'500ms' -> 0.5, '5m' -> 300.0. Bare numbers are refused: '1' is ambiguous."""
    if isinstance(value, int | float) and not isinstance(value, bool) and _plain(value):
        raise ValueError(f"a bare number is ambiguous: write '{value:g}s' or '{value:g}ms'")
    if not isinstance(value, str):
        raise ValueError("expected a duration such as '500ms', '1s', '5m' or '1h'")
    m = _DURATION.match(value)
    if not m:
        raise ValueError(f"{short(value)} is not a duration; write e.g. '500ms', '1s', '5m' or '1h'")
    seconds = float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    if seconds < minimum:
        raise ValueError(f"must be at least {say_duration(minimum)}{why}")
    if seconds > maximum:
        raise ValueError(f"must be at most {say_duration(maximum)}{why}")
    return seconds


def parse_size(value: Any, minimum: int = 0, why: str = "") -> int:
    if isinstance(value, bool):
        raise ValueError("expected a size such as '512MiB'")
    if isinstance(value, int):
        size = value
    elif not isinstance(value, str) or not (m := _SIZE.match(value)):
        raise ValueError(f"{short(value)} is not a size; write e.g. '64MiB', '2GiB' or '500MB'")
    else:
        number = float(m.group(1)) * _SIZE_UNITS[m.group(2)]
        if not math.isfinite(number):
            raise ValueError(f"{short(value)} is not a size; write e.g. '64MiB', '2GiB' or '500MB'")
        size = int(number)
    if size < minimum:
        raise ValueError(f"must be at least {say_size(minimum)}{why}")
    return size


def _plain(value: float) -> bool:
    """A number that '{:g}' writes back (not nan, inf or an int beyond floats)."""
    return math.isfinite(value) if isinstance(value, float) else abs(value) < 10**15


def format_duration(seconds: float) -> str:
    if seconds < 1 and seconds * 1000 == int(seconds * 1000):
        return f"{int(seconds * 1000)}ms"
    text = f"{seconds:g}"
    if "e" in text:  # what the duration pattern reads back, not 3.1536e+07
        text = f"{seconds:.3f}".rstrip("0").rstrip(".")
    return f"{text}s"


def say_duration(seconds: float) -> str:
    """A duration in the largest unit that writes it whole: 31536000.0 -> '365d'."""
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("m", 60.0), ("s", 1.0)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return format_duration(seconds)


def say_size(size: int) -> str:
    for unit, n in (("GiB", 1024**3), ("MiB", MIB), ("KiB", 1024)):
        if size >= n and size % n == 0:
            return f"{size // n}{unit}"
    return f"{size}B"


_DURATION_SCHEMA = WithJsonSchema(
    {
        "type": "string",
        "pattern": r"^\d+(\.\d+)?(ms|s|m|h|d)$",
        "examples": ["500ms", "1s", "5m"],
    }
)

# a duration from 1ms to 365d
Duration = Annotated[
    float,
    BeforeValidator(partial(parse_duration, minimum=MIN_DURATION, maximum=MAX_DURATION)),
    PlainSerializer(format_duration, return_type=str),
    _DURATION_SCHEMA,
]

# a duration from 0 to 365d, for settings where 0 means something (no pause, fastest rate)
DurationOrZero = Annotated[
    float,
    BeforeValidator(partial(parse_duration, maximum=MAX_DURATION)),
    PlainSerializer(format_duration, return_type=str),
    _DURATION_SCHEMA,
]

# the MQTT keep-alive: whole seconds in 16 bits
KeepAlive = Annotated[
    float,
    BeforeValidator(
        partial(
            parse_duration, minimum=1.0, maximum=65535.0, why=": MQTT sends it in whole seconds, in 16 bits"
        )
    ),
    PlainSerializer(format_duration, return_type=str),
    _DURATION_SCHEMA,
]

# the store-and-forward budget: at least 1MiB, room for SQLite's own pages and some messages
BufferSize = Annotated[
    int,
    BeforeValidator(
        partial(
            parse_size,
            minimum=MIB,
            why=": the queue file needs room for SQLite's own pages beside the messages (default 512MiB)",
        )
    ),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": MIB},
                {"type": "string", "pattern": r"^\d+(\.\d+)?(B|KB|MB|GB|KiB|MiB|GiB)?$"},
            ],
            "examples": ["512MiB"],
        }
    ),
]
