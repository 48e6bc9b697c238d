"""Print edgegw's MQTT traffic as a live, readable summary: one line per data message, with
units from the retained meta, and every status change."""

from __future__ import annotations

import argparse
import contextlib
import json
import time

import paho.mqtt.client as paho
from edgegw.gateway.config.units import unit_symbol
from paho.mqtt.enums import CallbackAPIVersion

meta: dict[str, dict] = {}


def on_message(_c, _u, msg: paho.MQTTMessage) -> None:
    parts = msg.topic.split("/")
    try:
        body = json.loads(msg.payload) if msg.payload else {}
    except ValueError:
        return
    kind = parts[-1]
    if kind == "meta":
        meta[parts[-2]] = body.get("points", {})
    elif kind == "status":
        who = parts[-2] if len(parts) > 3 else f"gateway {parts[-2]}"
        reason = f" ({body['reason']})" if body.get("reason") else ""
        print(f"{time.strftime('%H:%M:%S')}  {who:<8} status: {body.get('state')}{reason}", flush=True)
    elif kind == "identifiers":
        extra = body.get("error") or body.get("note") or ""
        print(
            f"{time.strftime('%H:%M:%S')}  identifier {body.get('handle')} {body.get('state')} {extra}".rstrip(),
            flush=True,
        )
    elif kind == "resolved":
        rec = body.get("record")
        shown = ", ".join(f"{v['type']}={v['value']}" for v in rec["values"]) if rec else body.get("error")
        print(f"{time.strftime('%H:%M:%S')}  resolved   {body.get('handle')}: {shown}", flush=True)
    elif kind == "data":
        device = parts[-2]
        shown = []
        for pid, p in list(body.get("points", {}).items())[:6]:
            unit = unit_symbol(meta.get(device, {}).get(pid, {}).get("unit")) or ""
            value = p["v"] if p["q"] == "good" else f"{p['q']}:{p.get('reason') or p['v']}"
            if isinstance(value, float):
                value = f"{value:.1f}"
            shown.append(f"{pid}={value}{unit}")
        more = len(body.get("points", {})) - len(shown)
        tail = f" +{more} more" if more > 0 else ""
        print(
            f"{time.strftime('%H:%M:%S')}  {device:<8} seq={body.get('seq'):<5} {' '.join(shown)}{tail}",
            flush=True,
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=1883)
    ap.add_argument("--topic", default="edgegw/#")
    args = ap.parse_args()
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"edgegw-watch-{time.time_ns()}")
    client.on_message = on_message
    client.on_connect = lambda c, u, f, rc, p: c.subscribe(args.topic, qos=1)
    for _ in range(50):
        try:
            client.connect(args.host, args.port)
            break
        except OSError:
            time.sleep(0.2)
    with contextlib.suppress(KeyboardInterrupt):
        client.loop_forever()


if __name__ == "__main__":
    main()
