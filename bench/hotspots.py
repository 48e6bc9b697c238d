"""Where a py-spy profile's time goes: the functions with the most samples on top of the stack
(self) and anywhere in it (total), and the share per area of the gateway.

    .venv/bin/python bench/run.py --devices 1000 --interval 1s --sim-processes 4 --profile /tmp/p.txt
    .venv/bin/python bench/hotspots.py /tmp/p.txt
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

# the first matching frame from the top of a stack names its area
AREAS = [
    ("paho network thread", re.compile(r"paho/mqtt/client\.py.*\((_thread_main|loop_forever)")),
    ("MQTT sink", re.compile(r"gateway/sinks/mqtt/")),
    ("durable queue", re.compile(r"gateway/durable_queue\.py")),
    ("normaliser", re.compile(r"gateway/normal|gateway/computed\.py")),
    ("Modbus driver", re.compile(r"drivers/modbus/")),
    ("pymodbus", re.compile(r"pymodbus/")),
    ("scheduler", re.compile(r"gateway/scheduler\.py")),
    ("API, status page", re.compile(r"gateway/api/|uvicorn/|starlette/|fastapi/")),
    ("asyncio", re.compile(r"asyncio/")),
]


def frames(stack: str) -> list[str]:
    return stack.split(";")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("profile")
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args()
    self_, total, areas = Counter[str](), Counter[str](), Counter[str]()
    n = 0
    for line in Path(args.profile).read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        c = int(count)
        n += c
        fs = frames(stack)
        self_[_short(fs[-1])] += c
        for f in set(map(_short, fs)):
            total[f] += c
        area = "other"
        for f in reversed(fs):
            hit = next((name for name, rx in AREAS if rx.search(f)), None)
            if hit:
                area = hit
                break
        areas[area] += c
    print(f"{n} samples")
    print("\nby area (innermost gateway frame):")
    for name, c in areas.most_common():
        print(f"  {100 * c / n:5.1f} %  {name}")
    print("\nself:")
    for name, c in self_.most_common(args.top):
        print(f"  {100 * c / n:5.1f} %  {name}")
    print("\ntotal:")
    for name, c in total.most_common(args.top):
        print(f"  {100 * c / n:5.1f} %  {name}")


def _short(frame: str) -> str:
    # "fn (path/to/file.py:123)" -> "fn (file.py)"; py-spy raw format
    m = re.match(r"(.*) \((.*?):\d+\)$", frame)
    if not m:
        return frame
    fn, path = m.groups()
    parts = path.split("/")
    return f"{fn} ({'/'.join(parts[-2:])})"


if __name__ == "__main__":
    main()
