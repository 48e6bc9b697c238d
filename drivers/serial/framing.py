"""Cutting a serial byte stream into frames, with a bounded buffer.

A frame ends at a terminator (`\r\n`), or is a fixed number of bytes, or runs from a start
byte to an end byte (STX … ETX). Bytes arrive in arbitrary pieces; the frames that come out do
not depend on how the stream was cut. Whatever is not a frame is reported, never passed on:

- `noise`: bytes outside a frame (before a start byte);
- `partial`: a frame that never finished (a new start byte before the end, or the rest never
  came: the caller discards it with `discard()` after a silence or when the port closes);
- `overlong`: more than `max_frame` bytes without an end; they are dropped, and so is the
  rest of that frame up to the next end, so the buffer never holds more than `max_frame`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True, frozen=True)
class Problem:
    kind: str  # noise | partial | overlong
    data: bytes  # the first bytes concerned, for the log


_SAMPLE = 32  # bytes of a problem kept for the log


class Framer:
    def __init__(
        self,
        *,
        terminator: bytes | None = None,
        length: int | None = None,
        start: bytes | None = None,
        end: bytes | None = None,
        max_frame: int = 4096,
    ):
        delimiter = terminator or end
        if (delimiter is None) == (length is None):
            raise ValueError("a frame ends at a terminator or end byte, or has a fixed length: one of them")
        self.delimiter = delimiter
        self.length = length
        self.start = start or None
        self.max_frame = max_frame
        self._buf = bytearray()
        self._skipping = False  # after an overlong frame: drop up to the next delimiter

    @property
    def pending(self) -> int:
        """Bytes of an unfinished frame held (0 when between frames)."""
        if self.start is not None and not self._buf.startswith(self.start):
            return 0
        return len(self._buf)

    def discard(self) -> Problem | None:
        """Drop an unfinished frame (the line went quiet, or the port closed)."""
        partial = 0 if self._skipping else self.pending
        data = bytes(self._buf[:_SAMPLE])
        self._buf.clear()
        self._skipping = False
        return Problem("partial", data) if partial else None

    def feed(self, data: bytes) -> tuple[list[bytes], list[Problem]]:
        buf = self._buf
        buf += data
        frames: list[bytes] = []
        problems: list[Problem] = []
        start, delim = self.start, self.delimiter
        while buf:
            if self._skipping:
                assert delim is not None
                j = buf.find(delim)
                if j < 0:
                    del buf[: len(buf) - len(delim) + 1]  # keep what may be a delimiter's first bytes
                    break
                del buf[: j + len(delim)]
                self._skipping = False
                continue
            body = 0
            if start is not None:
                i = buf.find(start)
                if i < 0:
                    keep = len(start) - 1
                    if len(buf) > keep:
                        problems.append(Problem("noise", bytes(buf[:_SAMPLE])))
                        del buf[: len(buf) - keep]
                    break
                if i > 0:
                    problems.append(Problem("noise", bytes(buf[: min(i, _SAMPLE)])))
                    del buf[:i]
                body = len(start)
            if self.length is not None:
                if len(buf) < body + self.length:
                    break
                frames.append(bytes(buf[body : body + self.length]))
                del buf[: body + self.length]
                continue
            assert delim is not None
            j = buf.find(delim, body)
            if start is not None:
                k = buf.find(start, body)
                if k >= 0 and (j < 0 or k < j):  # a new frame began before this one ended
                    problems.append(Problem("partial", bytes(buf[: min(k, _SAMPLE)])))
                    del buf[:k]
                    continue
            if j < 0:
                if len(buf) - body > self.max_frame:
                    problems.append(Problem("overlong", bytes(buf[:_SAMPLE])))
                    if start is None:
                        self._skipping = True
                        del buf[: len(buf) - len(delim) + 1]
                    else:
                        buf.clear()
                break
            if j - body > self.max_frame:
                problems.append(Problem("overlong", bytes(buf[:_SAMPLE])))
            else:
                frames.append(bytes(buf[body:j]))
            del buf[: j + len(delim)]
        return frames, problems
