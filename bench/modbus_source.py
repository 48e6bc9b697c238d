"""A Modbus TCP server for benchmarks only: answers register reads (functions 3 and 4) of any
unit from precomputed blocks, so that it can answer 200,000 values/s on this 2-core machine
next to the gateway. `edgegw simulate` (pymodbus' server, value generators, fault injection)
needs about 0.7 % of a core per 1,000 values/s, which leaves the gateway's own limit hidden
behind the simulators' when the box is overloaded.

Values change every 100 ms: the first `--moving` registers of a block step through 16
precomputed patterns (0..3999, within the bench model's int16 x 0.1, range [0, 400]); the
others hold 100 (the bench's still points). Anything but a register read gets exception 1.

    .venv/bin/python bench/modbus_source.py --port 40001 --moving 100
"""

from __future__ import annotations

import argparse
import asyncio
import struct
import time

PATTERNS = 16
REGISTERS = 2000


class Source(asyncio.Protocol):
    def __init__(self, blocks: list[bytes]):
        self.blocks = blocks
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        out = []
        while len(buf) >= 8:
            length = int.from_bytes(buf[4:6], "big")
            end = 6 + length
            if len(buf) < end:
                break
            head, fc = bytes(buf[0:7]), buf[7]
            if fc in (3, 4) and length == 6:
                start, count = struct.unpack_from(">HH", buf, 8)
                block = self.blocks[int(time.monotonic() * 10) % PATTERNS]
                data_ = block[2 * start : 2 * (start + count)]
                pdu = bytes([fc, len(data_)]) + data_
            else:
                pdu = bytes([fc | 0x80, 1])
            out.append(head[0:4] + (len(pdu) + 1).to_bytes(2, "big") + head[6:7] + pdu)
            del buf[:end]
        if out and self.transport is not None:
            self.transport.write(b"".join(out))


def blocks(moving: int) -> list[bytes]:
    out = []
    for k in range(PATTERNS):
        regs = [((i * 37 + k * 251) % 4000) if i < moving else 100 for i in range(REGISTERS)]
        out.append(struct.pack(f">{REGISTERS}H", *regs))
    return out


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--moving", type=int, default=REGISTERS, help="registers whose values change")
    args = ap.parse_args()
    patterns = blocks(args.moving)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Source(patterns), "127.0.0.1", args.port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
