"""Models of a line-protocol instrument on a serial port (scales, barcode readers, gauges)."""

from __future__ import annotations

from typing import Literal

from edgegw.gateway.config.base import DeviceBase, SerialLine, Strict
from edgegw.gateway.config.types import Duration
from pydantic import Field


class SerialFraming(Strict):
    """How the byte stream is cut into frames: at a terminator, at a fixed length, or from a
    start byte to an end byte. Escapes such as \\r, \\n and \\x02 work in any YAML quoting."""

    terminator: str | None = Field(None, description='e.g. "\\r\\n"; a frame ends here')
    length: int | None = Field(None, ge=1, le=65536, description="fixed frame length in bytes")
    start: str | None = Field(None, description='e.g. "\\x02" (STX); bytes before it are noise')
    end: str | None = Field(None, description='e.g. "\\x03" (ETX); with start')
    pattern: str | None = Field(
        None,
        description="regex with one named group per point id; without it, one point takes the whole frame",
    )
    max_line: int = Field(4096, ge=16, le=1_048_576, description="longest frame; longer ones are dropped")
    encoding: str = Field("utf-8", description="frames that do not decode are dropped and counted")
    partial_timeout: Duration = Field(
        1.0,
        description="an unfinished frame followed by this much silence is dropped (never joined to later bytes)",
    )


class SerialConnection(SerialLine):
    timeout: Duration = Field(1.0, description="mode: poll: how long to wait for a valid answer")


class SerialDevice(DeviceBase):
    protocol: Literal["serial"]
    connection: SerialConnection
    framing: SerialFraming
    mode: Literal["stream", "poll"] = Field(
        "stream", description="stream: the instrument sends on its own; poll: `request` every poll interval"
    )
    request: str | None = Field(None, description='sent every poll interval in mode: poll, e.g. "SI\\r\\n"')
    idle_timeout: Duration | None = Field(
        None,
        description="mode: stream: offline after this long without a valid frame "
        "(leave unset for readers that send only when something is scanned)",
    )
