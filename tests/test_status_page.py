"""The status page in a real headless browser (Debian's chromium + chromedriver via Selenium)
against the running gateway: live values appear and change at the point's resolution, each
numeric point draws its trend from the gateway's history, a click opens the larger chart with
the unit and the range band, device health is shown, devices, queues and identifier
registrations are shown, the labels switch between English and Chinese; when reads need the
token, the page signs in once and reads by session cookie, keeping no token anywhere.

Set EDGEGW_SCREENSHOTS=<dir> to keep the screenshots (the README's come from this test)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from api_plant import PREFIX, TOKEN, ApiPlant
from edgegw.gateway.api.feed import changes
from edgegw.gateway.api.history import MAX_BYTES, History, decimals
from edgegw.gateway.dictionary import DictionaryEntry
from edgegw.gateway.normalise import Reading
from harness import wait_for
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver


def _binary(name: str, *fallbacks: str) -> str:
    for candidate in (shutil.which(name), *fallbacks):
        if candidate and os.path.exists(candidate):
            return candidate
    raise RuntimeError(f"{name} is not installed (apt-get install -y chromium chromium-driver)")


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    opts = webdriver.ChromeOptions()
    opts.binary_location = _binary("chromium", "/usr/bin/chromium")
    for arg in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-dev-shm-usage",
        "--window-size=1280,1480",
        "--lang=en-US",
        f"--user-data-dir={tmp_path / 'chromium'}",
    ):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(_binary("chromedriver", "/usr/bin/chromedriver")), options=opts)
    try:
        yield driver
    finally:
        driver.quit()


def _text(browser: WebDriver, css: str) -> str:
    """The text of an element, read in one step: the page re-renders the cards every second, so an
    element found first and read later may already be replaced."""
    return str(
        browser.execute_script(
            "const e = document.querySelector(arguments[0]); return e ? e.innerText : ''", css
        )
    )


def _cell(browser: WebDriver, device: str, point: str) -> str:
    return _text(browser, f"#dev-{device} tr[data-point={point}] td[data-v]")


def _spark(browser: WebDriver, device: str, point: str) -> tuple[int, int, int]:
    """(samples drawn, pixels painted, time of the newest sample) of a point's sparkline."""
    got = browser.execute_script(
        """const c = document.querySelector(arguments[0]);
        if (!c) return [0, 0, 0];
        const px = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
        let painted = 0;
        for (let i = 3; i < px.length; i += 4) if (px[i] > 0) painted++;
        return [Number(c.dataset.n || 0), painted, Number(c.dataset.last || 0)];""",
        f"#dev-{device} tr[data-point={point}] canvas",
    )
    return int(got[0]), int(got[1]), int(got[2])


ALARM = """    alarms:
      - id: hot_barrel
        when: "barrel_temp_1 > -1"
        severity: high
        message: {en: "Barrel zone 1 over temperature", zh: "料筒1区超温"}
"""


def _with_alarm(p: ApiPlant) -> None:
    """Reload the plant with an alarm on im-a that holds at once."""
    text = p.config.read_text()
    poll = "    poll: {interval: 200ms, backoff_max: 1s}\n"
    assert text.count(poll) == 1
    p.config.write_text(text.replace(poll, poll + ALARM))
    before = p.gw.output().count("config reloaded")
    os.kill(p.gw.pid, signal.SIGHUP)
    wait_for(lambda: p.gw.output().count("config reloaded") > before, 10, "the reload")


def _shot(browser: WebDriver, name: str, tmp: Path) -> None:
    browser.save_screenshot(str(tmp / name))
    keep = os.environ.get("EDGEGW_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp / name, Path(keep) / name)


def _open_chart_and_switch_language(browser: WebDriver, tmp_path: Path) -> None:
    # a click on a point opens the larger chart: name, unit, the range as a band
    browser.find_element(By.CSS_SELECTOR, "#dev-im-a tr[data-point=barrel_temp_1]").click()
    wait_for(lambda: browser.find_element(By.ID, "chart-box").is_displayed(), 5, "the chart")
    assert "Barrel temperature zone 1 (°C)" in _text(browser, "#chart-title")
    assert _text(browser, "#chart-range") == "range 0.0 – 400.0 °C"
    wait_for(
        lambda: browser.find_element(By.ID, "chart-box").get_attribute("data-band") == "0,400", 5, "the band"
    )
    assert int(browser.find_element(By.ID, "chart-box").get_attribute("data-n") or 0) >= 3
    assert browser.find_elements(By.CSS_SELECTOR, "#chart .uplot canvas")
    _shot(browser, "status-page-chart.png", tmp_path)
    browser.find_element(By.ID, "chart-close").click()
    assert not browser.find_element(By.ID, "chart-box").is_displayed()

    # Chinese labels, and the choice survives a reload of the page
    browser.find_element(By.ID, "lang").click()
    wait_for(lambda: "缓存队列" in _text(browser, "body"), 5, "Chinese labels")
    body = _text(browser, "body")
    assert "料筒温度1区" in body and "最近的标识注册" in body and "在线" in body
    browser.refresh()
    wait_for(lambda: "料筒温度1区" in _text(browser, "body"), 15, "Chinese after reload")
    wait_for(lambda: "料筒1区超温" in _text(browser, "#alarms"), 10, "the alarm in Chinese")
    assert "已确认" in _text(browser, "#alarms")
    _shot(browser, "status-page.zh.png", tmp_path)


def test_status_page_shows_live_values(api_plant: ApiPlant, browser: WebDriver, tmp_path: Path) -> None:
    p = api_plant
    serial = f"PAGE-{int(time.time() * 1000) % 10**9}"
    p.hold("im-a", "product_serial", serial)
    browser.get(p.base + "/")
    first = wait_for(lambda: _cell(browser, "im-a", "barrel_temp_1") not in ("", "—"), 15, "a live value")
    assert first
    before = _cell(browser, "im-a", "barrel_temp_1")
    wait_for(lambda: _cell(browser, "im-a", "barrel_temp_1") != before, 15, "the value changing")
    # values at the point's resolution: an int16 scaled by 0.1 shows one decimal, a counter none,
    # a float32 over [0, 2500] bar whole bars (not seven digits)
    assert re.fullmatch(r"\d+\.\d", _cell(browser, "im-a", "barrel_temp_1")), _cell(
        browser, "im-a", "barrel_temp_1"
    )
    assert re.fullmatch(r"\d+", _cell(browser, "im-a", "injection_pressure")), _cell(
        browser, "im-a", "injection_pressure"
    )
    # a trend draws from the gateway's history, and grows
    wait_for(lambda: _spark(browser, "im-a", "barrel_temp_1")[0] >= 3, 15, "a trend of 3 samples")
    n, painted, last = _spark(browser, "im-a", "barrel_temp_1")
    assert painted > 20, painted
    # it moves on: newer samples (and more of them, until the plant has run for the whole
    # window and the ring is full: the api plant is shared by the session's tests)
    wait_for(lambda: _spark(browser, "im-a", "barrel_temp_1")[2] > last, 10, "the trend moving on")
    if n < 250:
        wait_for(lambda: _spark(browser, "im-a", "barrel_temp_1")[0] > n, 10, "the trend growing")
    assert not browser.find_elements(By.CSS_SELECTOR, "#dev-im-a tr[data-point=product_serial] canvas")
    # device health: poll latency, overruns, failed polls
    health = _text(browser, "#dev-im-a .health")
    assert "poll" in health and "ms" in health and "overruns" in health and "failed polls" in health, health
    # the values shown are the gateway's
    shown = float(_cell(browser, "im-a", "shot_count"))
    api = p.get("/api/v1/devices/im-a/points").json()["points"]["shot_count"]["v"]
    assert abs(shown - api) <= 10
    page = _text(browser, "body")
    assert "Barrel temperature zone 1" in page and "°C" in page
    assert "online" in _text(browser, "#dev-em-c h2")
    assert browser.find_elements(By.CSS_SELECTOR, "#queues tr[data-stream=mqtt]")
    assert "Queues" in page and "Recent identifier registrations" in page
    wait_for(lambda: f"{PREFIX}/{serial}" in _text(browser, "#ids"), 15, "the registration")
    assert "live" in _text(browser, "#live")

    # an alarm appears in the list and is acknowledged from the page, with the token
    assert browser.find_element(By.ID, "alarms-card").is_displayed()
    assert "no active alarms" in _text(browser, "#alarms")
    _with_alarm(p)
    try:
        row = "#alarms tr[data-alarm='im-a/hot_barrel']"
        wait_for(lambda: "Barrel zone 1 over temperature" in _text(browser, row), 15, "the alarm")
        assert "high" in _text(browser, row) and "1 active alarm" in _text(browser, "#alarm-count")
        _shot(browser, "status-page.png", tmp_path)
        browser.find_element(By.CSS_SELECTOR, f"{row} button.ack").click()
        wait_for(lambda: browser.find_element(By.ID, "ack-box").is_displayed(), 5, "the token prompt")
        browser.find_element(By.ID, "ack-token").send_keys("wrong-token")
        browser.find_element(By.ID, "ack-go").click()
        wait_for(lambda: "not valid" in _text(browser, "#ack-err"), 5, "the wrong token refused")
        assert p.get("/api/v1/alarms").json()[0]["acked"] is False
        browser.find_element(By.ID, "ack-token").send_keys(TOKEN)
        browser.find_element(By.ID, "ack-go").click()
        wait_for(lambda: "acknowledged" in _text(browser, row), 10, "the alarm acknowledged")
        assert not browser.find_element(By.ID, "ack-box").is_displayed()
        [alarm] = p.get("/api/v1/alarms").json()
        assert alarm["device"] == "im-a" and alarm["acked"] is True and alarm["acked_at"]
        assert TOKEN not in browser.execute_script("return JSON.stringify([sessionStorage, localStorage])")
        _open_chart_and_switch_language(browser, tmp_path)
    finally:
        p.reload()
    wait_for(lambda: "料筒1区超温" not in _text(browser, "#alarms"), 15, "the alarm gone with its config")
    browser.find_element(By.ID, "lang").click()

    # a device that stops answering turns offline on the page, with its error
    p.fault("em-c", "silent")
    try:
        wait_for(lambda: "offline" in _text(browser, "#dev-em-c h2"), 20, "offline")
        assert "no response" in _text(browser, "#dev-em-c")
    finally:
        p.fault("em-c", None)
    wait_for(lambda: "online" in _text(browser, "#dev-em-c h2"), 20, "online again")
    refused = "/ack - Failed to load resource: the server responded with a status of 403"  # the wrong token
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE" and refused not in e["message"]]
    assert not errors, errors


def test_status_page_signs_in_and_keeps_no_token(api_plant: ApiPlant, browser: WebDriver) -> None:
    p = api_plant
    p.reload("  read_requires_token: true\n")
    try:
        browser.get(p.base + "/")
        wait_for(lambda: browser.find_element(By.ID, "banner").is_displayed(), 15, "the token prompt")
        browser.find_element(By.ID, "token").send_keys("wrong-token")
        browser.find_element(By.ID, "token-go").click()
        wait_for(lambda: "not valid" in _text(browser, "#token-err"), 10, "the wrong token refused")
        browser.find_element(By.ID, "token").send_keys(TOKEN)
        browser.find_element(By.ID, "token-go").click()
        wait_for(lambda: _cell(browser, "im-a", "barrel_temp_1") not in ("", "—"), 15, "live values")
        assert not browser.find_element(By.ID, "banner").is_displayed()
        assert "live" in _text(browser, "#live")
        # the session is an HttpOnly, SameSite=Strict cookie with a random id; the token is
        # neither kept by the page nor ever part of a URL it requested
        cookie = browser.get_cookie(f"edgegw_session_{p.api_port}")
        assert cookie is not None and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        assert TOKEN not in cookie["value"]
        assert browser.execute_script("return document.cookie") == ""
        kept = browser.execute_script("return JSON.stringify([sessionStorage, localStorage])")
        assert TOKEN not in kept
        urls = browser.execute_script("return performance.getEntries().map((e) => e.name)")
        assert urls and not any(TOKEN in u or "access_token" in u for u in urls), urls
    finally:
        p.reload()


# ---- the history behind the trends, and the page's live feed (no browser) ----


def _fake_gateway(devices: int, points: int) -> Any:
    entries = [
        DictionaryEntry(id=f"p{i:03d}", type="int16", scale=0.1, range=(0.0, 400.0)) for i in range(points)
    ]
    entries.append(DictionaryEntry(id="name", type="string"))
    ids = [f"dev-{d:04d}" for d in range(devices)]
    gw = SimpleNamespace(
        loaded=SimpleNamespace(devices=[SimpleNamespace(index=d, points=entries) for d in range(devices)]),
        cfg=SimpleNamespace(devices=[SimpleNamespace(id=i) for i in ids]),
        runners={},
    )
    for i in ids:
        gw.runners[i] = SimpleNamespace(latest=[Reading(e.id, 0.0, "good") for e in entries])
    return gw


def test_history_stays_bounded_at_1000_devices_x_100_points() -> None:
    gw = _fake_gateway(1000, 100)
    h = History(gw)
    started = time.perf_counter()
    h.tick(1000.0)
    took = time.perf_counter() - started
    assert h.points == 100_000  # the string point has no trend
    assert h.samples == MAX_BYTES // (4 * 100_000) == 83
    assert h.nbytes <= MAX_BYTES + 8 * h.samples
    assert h.step == pytest.approx(300 / 83) and h.step * h.samples == pytest.approx(300)
    assert took < 1.0, took  # one pass over 100,000 points, every 3.6 s
    # a reload with the same devices keeps their trends
    gw.loaded = SimpleNamespace(devices=list(gw.loaded.devices))
    h.tick(2000.0)
    assert h.filled == 2 and h.series("dev-0999")["ts"] == [1000, 2000]


def test_history_is_kept_only_while_someone_looks() -> None:
    gw = _fake_gateway(20, 10)

    async def main() -> None:
        stopping = asyncio.Event()
        h = History(gw, idle=0.5)
        h.start(stopping)
        await asyncio.sleep(0.2)
        assert h.nbytes == 0 and h.filled == 0  # nobody looked: nothing recorded, nothing held
        h.watched()
        await asyncio.sleep(0.2)
        assert h.filled == 1 and h.nbytes > 0 and h.series("dev-0003")["points"]["p001"] == [0.0]
        await asyncio.sleep(1.5)  # the step is 1 s; nobody looked again for 0.5 s
        assert h.nbytes == 0 and h.devices == {}
        h.watched()  # a new viewer starts again
        await asyncio.sleep(0.2)
        assert h.filled == 1 and h.nbytes > 0
        stopping.set()
        await asyncio.sleep(0.05)

    asyncio.run(main())


def test_history_ring_wraps_and_marks_bad_readings() -> None:
    gw = _fake_gateway(3, 2)
    h = History(gw, max_bytes=4 * 6 * 10, max_samples=10, min_samples=4)  # 6 points x 10 samples
    assert (h.samples, h.step) == (0, 1.0)
    for k in range(25):
        latest = gw.runners["dev-0001"].latest
        latest[0] = Reading("p000", 100.0 + k + 0.04, "good")
        latest[1] = (
            Reading("p001", None, "bad", "timeout") if k % 2 else Reading("p001", float(k), "uncertain")
        )
        h.tick(1000.0 * k)
    assert h.samples == 10 and h.step == 30.0  # the window still 300 s
    s = h.series("dev-0001")
    assert s["ts"] == [1000 * k for k in range(15, 25)]
    assert s["points"]["p000"] == [round(100.04 + k, 2) for k in range(15, 25)]
    assert s["points"]["p001"] == [None if k % 2 else float(k) for k in range(15, 25)]
    assert h.series("dev-0001", since=22000)["ts"] == [23000, 24000]
    assert h.series("nope") == {"ts": [], "points": {}}
    # beyond the byte budget even at min_samples: devices left out, and said so
    small = History(_fake_gateway(3, 2), max_bytes=4 * 2 * 4, max_samples=10, min_samples=4)
    small.tick(0.0)
    assert list(small.devices) == ["dev-0000"] and small.describe()["without_history"] == [
        "dev-0001",
        "dev-0002",
    ]


@pytest.mark.parametrize(
    ("kind", "scale", "rng", "places"),
    [
        ("int16", 0.1, None, 1),
        ("uint32", 1.0, None, 0),
        ("int32", 0.01, (0.0, 100.0), 2),
        ("float32", 1.0, (0.0, 2500.0), 0),
        ("float32", 1.0, (5.0, 120.0), 1),
        ("float64", 1.0, (-1.0, 1.0), 3),
        ("float32", 1.0, None, None),
        ("string", 1.0, None, None),
    ],
)
def test_values_are_shown_at_the_points_resolution(
    kind: str, scale: float, rng: tuple[float, float] | None, places: int | None
) -> None:
    assert decimals(DictionaryEntry(id="x", type=kind, scale=scale, range=rng)) == places


def test_feed_changes_carry_only_what_changed() -> None:
    a = {"state": "online", "id": "a"}
    old = {"summary": {"n": 1}, "devices": {"a": a, "b": {"id": "b"}, "c": {"id": "c"}}, "identifiers": []}
    new = {"summary": {"n": 2}, "devices": {"a": a, "c": {"id": "c", "last_error": "x"}}, "identifiers": []}
    assert changes(old, new) == {
        "summary": {"n": 2},
        "devices": [{"id": "c", "last_error": "x"}],
        "removed": ["b"],
        "order": ["a", "c"],
    }
    assert changes(new, new) == {"summary": {"n": 2}, "devices": []}


def test_delta_feed_and_view_of_the_devices_on_screen(api_plant: ApiPlant) -> None:
    p = api_plant
    events: list[tuple[str, dict[str, Any]]] = []
    with httpx.stream("GET", p.base + "/api/v1/events?mode=delta", timeout=10) as r:
        kind = ""
        for line in r.iter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                events.append((kind, json.loads(line[6:])))
                if len(events) == 3:
                    break
    (k0, state), (k1, _), (k2, d2) = events
    assert (k0, k1, k2) == ("state", "delta", "delta")
    assert [d["id"] for d in state["devices"]] == ["im-a", "em-c"] and state["alarms"] is True
    assert "values" not in state["devices"][0] and state["history"]["step_s"] == 1.0
    # a device whose health did not change is not sent again, nor are the identifiers
    assert d2["devices"] == [] and "identifiers" not in d2 and d2["summary"]["samples"] > 0
    # the trends are recorded from the first viewer on (the feed above): two samples a second apart
    deadline = time.monotonic() + 10
    while True:
        v = p.get("/api/v1/view", params={"devices": "im-a,nope", "meta": "true"}).json()
        if len(v["devices"][0]["history"]["ts"]) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    [dev] = v["devices"]
    assert dev["id"] == "im-a" and dev["counters"]["polls"] > 0
    assert dev["values"]["barrel_temp_1"]["decimals"] == 1 and dev["values"]["barrel_temp_1"]["unit"] == "CEL"
    h = dev["history"]
    assert len(h["ts"]) >= 2 and all(len(h["points"][k]) == len(h["ts"]) for k in h["points"])
    assert "product_serial" not in h["points"] and "barrel_temp_1" in h["points"]
    newer = p.get("/api/v1/view", params={"devices": "im-a", "since": h["ts"][-1]}).json()["devices"][0]
    assert (
        all(ts > h["ts"][-1] for ts in newer["history"]["ts"])
        and "unit" not in newer["values"]["barrel_temp_1"]
    )
