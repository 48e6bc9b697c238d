"""What the status page costs the gateway: Modbus TCP simulators -> edgegw (API on) ->
Mosquitto, 1,000 devices x 100 points at 1 s by default; the gateway's CPU (utime+stime from
/proc) in alternating windows: without the page (the browser on about:blank), then with the
page open in headless Chromium (paging to the next 12 devices every 5 s, so devices keep coming
on screen and load their trends), `--rounds` times. The page's cost is the mean difference; it
is also given at the same polled values a second (the browser's own CPU on a small machine can
slow the gateway's polls, which would hide the page's cost). The gateway runs on the first CPU
and everything else on the others (unless --no-pin), so the browser does not take its CPU.

    flock /tmp/edgegw-cpu.lock .venv/bin/python bench/status_page.py --devices 1000 --seconds 30

Prints one line of figures and writes bench/results/status-page-<devices>x<points>@<interval>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from plant import (
    EDGEGW,
    ROOT,
    Proc,
    cpu_seconds,
    free_port,
    gateway_status,
    start_mosquitto,
    start_simulators,
    vm,
    wait_for,
    write_config,
)


def browser(profile: Path) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1280,1480",
        "--lang=en-US",
        f"--user-data-dir={profile}",
    ):
        opts.add_argument(arg)
    driver = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    return webdriver.Chrome(service=Service(driver), options=opts)


def measure(pid: int, api_port: int, seconds: float, during: Callable[[], None] | None = None) -> dict:
    """The gateway's CPU over `seconds` (% of one core) and the point values it polled a second;
    `during()` is called every 5 s."""
    v0 = gateway_status(api_port)["point_values"]
    c0, t0 = cpu_seconds(pid), time.monotonic()
    while time.monotonic() - t0 < seconds:
        time.sleep(min(5.0, max(0.0, seconds - (time.monotonic() - t0))))
        if during is not None and time.monotonic() - t0 < seconds:
            during()
    c1, t1 = cpu_seconds(pid), time.monotonic()
    v1 = gateway_status(api_port)["point_values"]
    return {"cpu_pct": round(100 * (c1 - c0) / (t1 - t0), 2), "values_per_s": round((v1 - v0) / (t1 - t0))}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--points", type=int, default=100)
    ap.add_argument("--interval", default="1s")
    ap.add_argument("--seconds", type=float, default=30.0, help="length of each window")
    ap.add_argument("--rounds", type=int, default=3, help="pairs of windows, without and with the page")
    ap.add_argument("--simulators", type=int, default=4)
    ap.add_argument(
        "--no-pin",
        action="store_true",
        help="do not keep the gateway on CPU 0 and everything else (simulators, broker, browser) on the others",
    )
    args = ap.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    pin = not args.no_pin and len(cpus) >= 2
    if pin:  # what this process starts inherits its CPUs; the gateway gets its own
        os.sched_setaffinity(0, cpus[1:])
    with tempfile.TemporaryDirectory(prefix="edgegw-bench-page-") as t:
        tmp = Path(t)
        mqtt_port, api_port = free_port(), free_port()
        broker = start_mosquitto(tmp, mqtt_port)
        sim_ports = [free_port() for _ in range(args.simulators)]
        full = write_config(
            tmp, args.devices, args.points, args.interval, mqtt_port, sim_ports, api_port=api_port
        )
        sims = start_simulators(tmp, full, sim_ports)
        gw = None
        try:
            taskset = ["taskset", "-c", str(cpus[0])] if pin else []
            gw = Proc([*taskset, *EDGEGW, "run", "-c", str(full)], tmp / "gw.log")
            wait_for(lambda: _online(api_port) >= args.devices, 120, "every device online")
            time.sleep(5)  # settle; the history has its layout
            base = f"http://127.0.0.1:{api_port}"
            driver = browser(tmp / "chromium")
            first = "#main section.device tr[data-point=p0000] td[data-v]"
            rounds: list[dict[str, Any]] = []
            pages = [0]
            errors: list[Any] = []
            try:
                for _ in range(args.rounds):
                    driver.get("about:blank")  # no page: its feed and its reads stop
                    time.sleep(2)
                    off = measure(gw.pid, api_port, args.seconds)
                    driver.get(base + "/")
                    wait_for(
                        lambda: driver.execute_script(
                            "const e = document.querySelector(arguments[0]); return e && e.textContent", first
                        ),
                        30,
                        "values on the page",
                    )

                    def next_page() -> None:
                        driver.execute_script("document.getElementById('next').click()")
                        pages[0] += 1

                    on = measure(gw.pid, api_port, args.seconds, next_page)
                    shown = driver.execute_script("return document.querySelectorAll('section.device').length")
                    errors += [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
                    rounds.append({"without": off, "with": on, "cards_on_screen": shown})
                    print(
                        f"  without {off['cpu_pct']:.1f}% ({off['values_per_s']:.0f} values/s), "
                        f"with {on['cpu_pct']:.1f}% ({on['values_per_s']:.0f} values/s)",
                        flush=True,
                    )
            finally:
                driver.quit()
            view = httpx.get(f"{base}/api/v1/view", params={"devices": "dev-0000"}, timeout=10).json()
            rss = vm(gw.pid, "VmRSS")
        finally:
            if gw is not None:
                gw.stop()
            for s in sims:
                s.stop()
            broker.stop()
        off_cpu = statistics.mean(r["without"]["cpu_pct"] for r in rounds)
        on_cpu = statistics.mean(r["with"]["cpu_pct"] for r in rounds)
        # the gateway's CPU for the values it polled: on a busy machine the browser's own CPU can
        # slow the gateway's polls, which would hide the page's cost in the raw figures
        per_value = statistics.mean(r["without"]["cpu_pct"] / r["without"]["values_per_s"] for r in rounds)
        cost = statistics.mean(r["with"]["cpu_pct"] - per_value * r["with"]["values_per_s"] for r in rounds)
        result = {
            "devices": args.devices,
            "points": args.points,
            "interval": args.interval,
            "seconds_per_window": args.seconds,
            "rounds": rounds,
            "gateway_cpu_without_page_pct": round(off_cpu, 1),
            "gateway_cpu_with_page_pct": round(on_cpu, 1),
            "page_cost_pct_of_a_core_raw": round(on_cpu - off_cpu, 1),
            "page_cost_pct_of_a_core_per_value": round(cost, 1),
            "pages_visited": pages[0] + args.rounds,
            "browser_errors": len(errors),
            "history": view["history"],
            "gateway_rss_mb": round(rss, 1),
            "cpus": os.cpu_count(),
            "gateway_pinned_to_its_own_cpu": pin,
        }
        print(
            f"{args.devices} devices x {args.points} points @ {args.interval}: gateway CPU "
            f"{off_cpu:.1f}% without the page, {on_cpu:.1f}% with it open ({args.rounds} rounds of "
            f"{args.seconds:g} s each); the page costs {on_cpu - off_cpu:+.1f}% of a core "
            f"({cost:+.1f}% at the same polled values/s); history "
            f"{view['history']['samples']} samples/point every {view['history']['step_s']} s, "
            f"{view['history']['bytes'] / 2**20:.1f} MiB; RSS {rss:.0f} MB; browser errors {len(errors)}"
        )
        out = ROOT / "bench" / "results" / f"status-page-{args.devices}x{args.points}@{args.interval}.json"
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")


def _online(api_port: int) -> int:
    try:
        return int(gateway_status(api_port)["devices"]["online"])
    except (httpx.HTTPError, KeyError, ValueError):
        return 0


if __name__ == "__main__":
    main()
