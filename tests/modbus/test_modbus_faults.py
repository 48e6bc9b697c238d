"""Devices that answer wrongly: a tiny Modbus/TCP server written here speaks MBAP on a real
loopback socket and answers each request with a crafted PDU (short, wrong length, another
function, malformed, a wrong write echo). Every such answer must become the driver's own
error: a read marks that request's points bad with what the device did wrong, a write fails
with WriteFailed saying it; nothing else escapes, and the answer is taken at once instead of
waiting for the timeout."""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections.abc import Callable
from typing import Any

import pytest
from edgegw.drivers.base import DeviceUnreachable, PointError, WriteFailed
from edgegw.drivers.modbus.codec import RegisterPoint
from edgegw.drivers.modbus.tcp import ModbusTcpDriver
from edgegw.gateway.dictionary import DictionaryEntry
from edgegw.gateway.normalise import Normaliser, Sample
from edgegw.gateway.scheduler import DeviceRunner, PollGroup
from edgegw.gateway.writeback import write_error

TIMEOUT = 2.0

# an answer: the PDU to send in a frame that matches the request, raw bytes to send as they
# are, or None to stay silent
Answer = Callable[[bytes], "bytes | tuple[bytes] | None"]


class CraftedServer:
    """Answers every request with answer(request PDU), framed with the request's MBAP header."""

    def __init__(self, answer: Answer):
        self.answer = answer
        self.requests: list[bytes] = []
        self.connections = 0
        self._writers: list[asyncio.StreamWriter] = []
        self._handlers: set[asyncio.Task[Any]] = set()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append(writer)
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            while True:
                tid, _, length, unit = struct.unpack(">HHHB", await reader.readexactly(7))
                pdu = await reader.readexactly(length - 1)
                self.requests.append(pdu)
                out = self.answer(pdu)
                if out is None:
                    continue
                if isinstance(out, tuple):
                    writer.write(out[0].replace(b"TID", tid.to_bytes(2, "big")))
                else:
                    writer.write(struct.pack(">HHHB", tid, 0, len(out) + 1, unit) + out)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        self.server.close()
        for w in self._writers:
            w.close()
        if self._handlers:  # each ends on the closed connection, before the loop closes
            await asyncio.wait(self._handlers, timeout=5)
        await self.server.wait_closed()


def run_against(answer: Answer, job: Callable[[ModbusTcpDriver], Any], points: list[RegisterPoint]) -> Any:
    """Start the server, run job(driver) against it, return (result, server, seconds)."""

    async def main() -> Any:
        server = CraftedServer(answer)
        port = await server.start()
        driver = ModbusTcpDriver("127.0.0.1", port, 1, TIMEOUT, points)
        try:
            started = time.monotonic()
            try:
                result: Any = await job(driver)
            except Exception as exc:  # the test looks at which exception it was
                result = exc
            return result, server, time.monotonic() - started
        finally:
            await driver.close()
            await server.stop()

    return asyncio.run(main())


def read_answers(fc: int, data: bytes) -> Answer:
    """Answers a read of function `fc` with `data` after the function code; anything else normally."""

    def answer(pdu: bytes) -> bytes:
        if pdu[0] == fc:
            return bytes([fc]) + data
        if pdu[0] in (3, 4):
            n = int.from_bytes(pdu[3:5], "big")
            return bytes([pdu[0], 2 * n]) + bytes(2 * n)
        n = int.from_bytes(pdu[3:5], "big")
        return bytes([pdu[0], (n + 7) // 8]) + b"\xff" * ((n + 7) // 8)

    return answer


U32 = [RegisterPoint("flow", "hr", 100, "uint32")]
COILS = [RegisterPoint("run", "co", 0, "bool"), RegisterPoint("fault", "co", 9, "bool")]


@pytest.mark.parametrize(
    ("answer", "points", "reason"),
    [
        (read_answers(3, b"\x02\x00\x07"), U32, "device answered 2 bytes, expected 4 for hr:100 x2"),
        (
            read_answers(3, b"\x06" + bytes(6)),
            U32,
            "device answered 6 bytes, expected 4 for hr:100 x2",
        ),
        (
            read_answers(3, b"\x04\x00\x07"),
            U32,
            "malformed response for hr:100 x2: byte count 4 but 2 bytes of data",
        ),
        (read_answers(3, b""), U32, "malformed response for hr:100 x2: no byte count"),
        (
            lambda pdu: b"\x04\x04\x00\x07\x00\x01",
            U32,
            "device answered with function 4, expected 3 for hr:100 x2",
        ),
        (
            lambda pdu: b"\x83",
            U32,
            "malformed response for hr:100 x2: exception response of 1 byte, expected 2",
        ),
        (
            lambda pdu: b"\x84\x02",
            U32,
            "device answered with an exception to function 4, expected function 3 for hr:100 x2",
        ),
        (lambda pdu: b"\x01\x00", COILS, "device answered 0 bytes, expected 2 for co:0 x10"),
        (lambda pdu: b"\x01\x01\xff", COILS, "device answered 1 byte, expected 2 for co:0 x10"),
        (
            lambda pdu: b"\x01\x02\xff",
            COILS,
            "malformed response for co:0 x10: byte count 2 but 1 byte of data",
        ),
        (
            lambda pdu: (b"TID\x00\x00\x00\x01\x01",),  # an MBAP header with no PDU at all
            U32,
            "malformed response for hr:100 x2: no function code",
        ),
    ],
)
def test_a_wrong_read_answer_marks_the_points_bad_with_what_the_device_did(
    answer: Answer, points: list[RegisterPoint], reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        values, _, seconds = run_against(answer, lambda d: d.read(), points)
    assert isinstance(values, list), values
    assert all(isinstance(v, PointError) for v in values), values
    assert all(v.reason.startswith(reason) for v in values), values  # type: ignore[union-attr]
    assert seconds < TIMEOUT / 2  # the answer itself is the failure: no wait for the timeout
    assert not caplog.records  # pymodbus never got an answer it could not decode


def test_one_wrong_answer_leaves_the_other_requests_of_the_poll_good() -> None:
    points = [RegisterPoint("flow", "hr", 100, "uint32"), *COILS]
    values, server, _ = run_against(read_answers(3, b"\x02\x00\x07"), lambda d: d.read(), points)
    assert values[0] == PointError("device answered 2 bytes, expected 4 for hr:100 x2")
    assert values[1:] == [True, True]  # read over the same connection, after the wrong answer
    assert server.connections == 1
    # and the next poll is read again normally
    again, server, _ = run_against(
        read_answers(3, b"\x02\x00\x07"),
        lambda d: _twice(d),
        points,
    )
    assert again[1:] == [True, True] and server.connections == 1


async def _twice(d: ModbusTcpDriver) -> list[object]:
    await d.read()
    return await d.read()


def test_bytes_that_are_not_a_frame_count_as_no_answer_and_reconnect() -> None:
    """Protocol id 7: not Modbus/TCP, so nothing after it can be trusted either: like a timeout,
    the device did not answer, and the next poll opens a new connection."""
    not_mbap = lambda pdu: (b"TID\x00\x07\x00\x05\x01\x03\x02\x00\x00",)  # noqa: E731

    async def two_polls(d: ModbusTcpDriver) -> list[BaseException]:
        out = []
        for _ in range(2):
            try:
                await d.read()
            except DeviceUnreachable as exc:
                out.append(exc)
        return out

    failures, server, seconds = run_against(not_mbap, two_polls, U32)
    assert [str(f) for f in failures] == [
        "bad response for hr:100 x2: not a Modbus/TCP frame (header 00 01 00 07 00 05 01)",
        "bad response for hr:100 x2: not a Modbus/TCP frame (header 00 01 00 07 00 05 01)",
    ]
    assert server.connections == 2 and seconds < TIMEOUT


def test_frames_for_another_unit_or_cut_short_are_named_in_the_timeout() -> None:
    async def short_poll(d: ModbusTcpDriver) -> Any:
        d.timeout = 0.5
        return await d.read()

    other_unit = lambda pdu: (b"TID\x00\x00\x00\x07\x09\x03\x04\x00\x01\x00\x02",)  # noqa: E731
    exc, _, _ = run_against(other_unit, short_poll, U32)
    assert isinstance(exc, DeviceUnreachable)
    assert str(exc) == "no response within 0.5s: the device answered as unit 9, expected unit 1"
    cut_short = lambda pdu: (b"TID\x00\x00\x00\x07\x01\x03\x04\x00\x01",)  # noqa: E731
    exc, _, _ = run_against(cut_short, short_poll, U32)
    assert isinstance(exc, DeviceUnreachable)
    assert str(exc) == "no response within 0.5s: received 11 of the 13 bytes of a response"


def write_answers(fc: int, data: bytes) -> Answer:
    """Answers function `fc` with `data`; a read of one holding register with 0x0010."""

    def answer(pdu: bytes) -> bytes:
        if pdu[0] == fc:
            return bytes([fc]) + data
        if pdu[0] == 3:
            return b"\x03\x02\x00\x10"
        return pdu[:5]  # the normal echo of a write

    return answer


BIT = RegisterPoint("door", "hr", 5, "bool", bit=3)
WORD = RegisterPoint("setpoint", "hr", 5, "uint16")
DWORD = RegisterPoint("total", "hr", 5, "uint32")
COIL = RegisterPoint("pump", "co", 3, "bool")


@pytest.mark.parametrize(
    ("answer", "point", "value", "reason"),
    [
        (
            write_answers(3, b"\x00"),
            BIT,
            True,
            "reading hr:5 to set bit 3: device answered 0 bytes, expected 2 for hr:5",
        ),
        (
            write_answers(3, b"\x02\x00"),
            BIT,
            True,
            "reading hr:5 to set bit 3: malformed response for hr:5: byte count 2 but 1 byte of data",
        ),
        (
            write_answers(3, b""),
            BIT,
            False,
            "reading hr:5 to set bit 3: malformed response for hr:5: no byte count",
        ),
        (
            write_answers(6, b"\x00\x05"),
            BIT,
            True,
            "malformed response to the write of hr:5: 2 bytes after the function code, expected 4",
        ),
        (
            write_answers(6, b"\x00\x05"),
            WORD,
            7,
            "malformed response to the write of hr:5: 2 bytes after the function code, expected 4",
        ),
        (
            write_answers(6, b"\x00\x06\x00\x07"),
            WORD,
            7,
            "device confirmed the write of hr:5 for address 6",
        ),
        (
            write_answers(6, b"\x00\x05\x00\x08"),
            WORD,
            7,
            "device echoed value 8 for the write of 7 to hr:5",
        ),
        (
            write_answers(16, b"\x00\x05\x00\x01"),
            DWORD,
            70000,
            "device confirmed 1 items for the write of hr:5 x2",
        ),
        (
            write_answers(16, b""),
            DWORD,
            70000,
            "malformed response to the write of hr:5 x2: 0 bytes after the function code, expected 4",
        ),
        (
            lambda pdu: b"\x06\x00\x03\xff\x00",
            COIL,
            True,
            "device answered with function 6, expected 5 for co:3",
        ),
        (
            write_answers(5, b"\x00\x03\x00\x00"),
            COIL,
            True,
            "device echoed 0x0000 for the write of on to co:3",
        ),
    ],
)
def test_a_wrong_write_answer_fails_the_write_with_the_reason(
    answer: Answer, point: RegisterPoint, value: object, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        exc, server, seconds = run_against(answer, lambda d: d.write(point.id, value), [point])
    assert type(exc) is WriteFailed, repr(exc)
    assert str(exc) == reason
    assert seconds < TIMEOUT / 2 and not caplog.records
    if reason.startswith("reading"):  # read-modify-write: nothing written after a wrong read
        assert [r[0] for r in server.requests] == [3]


def test_bit_write_sets_the_bit_and_keeps_the_others() -> None:
    exc, server, _ = run_against(write_answers(0, b""), lambda d: d.write("door", True), [BIT])
    assert exc is None
    assert server.requests[-1] == b"\x06\x00\x05\x00\x18"  # 0x0010 | bit 3


def test_the_runner_reports_wrong_answers_as_bad_points_and_refused_writes() -> None:
    """Under the scheduler: the device stays online, its points are bad with the reason, no
    internal error is counted, and a write's failure maps to 502 with the device's fault."""
    entries = [
        DictionaryEntry("flow", "uint32"),
        DictionaryEntry("door", "bool", access="rw"),
    ]
    points = [RegisterPoint("flow", "hr", 100, "uint32"), BIT]

    def answer(pdu: bytes) -> bytes:
        if pdu[0] == 3 and pdu[1:3] == b"\x00\x05":  # the register of the bit
            return b"\x03\x00"
        return b"\x03\x02\x00\x07"  # hr:100 x2 answered with one register

    async def main() -> tuple[Any, list[Sample], Any]:
        server = CraftedServer(answer)
        port = await server.start()
        driver = ModbusTcpDriver("127.0.0.1", port, 1, TIMEOUT, points)
        samples: list[Sample] = []
        group = PollGroup("boiler", 0.1, 1.0, 1)
        runner = DeviceRunner(group, driver, Normaliser(entries), samples.append, lambda *a: None)
        task = asyncio.create_task(runner.run())
        try:
            for _ in range(100):
                if len(samples) >= 2:
                    break
                await asyncio.sleep(0.05)
            try:
                await runner.write("door", True, 5.0)
                failure: Any = None
            except Exception as exc:
                failure = exc
            return runner, samples, failure
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await driver.close()
            await server.stop()

    runner, samples, failure = asyncio.run(main())
    assert runner.state == "online" and runner.group.counters.internal_errors == 0
    readings = {r.id: r for r in samples[-1].readings}
    assert readings["flow"].q == "bad"
    assert readings["flow"].reason == "device answered 2 bytes, expected 4 for hr:100 x2"
    assert readings["door"].reason == "device answered 0 bytes, expected 2 for hr:5"
    assert isinstance(failure, WriteFailed)
    status, reason = write_error(failure)
    assert status == 502
    assert reason.endswith("reading hr:5 to set bit 3: device answered 0 bytes, expected 2 for hr:5")
