"""Small value types of the config file: durations and byte sizes."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

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


def parse_duration(value: Any) -> float:
    """'500ms' -> 0.5, '5m' -> 300.0. Bare numbers are refused: '1' is ambiguous."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise ValueError(f"a bare number is ambiguous: write '{value:g}s' or '{value:g}ms'")
    if not isinstance(value, str):
        raise ValueError("expected a duration such as '500ms', '1s', '5m' or '1h'")
    m = _DURATION.match(value)
    if not m:
        raise ValueError(f"'{value}' is not a duration; write e.g. '500ms', '1s', '5m' or '1h'")
    seconds = float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    return seconds


def parse_size(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("expected a size such as '512MiB'")
    if isinstance(value, int):
        return value
    if not isinstance(value, str) or not (m := _SIZE.match(value)):
        raise ValueError(f"'{value}' is not a size; write e.g. '64MiB', '2GiB' or '500MB'")
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2)])


def format_duration(seconds: float) -> str:
    if seconds < 1 and seconds * 1000 == int(seconds * 1000):
        return f"{int(seconds * 1000)}ms"
    return f"{seconds:g}s"


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": r"^\d+(\.\d+)?(ms|s|m|h|d)$",
            "examples": ["500ms", "1s", "5m"],
        }
    ),
]

ByteSize = Annotated[
    int,
    BeforeValidator(parse_size),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 0},
                {"type": "string", "pattern": r"^\d+(\.\d+)?(B|KB|MB|GB|KiB|MiB|GiB)?$"},
            ],
            "examples": ["512MiB"],
        }
    ),
]
