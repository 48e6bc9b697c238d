"""A fast-changing OPC UA server for benchmarks: N Double variables, all changed every `--step`.

    .venv/bin/python bench/opcua_source.py --port 4840 --nodes 5000 --step 0.1

asyncua's server, nodes ns=2;s=P00000.. in folders of 250 under Objects/bench, added with one
AddNodes call. `edgegw simulate` changes values with `Server.write_attribute_value`, which
looks the node up, checks the variant type and awaits each data-change callback, and each
monitored item deep-copies the value it is given: with a subscribed client it manages about
5,800 changes/s on this project's machine, and in a profile of that path three quarters of
the time is `copy.deepcopy`. Here each node's Value attribute is looked up once at start;
a step stores a new DataValue (the node's next value from a precomputed ring, the step's
timestamps) in it and queues the notification of each monitored item itself (`_notify`: what
asyncua's callback does for a reporting item without a filter, without a coroutine per item),
the monitored items keep the value without copying it (a new object each step, never changed
after), and the step lets the event loop in every 500 nodes so Publish requests are answered
while it runs. asyncua's server publishes the notifications as usual: a client with queue
size 1 gets, in each Publish response, the latest value of every node changed since its
previous one.

`--stats FILE`: every second, the changes made so far, the notifications put in Publish
responses so far (all subscriptions) and the time (JSON), from which the benchmark reads the
achieved change and publish rates.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import logging
import math
import time
from pathlib import Path

from asyncua import Server, ua
from asyncua.server.internal_subscription import InternalSubscription
from asyncua.server.monitored_item_service import MonitoredItemService, MonitoredItemValues

for noisy in ("asyncua", "asyncua.server", "asyncua.common"):
    logging.getLogger(noisy).setLevel(logging.CRITICAL)


FOLDER = 250
RING = 20
SLICE = 500
REPORTING = ua.MonitoringMode.Reporting


def _no_copy(self: MonitoredItemValues, value: ua.DataValue) -> None:
    self.old_dvalue = self.current_dvalue
    self.current_dvalue = value


def _notify(service: MonitoredItemService, handle: int, value: ua.DataValue) -> bool:
    """What asyncua's MonitoredItemService.datachange_callback does for a reporting item without
    a filter, on a subscription with a publishing interval: the value becomes the item's
    current one and, if it differs from the previous one, a notification is queued for the
    next Publish (at most queue_size per item, the oldest dropped). Any other item: False, and
    the caller awaits asyncua's own callback."""
    mid = service._monitored_datachange[handle]
    item = service._monitored_items[mid]
    isub = service.isub
    if item.filter or item.mode != REPORTING or isub.data.RevisedPublishingInterval <= 0:
        return False
    values = item.mvalue
    old = values.current_dvalue
    values.old_dvalue, values.current_dvalue = old, value
    if old is not None and old.StatusCode == value.StatusCode and old.Value == value.Value:
        return True
    notification = ua.MonitoredItemNotification(item.client_handle, value)
    queue = isub._triggered_datachanges
    pending = queue.get(mid)
    if pending is None:
        queue[mid] = [notification]
    else:
        if item.queue_size and len(pending) >= item.queue_size:
            pending.pop(0)
        pending.append(notification)
    return True


PUBLISHED = [0]  # notifications put in Publish responses, all subscriptions
_pop = InternalSubscription._pop_triggered_datachanges


def _counted_pop(self: InternalSubscription, result: ua.PublishResult) -> None:
    PUBLISHED[0] += sum(len(q) for q in self._triggered_datachanges.values())
    _pop(self, result)


def node_name(i: int) -> str:
    return f"P{i:05d}"


async def serve(port: int, nodes: int, step: float, stats: Path | None, offset: int = 0) -> None:
    # asyncua deep-copies every value a monitored item sees (against a writer that mutates a
    # DataValue after writing it); that copy is three quarters of a step's time. The values
    # written here are new objects, never touched again, so the monitored items keep them as is.
    MonitoredItemValues.set_current_datavalue = _no_copy
    InternalSubscription._pop_triggered_datachanges = _counted_pop
    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}")
    server.set_server_name("edgegw bench source")
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    ns = await server.register_namespace("urn:edgegw:bench")
    assert ns == 2, ns
    root = await server.nodes.objects.add_folder(ua.NodeId("bench", ns), ua.QualifiedName("bench", ns))
    ids = [ua.NodeId(node_name(offset + i), ns) for i in range(nodes)]
    # one AddNodes call for all of them, FOLDER nodes a folder (asyncua checks a new node's
    # browse name against every sibling, so 5,000 in one folder take half a minute)
    items = []
    folder = root.nodeid
    for k, nid in enumerate(ids):
        if k % FOLDER == 0:
            name = f"g{(offset + k) // FOLDER:03d}"
            folder = (await root.add_folder(ua.NodeId(name, ns), ua.QualifiedName(name, ns))).nodeid
        attrs = ua.VariableAttributes(
            DisplayName=ua.LocalizedText(nid.Identifier),
            DataType=ua.NodeId(ua.ObjectIds.Double),
            Value=ua.Variant(0.0, ua.VariantType.Double),
            ValueRank=ua.ValueRank.Scalar,
            AccessLevel=ua.AccessLevel.CurrentRead.mask,
            UserAccessLevel=ua.AccessLevel.CurrentRead.mask,
        )
        items.append(
            ua.AddNodesItem(
                ParentNodeId=folder,
                ReferenceTypeId=ua.NodeId(ua.ObjectIds.HasComponent),
                RequestedNewNodeId=nid,
                BrowseName=ua.QualifiedName(nid.Identifier, ns),
                NodeClass=ua.NodeClass.Variable,
                NodeAttributes=attrs,
                TypeDefinition=ua.NodeId(ua.ObjectIds.BaseDataVariableType),
            )
        )
    for res in await server.iserver.isession.add_nodes(items):
        res.StatusCode.check()
    aspace = server.iserver.aspace
    attrs = [aspace[nid].attributes[ua.AttributeIds.Value] for nid in ids]
    good = ua.StatusCode()
    # each node cycles through RING values (a sine, a different phase per node), made once
    ring = [
        [
            ua.Variant(500.0 + 400.0 * math.sin(2 * math.pi * k / RING + i), ua.VariantType.Double)
            for i in range(nodes)
        ]
        for k in range(RING)
    ]
    await server.start()
    changes = 0
    next_stats = time.monotonic() + 1
    tick = 0
    try:
        next_at = time.monotonic()
        while True:
            next_at += step
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            tick += 1
            now = dt.datetime.now(dt.UTC)
            for k, (attr, variant) in enumerate(zip(attrs, ring[tick % RING], strict=True)):
                if k % SLICE == 0:
                    await asyncio.sleep(0)  # let Publish requests in between slices of a step
                dv = ua.DataValue(
                    variant,
                    good,
                    SourceTimestamp=now,
                    ServerTimestamp=now,
                )
                attr.value = dv
                for handle, callback in attr.datachange_callbacks.items():
                    if not _notify(callback.__self__, handle, dv):
                        await callback(handle, dv)
            changes += nodes
            if stats is not None and time.monotonic() >= next_stats:
                next_stats += 1
                part = stats.with_suffix(".part")
                part.write_text(
                    json.dumps({"changes": changes, "published": PUBLISHED[0], "t": time.monotonic()})
                )
                part.replace(stats)
    finally:
        await server.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=4840)
    ap.add_argument("--nodes", type=int, default=5000)
    ap.add_argument("--offset", type=int, default=0, help="first node number (P<offset>..)")
    ap.add_argument("--step", type=float, default=0.1, help="seconds between changes of every node")
    ap.add_argument("--stats", type=Path)
    args = ap.parse_args()
    asyncio.run(serve(args.port, args.nodes, args.step, args.stats, args.offset))


if __name__ == "__main__":
    main()
