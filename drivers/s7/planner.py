"""The S7 read planner: points coalesced per area into byte ranges, ranges packed into
multi-variable read requests that fit the PDU.

Why not python-snap7's `optimizer` (it merges and packetizes too): it never splits an item, so
one point larger than a PDU's payload (a STRING[254] on an S7-300's 240-byte PDU) cannot be
read at all; it does not cap the variables per request at the 20 the S7 CPUs accept; and its
reply parser (`extract_multi_read_data`) raises on the first refused item, so one refused DB
would fail every point of the request. Here a range longer than a PDU is read in pieces and
put back together, requests carry at most `max_items` variables, and each item's return code
is kept (see `response.py`), so only the points of a refused area go bad.

Budgets (S7comm): a request is a 10-byte header, 2 bytes of function and item count, and 12
bytes per item; a reply is a 12-byte header, the same 2 bytes, and per item 4 bytes of header,
the data, and a fill byte after odd-length data that is not the last item. Both must fit the
negotiated PDU.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

REQUEST_HEADER = 12  # 10-byte S7 header + function + item count
REPLY_HEADER = 14  # 12-byte S7 header (with error class/code) + function + item count
ITEM_SPEC = 12  # one item's address specification in a request
ITEM_HEADER = 4  # return code, transport size, length: before each item's data in a reply


class PlanError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Span:
    """The bytes one point occupies."""

    area: int
    db: int
    start: int
    size: int


@dataclass(frozen=True, slots=True)
class ReadRange:
    """A contiguous run of bytes of one area read for some points (indexes into the spans)."""

    area: int
    db: int
    start: int
    size: int
    points: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Item:
    """One variable of a read request: a piece of a range (all of it unless the range is
    larger than a PDU can carry)."""

    range: int  # index into the plan's ranges
    start: int
    size: int


@dataclass(frozen=True, slots=True)
class ReadRequest:
    items: tuple[Item, ...]


def max_item_bytes(pdu: int) -> int:
    """The most data bytes one item can carry in a reply of this PDU size, kept even."""
    return (pdu - REPLY_HEADER - ITEM_HEADER) & ~1


def coalesce(spans: Sequence[Span], max_gap: int) -> list[ReadRange]:
    """Spans of one area joined where at most `max_gap` unused bytes lie between them."""
    order = sorted(range(len(spans)), key=lambda i: (spans[i].area, spans[i].db, spans[i].start))
    ranges: list[ReadRange] = []
    cur: list[int] = []
    area = db = start = end = -1
    for i in order:
        s = spans[i]
        if cur and s.area == area and s.db == db and s.start - end <= max_gap:
            end = max(end, s.start + s.size)
            cur.append(i)
            continue
        if cur:
            ranges.append(ReadRange(area, db, start, end - start, tuple(cur)))
        cur, area, db, start, end = [i], s.area, s.db, s.start, s.start + s.size
    if cur:
        ranges.append(ReadRange(area, db, start, end - start, tuple(cur)))
    return ranges


def pack(ranges: Sequence[ReadRange], pdu: int, max_items: int = 20) -> list[ReadRequest]:
    """Ranges (split where a PDU cannot carry one whole) packed first-fit-decreasing into the
    fewest requests whose request and reply both fit `pdu`, at most `max_items` items each."""
    if pdu < REPLY_HEADER + ITEM_HEADER + 2:
        raise PlanError(f"a PDU of {pdu} bytes cannot carry a read")
    if max_items < 1:
        raise PlanError("max_items must be at least 1")
    limit = max_item_bytes(pdu)
    items: list[Item] = []
    for n, r in enumerate(ranges):
        for off in range(0, r.size, limit):
            items.append(Item(n, r.start + off, min(limit, r.size - off)))
    max_by_request = (pdu - REQUEST_HEADER) // ITEM_SPEC
    per_request = min(max_items, max_by_request)
    if per_request < 1:
        raise PlanError(f"a PDU of {pdu} bytes cannot carry a read")
    # reply bytes per request, counting a fill byte after every odd item (the last needs none:
    # at most one byte of a PDU is left unused for that)
    bins: list[tuple[list[Item], list[int]]] = []
    for it in sorted(items, key=lambda i: (-i.size, i.range, i.start)):
        cost = ITEM_HEADER + it.size + (it.size & 1)
        for chosen, used in bins:
            if len(chosen) < per_request and used[0] + cost <= pdu:
                chosen.append(it)
                used[0] += cost
                break
        else:
            bins.append(([it], [REPLY_HEADER + cost]))
    requests = [ReadRequest(tuple(sorted(chosen, key=lambda i: (i.range, i.start)))) for chosen, _ in bins]
    requests.sort(key=lambda r: (r.items[0].range, r.items[0].start))
    return requests


def _reply_size(items: Sequence[Item]) -> int:
    """Bytes of the reply to a request for these items, in request order."""
    size = REPLY_HEADER
    for n, it in enumerate(items):
        size += ITEM_HEADER + it.size + (it.size & 1 if n < len(items) - 1 else 0)
    return size


def reply_size(request: ReadRequest) -> int:
    return _reply_size(request.items)


def request_size(request: ReadRequest) -> int:
    return REQUEST_HEADER + ITEM_SPEC * len(request.items)


def plan_reads(
    spans: Sequence[Span], pdu: int, max_gap: int = 16, max_items: int = 20
) -> tuple[list[ReadRange], list[ReadRequest]]:
    ranges = coalesce(spans, max_gap)
    return ranges, pack(ranges, pdu, max_items)
