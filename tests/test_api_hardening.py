"""The HTTP API under abuse and faults, over real HTTP against a running gateway: bodies too
large (declared or streamed) refused without the process growing, requests and live streams
capped, one live snapshot shared by every stream, Host names checked (DNS rebinding), reads by
session cookie instead of a token in the URL, writes that always answer with a JSON problem,
each point's own time, the identifier node answering garbage or gone, and the durable queue
failing under the API.

The plant: `edgegw simulate` (a Modbus device and an OPC UA server with a subscription), a
small HTTP server in this process playing a misbehaving identifier node, no MQTT broker (so
the gateway is not ready), and `edgegw run` with the API."""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from edgegw.gateway.config.schema import ApiSettings
from edgegw.gateway.durable_queue import _SCHEMA
from harness import EDGEGW, Proc, free_port, wait_for, wait_port

TOKEN = "h4rdening-t0ken"
PREFIX = "88.118.8"
MB = 1024 * 1024


class BadNode:
    """An identifier node that logs in fine and then answers what `mode` says; stop() takes it
    off the network (connection refused), start() brings it back on the same port."""

    def __init__(self, port: int):
        self.port = port
        self.mode = "garbage"
        self.start()

    def start(self) -> None:
        node = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: Any) -> None:
                pass

            def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self._send(200, b'{"status": 1, "data": {"token": "node-token"}}')

            def do_GET(self) -> None:
                if node.mode == "garbage":  # a success envelope whose data is not a record
                    self._send(200, b'{"status": 1, "data": "oops"}')
                elif node.mode == "bad-values":
                    self._send(200, b'{"status": 1, "data": {"handle": "x", "value": [{"idx": "?"}, 7]}}')
                elif node.mode == "html":
                    self._send(200, b"<html><body>maintenance</body></html>", "text/html")
                elif node.mode == "refused":
                    self._send(200, b'{"status": -3, "message": "no permission for this prefix"}')
                elif node.mode == "slow":
                    time.sleep(3)  # beyond the configured 2 s
                    self._send(200, b'{"status": 1, "data": "late"}')

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Plant:
    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.modbus, self.opc, self.node_port, self.api, self.control, self.mqtt = (
            free_port() for _ in range(6)
        )
        self.data = tmp / "data"
        devices = f"""
devices:
  - id: mx-1
    protocol: modbus-tcp
    connection: {{host: 127.0.0.1, port: {self.modbus}, unit_id: 1, timeout: 500ms}}
    poll: {{interval: 200ms, backoff_max: 1s}}
    points:
      - {{id: count_target, type: uint16, access: rw, modbus: {{address: "hr:10"}}}}
      - {{id: setpoint, type: int16, scale: 0.1, unit: CEL, access: rw, modbus: {{address: "hr:11"}}}}
      - {{id: temp, type: int16, scale: 0.1, unit: CEL, range: [0, 400], modbus: {{address: "hr:12"}}}}
  - id: opc-1
    protocol: opcua
    connection: {{endpoint: "opc.tcp://127.0.0.1:{self.opc}", timeout: 2s}}
    mode: subscribe
    poll: {{interval: 200ms, backoff_max: 1s}}
    points:
      - {{id: speed, type: float64, opcua: {{node: "ns=2;s=Line.Speed"}}}}
      - {{id: load, type: float64, opcua: {{node: "ns=2;s=Line.Load"}}}}
"""
        sim_config = tmp / "sim.yaml"
        sim_config.write_text(f"gateway: {{id: sim, data_dir: {tmp}/simdata}}\n{devices}")
        self.devices = devices
        self.config = tmp / "gw.yaml"
        self.write_config()
        self.node = BadNode(self.node_port)
        self.sim = Proc(
            [*EDGEGW, "simulate", "-c", str(sim_config), "--control", f"127.0.0.1:{self.control}"],
            tmp / "sim.log",
        )
        for port in (self.modbus, self.opc, self.control):
            wait_port(port, 30)
        self.gw = Proc([*EDGEGW, "run", "-c", str(self.config)], tmp / "gw.log")
        wait_port(self.api, 30)
        self.base = f"http://127.0.0.1:{self.api}"
        wait_for(lambda: self.device("mx-1")["state"] == "online", 20, "mx-1 online")
        wait_for(lambda: self.device("opc-1")["state"] == "online", 30, "opc-1 online")

    def write_config(self, token: str = TOKEN) -> None:
        self.config.write_text(
            f"""
gateway: {{id: gw-hard, data_dir: {self.data}}}
{self.devices}
northbound:
  mqtt: {{host: 127.0.0.1, port: {self.mqtt}}}
identifier:
  node: {{kind: snms, url: "http://127.0.0.1:{self.node_port}", username: u, password: p, prefix: "{PREFIX}", timeout: 2s}}
api:
  listen: 127.0.0.1:{self.api}
  token: {token}
  read_requires_token: true
  trusted_hosts: [gw-line1.plant.example, "*.cell.example"]
  max_streams: 3
"""
        )

    def reload(self, token: str = TOKEN) -> None:
        self.write_config(token)
        before = self.gw.output().count("config reloaded")
        os.kill(self.gw.pid, signal.SIGHUP)
        wait_for(lambda: self.gw.output().count("config reloaded") > before, 10, "the reload")

    def get(self, path: str, token: str | None = TOKEN, **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        headers.update(kw.pop("headers", {}))
        return httpx.get(self.base + path, headers=headers, timeout=10, **kw)

    def put(self, path: str, content: bytes, token: str | None = TOKEN) -> httpx.Response:
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return httpx.put(self.base + path, content=content, headers=headers, timeout=10)

    def device(self, dev: str) -> dict[str, Any]:
        r = self.get(f"/api/v1/devices/{dev}")
        r.raise_for_status()
        return r.json()

    def ctl(self, method: str, path: str, body: Any = None) -> Any:
        r = httpx.request(method, f"http://127.0.0.1:{self.control}{path}", json=body, timeout=10)
        r.raise_for_status()
        return r.json()

    def memory(self) -> dict[str, int]:
        """The gateway's resident memory now and at its peak (kB), from the kernel."""
        fields = {}
        for line in Path(f"/proc/{self.gw.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0])
        return fields

    def stop(self) -> None:
        for p in (self.gw, self.sim):
            p.stop()
        self.node.stop()


@pytest.fixture(scope="module")
def plant(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plant]:
    p = Plant(tmp_path_factory.mktemp("hardening"))
    yield p
    p.stop()


# ---- raw HTTP: requests httpx would not send, read without waiting for the whole upload ----


def _read_response(s: socket.socket, timeout: float = 10.0) -> tuple[int | None, dict[str, str], bytes]:
    """One HTTP response from the socket: (status, headers, body); status None if the server
    closed without answering."""
    s.settimeout(timeout)
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            got = s.recv(65536)
            if not got:
                break
            data += got
        head, _, body = data.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 "):
            return None, {}, b""
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
        length = int(headers.get("content-length", "0"))
        while len(body) < length:
            got = s.recv(65536)
            if not got:
                break
            body += got
        return int(lines[0].split()[1]), headers, body
    except (ConnectionResetError, TimeoutError):
        return None, {}, b""


def _chunks(total: int, size: int = 64 * 1024) -> Iterator[bytes]:
    block = b"x" * size
    sent = 0
    while sent < total:
        yield b"%x\r\n%s\r\n" % (size, block)
        sent += size
    yield b"0\r\n\r\n"


def raw_request(
    port: int, head: str, body: Iterable[bytes] = (), timeout: float = 10.0
) -> tuple[int | None, dict[str, str], bytes]:
    """Send the head, then the body piece by piece until the server answers (or stops reading),
    and return its answer."""
    with socket.create_connection(("127.0.0.1", port), timeout) as s:
        s.sendall(head.encode())
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for piece in body:
                if select.select([s], [], [], 0)[0]:  # the server answered early
                    break
                s.sendall(piece)
        return _read_response(s, timeout)


def _put_head(port: int, token: str | None, framing: str) -> str:
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    return (
        f"PUT /api/v1/devices/mx-1/points/count_target HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\n{auth}{framing}\r\n"
    )


# ---- 1. limits ----


def test_oversized_bodies_are_refused_without_growing_the_process(plant: Plant) -> None:
    p = plant
    before = p.memory()
    big = 60 * MB
    # declared too large: refused from the header, nothing read (with or without a token)
    for token in (None, TOKEN):
        status, headers, body = raw_request(p.api, _put_head(p.api, token, f"Content-Length: {big}\r\n"))
        assert status == 413, (token, status)
        assert json.loads(body) == {"status": 413, "error": "the request body is larger than 65536 bytes"}
        assert headers["connection"] == "close"
    # streamed (chunked, no Content-Length) without a token: refused before the body is read
    status, _, body = raw_request(
        p.api, _put_head(p.api, None, "Transfer-Encoding: chunked\r\n"), _chunks(big)
    )
    assert status == 401 and "Bearer token" in json.loads(body)["error"]
    # streamed with the token: cut off once past 64 KiB
    status, _, body = raw_request(
        p.api, _put_head(p.api, TOKEN, "Transfer-Encoding: chunked\r\n"), _chunks(big)
    )
    assert status == 413 and "larger than 65536 bytes" in json.loads(body)["error"]
    after = p.memory()
    # the peak resident size did not take the 60 MB (nor a fraction of it)
    assert after["VmHWM"] - before["VmHWM"] < 16 * 1024, (before, after)
    assert after["VmRSS"] - before["VmRSS"] < 16 * 1024, (before, after)
    # a body within the limit still works
    r = p.put("/api/v1/devices/mx-1/points/count_target", b'{"value": 12}')
    assert r.status_code == 200, r.text
    assert "body too large" in p.gw.output()


def test_requests_in_progress_are_capped_and_slow_bodies_time_out(plant: Plant) -> None:
    p = plant
    held = []
    try:
        for _ in range(32):  # each holds a request open: headers sent, the body never comes
            s = socket.create_connection(("127.0.0.1", p.api), 5)
            s.sendall(_put_head(p.api, TOKEN, "Content-Length: 20\r\n").encode() + b'{"value"')
            held.append(s)
        r = wait_for(
            lambda: (r := p.get("/api/v1/devices")).status_code == 503 and r, 5, "the API refusing more"
        )
        assert r.json()["status"] == 503 and "busy" in r.json()["error"] and r.headers["retry-after"] == "1"
        assert p.get("/healthz").status_code == 200  # liveness is never refused
        # the held requests give up on their bodies after a few seconds and free their places
        answers = [_read_response(s, 10) for s in held]
        assert all(status == 408 for status, _, _ in answers), [a[0] for a in answers]
        assert "did not arrive" in json.loads(answers[0][2])["error"]
    finally:
        for s in held:
            s.close()
    wait_for(lambda: p.get("/api/v1/devices").status_code == 200, 5, "the API answering again")


# ---- 2. the live feed ----


def _events(r: httpx.Response, n: int) -> list[tuple[int, bytes]]:
    out: list[tuple[int, bytes]] = []
    ident = None
    for line in r.iter_lines():
        if line.startswith("id: "):
            ident = int(line[4:])
        elif line.startswith("data: "):
            assert ident is not None
            out.append((ident, line[6:].encode()))
            if len(out) == n:
                break
    return out


def test_live_feed_shares_one_snapshot_and_caps_streams(plant: Plant) -> None:
    p = plant
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with contextlib.ExitStack() as stack:
        clients = [
            stack.enter_context(httpx.Client(base_url=p.base, headers=auth, timeout=10)) for _ in range(4)
        ]
        streams = []
        for c in clients[:3]:
            r = stack.enter_context(c.stream("GET", "/api/v1/events"))
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            streams.append(r)
        # a fourth stream is refused at once, with the reason
        extra = clients[3].get("/api/v1/events")
        assert extra.status_code == 503 and "max_streams" in extra.json()["error"]
        got = [dict(_events(r, 3)) for r in streams]
    # every snapshot id seen by several streams carries the same bytes: built once, shared
    common = set(got[0]) & set(got[1]) & set(got[2])
    assert len(common) >= 2, [sorted(g) for g in got]
    for ident in common:
        assert got[0][ident] == got[1][ident] == got[2][ident]
    for g in got:
        ids = sorted(g)
        assert ids == list(range(ids[0], ids[0] + len(ids)))  # one per tick, none skipped
    snap = json.loads(got[0][max(common)])
    assert {d["id"] for d in snap["devices"]} == {"mx-1", "opc-1"}
    # the closed streams give their places back
    wait_for(lambda: _stream_opens(p, auth), 10, "stream places freed")


def _stream_opens(p: Plant, auth: dict[str, str]) -> bool:
    with httpx.stream("GET", p.base + "/api/v1/events", headers=auth, timeout=10) as r:
        return r.status_code == 200


# ---- 3. hosts, sessions, docs ----


@pytest.mark.parametrize(
    ("host", "status"),
    [
        ("127.0.0.1:{port}", 200),
        ("localhost:{port}", 200),
        ("LOCALHOST.", 200),
        ("[::1]:{port}", 200),
        ("[::ffff:127.0.0.1]:{port}", 200),
        ("127.0.0.5", 200),
        ("gw-line1.plant.example:{port}", 200),
        ("a.cell.example", 200),
        ("attacker.example:{port}", 421),
        ("127.0.0.1.attacker.example", 421),
        ("cell.example", 421),
        ("10.1.2.3:{port}", 421),
    ],
)
def test_host_header_must_name_the_gateway(plant: Plant, host: str, status: int) -> None:
    p = plant
    r = p.get("/api/v1/devices", headers={"Host": host.format(port=p.api)})
    assert r.status_code == status, r.text
    if status == 421:
        assert "api.trusted_hosts" in r.json()["error"]
        # nothing is served to such a page, not even the status page or liveness
        assert p.get("/", headers={"Host": host.format(port=p.api)}).status_code == 421
        assert p.get("/healthz", headers={"Host": host.format(port=p.api)}).status_code == 421


def test_loopback_is_decided_by_address_not_by_spelling() -> None:
    assert ApiSettings(listen="127.0.0.2:8080").loopback
    assert ApiSettings(listen="[::ffff:127.0.0.1]:8080").loopback
    assert ApiSettings(listen="[::1]:8080").loopback
    assert ApiSettings(listen="localhost:8080").loopback
    for listen in ("127.attacker.example:8080", "0.0.0.0:8080", "[::ffff:10.0.0.1]:8080"):
        with pytest.raises(ValueError, match="not loopback"):
            ApiSettings(listen=listen)


def test_validate_refuses_a_name_that_only_looks_like_loopback(tmp_path: Path) -> None:
    cfg = tmp_path / "gw.yaml"
    cfg.write_text(
        f"gateway: {{id: gw, data_dir: {tmp_path}/data}}\napi: {{listen: '127.0.0.1.nip.io:8080'}}\n"
    )
    out = subprocess.run([*EDGEGW, "validate", "-c", str(cfg)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "needs api.token" in out.stderr, out.stderr


def test_status_page_reads_by_session_never_by_token_in_url(plant: Plant) -> None:
    p = plant
    assert p.get("/api/v1/status", token=None).status_code == 401
    r = p.get("/api/v1/status", token=None, params={"access_token": TOKEN})
    assert r.status_code == 401 and "not accepted" in r.json()["error"]
    with httpx.Client(base_url=p.base, timeout=10) as browser:
        assert browser.post("/api/v1/session").status_code == 401
        assert browser.post("/api/v1/session", headers={"Authorization": "Bearer nope"}).status_code == 403
        r = browser.post("/api/v1/session", headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 200 and r.json()["ok"] is True
        cookie = r.headers["set-cookie"]
        name = f"edgegw_session_{p.api}"
        assert cookie.startswith(f"{name}=")
        attrs = {a.strip().lower() for a in cookie.split(";")[1:]}
        assert {"httponly", "samesite=strict", "path=/"} <= attrs and "secure" not in attrs
        assert TOKEN not in cookie
        # the cookie alone reads: the API and the live feed
        assert browser.get("/api/v1/status").status_code == 200
        with browser.stream("GET", "/api/v1/events") as stream:
            assert stream.status_code == 200 and _events(stream, 1)
        # ... but never writes
        w = browser.put("/api/v1/devices/mx-1/points/count_target", json={"value": 5})
        assert w.status_code == 401
        # signing out ends it
        assert browser.delete("/api/v1/session").status_code == 200
        browser.cookies.set(name, r.cookies[name])  # a client that kept the old id
        ended = browser.get("/api/v1/status")
        assert ended.status_code == 401 and "session has ended" in ended.json()["error"]
        # a new token (reload) ends every session opened with the old one
        browser.cookies.clear()
        r = browser.post("/api/v1/session", headers={"Authorization": f"Bearer {TOKEN}"})
        assert browser.get("/api/v1/status").status_code == 200
        p.reload(token="r0tated-t0ken")
        try:
            assert browser.get("/api/v1/status").status_code == 401
        finally:
            p.reload()
    assert TOKEN not in p.gw.output()


def test_docs_need_no_internet(plant: Plant) -> None:
    p = plant
    docs = p.get("/docs", token=None)
    assert docs.status_code == 200 and "/api/v1/session" in docs.text
    assert "<script" not in docs.text and "cdn" not in docs.text.lower() and "https://" not in docs.text
    assert p.get("/openapi.json", token=None).status_code == 200
    page = p.get("/", token=None)
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert "access_token" not in page.text and "sessionStorage" not in page.text


# ---- 4. writes always answer ----

COUNT = "/api/v1/devices/mx-1/points/count_target"


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        (b'{"value": ' + b"9" * 400 + b"}", 422, "400 digits fits no point"),
        (b'{"value": ' + b"[" * 30000 + b"]" * 30000 + b"}", 400, "nested too deeply"),
        (b'{"value": {"a": {"b": [1, 2, {"c": 3}]}}}', 422, "value"),
        (b'{"value": NaN}', 400, "NaN is not JSON"),
        (b'{"value": 1e999}', 422, "not a finite number"),
        (b'{"value": 12', 400, "not JSON"),
        (b'{"value": "\xff"}', 400, "not JSON"),
        (b"", 400, "not JSON"),
        (b"[1, 2]", 422, "dictionary"),
        (b'{"value": 1, "also": 2}', 422, "also"),
    ],
)
def test_malformed_write_bodies_get_a_4xx_with_the_reason(
    plant: Plant, body: bytes, status: int, reason: str
) -> None:
    r = plant.put(COUNT, body)
    assert r.status_code == status, r.text
    assert r.json()["status"] == status and reason in r.json()["error"], r.text


def test_an_unexpected_failure_in_a_write_is_a_clean_json_answer(plant: Plant) -> None:
    p = plant
    time.sleep(1.1)  # refusals are logged at most once a second per status
    # 1e308 through scale 0.1 overflows the conversion to the register's integer
    r = p.put("/api/v1/devices/mx-1/points/setpoint", b'{"value": 1e308}')
    assert r.status_code in (422, 500), r.text
    body = r.json()
    assert body["status"] == r.status_code and body["error"]
    assert "Traceback" not in r.text and "File " not in r.text
    out = p.gw.output()
    assert "Traceback" not in out
    line = next(x for x in reversed(out.splitlines()) if "point=setpoint" in x)
    assert "level=error" in line or "write refused" in line
    # the gateway goes on writing
    assert p.put(COUNT, b'{"value": 7}').status_code == 200


def test_integer_points_answer_with_an_integer(plant: Plant) -> None:
    r = plant.put(COUNT, b'{"value": 4321}')
    assert r.status_code == 200, r.text
    assert b'"value":4321}' in r.content and isinstance(r.json()["value"], int)
    wait_for(
        lambda: plant.get("/api/v1/devices/mx-1/points").json()["points"]["count_target"]["v"] == 4321,
        5,
        "the value read back",
    )


# ---- 5. each point's own time ----


def test_each_point_carries_the_time_of_its_own_reading(plant: Plant) -> None:
    p = plant
    # polled: every point of a poll is read at the poll's time
    pts = p.get("/api/v1/devices/mx-1/points").json()
    assert all(v["ts"] == pts["ts"] and v["q"] for v in pts["points"].values()), pts
    # subscribed: `load` held still sends nothing new, `speed` keeps changing
    p.ctl("PUT", "/devices/opc-1/points/load", {"value": 42.5})
    try:
        wait_for(
            lambda: p.get("/api/v1/devices/opc-1/points").json()["points"]["load"]["v"] == 42.5,
            10,
            "load held",
        )
        first = p.get("/api/v1/devices/opc-1/points").json()["points"]
        wait_for(
            lambda: (
                p.get("/api/v1/devices/opc-1/points").json()["points"]["speed"]["ts"]
                > first["speed"]["ts"] + 1000
            ),
            10,
            "speed moving on",
        )
        later = p.get("/api/v1/devices/opc-1/points").json()
        load, speed = later["points"]["load"], later["points"]["speed"]
        assert load["ts"] == first["load"]["ts"] == load["source_ts"]  # its own, older reading
        assert speed["ts"] == speed["source_ts"] > load["ts"] + 1000
        assert load["q"] == speed["q"] == "good"
        assert later["ts"] >= speed["ts"] - 1000  # the device's latest message is newer than both
    finally:
        p.ctl("DELETE", "/devices/opc-1/points/load")


# ---- 6. identifier node and durable queue faults ----

HANDLE = f"/api/v1/identifiers/{PREFIX}/SN-1"


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("garbage", "be read"),
        ("bad-values", "be read"),
        ("html", "not JSON"),
        ("refused", "no permission"),
        ("slow", "within the timeout"),
    ],
)
def test_resolve_answers_502_when_the_node_misbehaves(plant: Plant, mode: str, reason: str) -> None:
    plant.node.mode = mode
    r = plant.get(HANDLE)
    assert r.status_code == 502, r.text
    assert r.json()["status"] == 502 and reason in r.json()["error"], r.text
    assert "Traceback" not in plant.gw.output()


def test_resolve_answers_502_when_the_node_is_gone(plant: Plant) -> None:
    plant.node.stop()
    try:
        r = plant.get(HANDLE)
        assert r.status_code == 502 and "cannot reach" in r.json()["error"], r.text
    finally:
        plant.node.start()


_WRITER_LOCK = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=10)
db.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
db.execute("COMMIT")
"""


def test_identifier_list_answers_503_while_the_queue_file_fails(plant: Plant) -> None:
    p = plant
    path = p.data / "queue.sqlite3"
    assert p.get("/api/v1/identifiers").status_code == 200
    # another process holds the file's write lock: commits fail, the list would miss what waits
    locker = subprocess.Popen(
        [sys.executable, "-c", _WRITER_LOCK, str(path), "3"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert locker.stdout is not None and locker.stdout.readline().strip() == "locked"
        r = wait_for(lambda: (r := p.get("/api/v1/identifiers")).status_code == 503 and r, 3, "503")
        assert "locked" in r.json()["error"] and "waiting in memory" in r.json()["error"]
        ready = p.get("/readyz")
        assert ready.status_code == 503 and any("queue file" in x for x in ready.json()["reasons"])
    finally:
        locker.wait(10)
    wait_for(lambda: p.get("/api/v1/identifiers").status_code == 200, 15, "the list again")
    # a damaged file (a table gone under the gateway): reads fail, the answer says why
    db = sqlite3.connect(path, isolation_level=None, timeout=10)
    try:
        db.execute("DROP TABLE outcomes")
        r = p.get("/api/v1/identifiers?state=registered")
        assert r.status_code == 503 and "no such table: outcomes" in r.json()["error"], r.text
        with httpx.stream(
            "GET", p.base + "/api/v1/events", headers={"Authorization": f"Bearer {TOKEN}"}
        ) as s:
            snap = json.loads(_events(s, 1)[0][1])
        assert "no such table" in snap["identifiers_error"] and snap["devices"]
    finally:
        db.executescript(_SCHEMA)
        db.close()
    assert p.get("/api/v1/identifiers?state=registered").status_code == 200
    assert "Traceback" not in p.gw.output()


# ---- 7. readiness ----


def test_readyz_lists_the_reasons(plant: Plant) -> None:
    r = plant.get("/readyz", token=None)
    assert r.status_code == 503
    body = r.json()
    assert body["ready"] is False and body["status"] == 503
    assert "MQTT broker not connected" in body["reasons"] and body["error"] == "; ".join(body["reasons"])
