"""Answers of the wrong shape from the identifier node, over real HTTP on loopback: a tiny server
answers whatever the test sets (any status, content type and bytes, a body cut short or without
end). The clients turn every such answer into their own Transient or Rejected, never another
exception; the template check at start defers instead of failing; `edgegw id` prints one line."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import subprocess
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from edgegw.gateway.durable_queue import DurableQueue
from edgegw.identifier.client import (
    ANSWER_MAX,
    Exists,
    HandleClient,
    NodeClient,
    NodeError,
    NotFound,
    Registration,
    Rejected,
    SnmsClient,
    Transient,
    Unauthorised,
)
from edgegw.identifier.registrar import Registrar
from edgegw.identifier.rules import RuleSet
from edgegw.identifier.settings import IdentifierRule, PointRef, RuleValue
from edgegw.identifier.templates import Template, TemplateItem, Value
from harness import EDGEGW, GOOD, ROOT, P, wait_for
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

REG = Registration(f"{P}/SN-1", "1.0", GOOD)
REG2 = Registration(f"{P}/SN-2", "1.0", GOOD)
HTML = b"<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center></body></html>"
TEMPLATE_1 = Template(
    P,
    "1.0",
    "part",
    (
        TemplateItem("sn", "serial_number", 2000, True, 1, 64),
        TemplateItem("model", "model", 2001, True, 1, 64),
    ),
)


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    content_type: str | None = "application/json"
    mode: str = "length"  # length | close (no length) | short (length lies) | endless | huge-length
    gzip: bool = False  # say Content-Encoding: gzip (the body is sent as given)


def envelope(data: Any, status: Any = 1, message: Any = "success") -> Reply:
    return Reply(body=json.dumps({"status": status, "message": message, "data": data}).encode())


@dataclass
class GarbageNode:
    """A real HTTP server on loopback: `reply` for every request (or `routes[path]`); the snms
    login gets a good token while `login_ok`."""

    reply: Reply = field(default_factory=Reply)
    routes: dict[str, Reply] = field(default_factory=dict)
    login_ok: bool = True
    requests: int = 0
    endless_sent: int = 0

    def start(self) -> None:
        node = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                node.requests += 1
                path = self.path.split("?", 1)[0]
                if path == "/identity/token" and node.login_ok:
                    reply = envelope({"token": "t0k3n"})
                else:
                    reply = node.routes.get(path, node.reply)
                node.write(self.wfile, reply)
                self.close_connection = True

            do_GET = do_POST = do_PUT = do_DELETE = answer

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def write(self, out: Any, r: Reply) -> None:
        head = [f"HTTP/1.1 {r.status} Whatever"]
        if r.content_type is not None:
            head.append(f"Content-Type: {r.content_type}")
        if r.gzip:
            head.append("Content-Encoding: gzip")
        if r.mode == "length":
            head.append(f"Content-Length: {len(r.body)}")
        elif r.mode == "short":
            head.append(f"Content-Length: {len(r.body) + 100}")
        elif r.mode == "huge-length":
            head.append(f"Content-Length: {10**12}")
        head.append("Connection: close")
        try:
            out.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + r.body)
            if r.mode == "endless":
                chunk = b"[" * 65536
                self.endless_sent = 0
                while self.endless_sent < 20 * ANSWER_MAX:
                    out.write(chunk)
                    self.endless_sent += len(chunk)
            out.flush()
        except OSError:
            pass  # the client hung up: what a client that stops reading does

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def garbage() -> Iterator[GarbageNode]:
    node = GarbageNode()
    node.start()
    yield node
    node.stop()


def snms(node: GarbageNode) -> SnmsClient:
    return SnmsClient(node.url, P, "ops", "pw", timeout=2)


def handle_api(node: GarbageNode) -> HandleClient:
    return HandleClient(node.url, P, "ops", "pw", timeout=2)


def outcome(client: NodeClient, op: Callable[[NodeClient], Awaitable[Any]]) -> Any:
    """What `op` did: its result, or the NodeError it raised (anything else fails the test)."""

    async def run() -> Any:
        try:
            return await op(client)
        except NodeError as exc:
            return exc
        finally:
            await client.close()

    return asyncio.run(run())


def one_clear_line(exc: NodeError) -> None:
    assert exc.message and "\n" not in exc.message and "\r" not in exc.message
    assert len(exc.message) < 1000, exc.message


# ---- the property: whatever comes back, only the client's own outcomes ----

json_leaf = (
    st.none()
    | st.booleans()
    | st.integers(-(10**20), 10**20)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
)
json_any = st.recursive(
    json_leaf,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def near(good: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly the right type, sometimes anything: reaches the checks behind the first one."""
    return st.one_of(good, good, json_any)


value_item = st.fixed_dictionaries(
    {},
    optional={
        "index": near(st.integers(1990, 2010) | st.sampled_from(["2000", "x", "2000.5"])),
        "type": near(st.sampled_from(["serial_number", "model", "HS_ADMIN"])),
        "data": near(
            st.fixed_dictionaries(
                {}, optional={"format": near(st.just("string")), "value": near(st.text(max_size=8))}
            )
        ),
    },
)
values_list = near(st.lists(near(value_item), max_size=3))
record = st.fixed_dictionaries(
    {},
    optional={
        "handle": near(st.sampled_from([REG.handle, "x"])),
        "templateVersion": near(st.just("1.0")),
        "value": values_list,
        "values": values_list,
        "responseCode": near(st.sampled_from([1, 2, 100, 101, 102, 200, 402, "1"])),
    },
)
template_item = st.fixed_dictionaries(
    {},
    optional={
        "name": near(st.text(max_size=6)),
        "idType": near(st.just("serial_number")),
        "idIndex": near(st.integers(0, 3000) | st.just("2000")),
        "required": near(st.booleans()),
        "metadata": near(
            st.fixed_dictionaries(
                {},
                optional={"minLength": near(st.integers(-1, 70)), "maxLength": near(st.integers(-1, 70))},
            )
        ),
    },
)
template = st.fixed_dictionaries(
    {},
    optional={
        "prefix": near(st.just(P)),
        "version": near(st.just("1.0")),
        "description": json_any,
        "items": near(st.lists(near(template_item), max_size=3)),
    },
)
batch_answer = st.lists(
    near(
        st.fixed_dictionaries(
            {},
            optional={
                "handle": near(st.sampled_from([REG.handle, REG2.handle.lower(), "other"])),
                "msg": near(st.sampled_from(["success", "handle already exists", "bad value"])),
            },
        )
    ),
    max_size=3,
)
login_data = st.fixed_dictionaries({}, optional={"token": near(st.sampled_from(["tok", "", "a b", "ü"]))})
data = st.one_of(record, template, batch_answer, login_data, json_any)
envelope_doc = st.fixed_dictionaries(
    {},
    optional={
        "status": near(st.sampled_from([1, -1, -2, -3, -4, 0, 7, "1", 404])),
        "message": near(st.text(max_size=30)),
        "data": data,
    },
)
json_bodies = st.one_of(envelope_doc, record, json_any).map(lambda d: json.dumps(d).encode())
bodies = st.one_of(
    json_bodies,
    json_bodies.map(lambda b: b[: len(b) // 2]),  # cut short
    st.binary(max_size=200),
    st.text(max_size=100).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.just(HTML),
    st.just(b"[" * 50_000),  # nested too deeply to parse
    st.just(b"1" * 5000),  # a number too long to convert
)
replies = st.builds(
    Reply,
    status=st.sampled_from(
        [200, 200, 200, 201, 204, 301, 400, 401, 403, 404, 408, 409, 413, 422, 429, 500, 502, 503, 504]
    )
    | st.integers(200, 599),
    body=bodies,
    content_type=st.sampled_from(
        [
            "application/json",
            "application/json; charset=utf-8",
            "text/html",
            "text/plain",
            "application/octet-stream",
            None,
        ]
    ),
    mode=st.sampled_from(["length", "length", "close", "short"]),
    gzip=st.booleans(),
)
OPS: dict[str, Callable[[Any], Awaitable[Any]]] = {
    "resolve": lambda c: c.resolve(REG.handle),
    "register": lambda c: c.register(REG),
    "batch": lambda c: c.register_batch([REG, REG2]),
    "update": lambda c: c.update(REG),
    "delete": lambda c: c.delete(REG.handle),
    "template": lambda c: c.template("1.0"),
}


@pytest.fixture(scope="module")
def shared(garbage: GarbageNode) -> Iterator[tuple[asyncio.AbstractEventLoop, dict[str, Any]]]:
    """One loop and one client per API for all examples (a client costs 50 ms to make)."""
    loop = asyncio.new_event_loop()
    clients: dict[str, Any] = {"snms": snms(garbage), "handle": handle_api(garbage)}
    yield loop, clients
    for c in clients.values():
        loop.run_until_complete(c.close())
    loop.close()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    reply=replies,
    api=st.sampled_from(["snms", "handle"]),
    op=st.sampled_from([*sorted(OPS), "login"]),
    login_ok=st.booleans(),
    compress=st.booleans(),
)
def test_any_answer_becomes_transient_or_rejected(
    garbage: GarbageNode,
    shared: tuple[asyncio.AbstractEventLoop, dict[str, Any]],
    reply: Reply,
    api: str,
    op: str,
    login_ok: bool,
    compress: bool,
) -> None:
    if reply.gzip and compress:
        reply.body = gzip.compress(reply.body)  # a well-formed gzip of the same garbage
    garbage.reply, garbage.routes, garbage.login_ok = reply, {}, login_ok
    loop, clients = shared
    client = clients[api]
    call = OPS.get(op) or (lambda c: c.login() if isinstance(c, SnmsClient) else c.resolve(REG.handle))

    async def run() -> Any:
        try:
            return await call(client)
        except NodeError as exc:
            return exc

    result = loop.run_until_complete(run())
    if isinstance(result, NodeError):
        assert isinstance(result, Transient | Rejected)
        one_clear_line(result)
    elif op == "batch":
        assert len(result) == 2
        for item in result:
            assert item is None or isinstance(item, Transient | Rejected)
            if item is not None:
                one_clear_line(item)


# ---- the shapes one by one, and what each means ----


def fails(node: GarbageNode, op: str, api: str = "snms") -> NodeError:
    client = snms(node) if api == "snms" else handle_api(node)
    result = outcome(client, OPS[op])
    assert isinstance(result, NodeError), result
    one_clear_line(result)
    return result


@pytest.mark.parametrize(
    ("reply", "words"),
    [
        (Reply(200, HTML, "text/html"), "HTTP 200 (text/html) with a body that is not JSON: '<html>"),
        (Reply(404, HTML, "text/html"), "HTTP 404 (text/html) with a body that is not JSON"),
        (Reply(502, HTML, "text/html"), "answered HTTP 502"),
        (Reply(200, b"", None), "HTTP 200 (no content type) with a body that is not JSON: an empty body"),
        (Reply(200, b'{"status": 1, "data": {"handle"', "application/json"), "not JSON"),
        (Reply(200, b'{"status": 1}', "application/json", mode="short"), "RemoteProtocolError"),
        (Reply(200, b"\xff\xfe\xfa garbage", "application/json"), "not JSON"),
        (Reply(200, b"[" * 200_000, "application/json"), "not JSON"),
        (Reply(200, b"[1, 2]", "application/json"), "with a list instead of an object"),
        (Reply(200, b'"ok"', "application/json"), "with the string 'ok' instead of an object"),
        (envelope(None, status=None), "its status is null, not an integer"),
        (envelope(None, status="yes"), "its status is the string 'yes'"),
        (  # a web framework's error page: its "status" is an HTTP code, not the node's
            Reply(404, b'{"timestamp": 1, "status": 404, "error": "Not Found", "path": "/x"}'),
            "with status 404, not its answer envelope",
        ),
        (envelope([{"handle": 5}]), "cannot be read"),
        (envelope({"handle": REG.handle, "value": {"index": 2000}}), "cannot be read: value is an object"),
        (envelope({"handle": REG.handle, "value": [{"index": "x", "type": "t"}]}), "not an integer"),
        (envelope({"handle": REG.handle, "value": [{"index": float("inf"), "type": "t"}]}), "not an integer"),
        (envelope({"handle": REG.handle, "value": [[1, 2]]}), "a value is a list, not an object"),
        (envelope({"handle": REG.handle}), "it has no 'value'"),
        (envelope("registered"), "it is the string 'registered', not an object"),
        (Reply(200, b"x" * (ANSWER_MAX + 1), "text/plain"), "more than 8 MiB; not read"),
        (Reply(200, b"", "application/json", mode="huge-length"), "more than 8 MiB; not read"),
        (Reply(200, b'{"status": 1', "application/json", gzip=True), "DecodingError"),
    ],
)
def test_an_unreadable_answer_is_transient(garbage: GarbageNode, reply: Reply, words: str) -> None:
    garbage.reply, garbage.routes, garbage.login_ok = reply, {}, True
    exc = fails(garbage, "resolve")
    assert type(exc) is Transient and words in exc.message, exc.message


def test_a_body_without_end_is_not_read_past_the_limit(garbage: GarbageNode) -> None:
    garbage.reply, garbage.routes, garbage.login_ok = (
        Reply(200, b"", "application/json", mode="endless"),
        {},
        True,
    )
    exc = fails(garbage, "resolve")
    assert type(exc) is Transient and "more than 8 MiB" in exc.message
    # the client hung up: what the server got out is the limit plus what the sockets buffer
    wait_for(lambda: garbage.endless_sent > 0, 5, "the server to notice")
    assert garbage.endless_sent < 20 * ANSWER_MAX


def test_writes_answered_unreadably_may_have_been_applied(garbage: GarbageNode) -> None:
    garbage.reply, garbage.routes, garbage.login_ok = Reply(200, HTML, "text/html"), {}, True
    for op in ("register", "update", "delete"):
        exc = fails(garbage, op)
        assert type(exc) is Transient and exc.maybe_done, op  # the retry recognises it
    assert not fails(garbage, "resolve").maybe_done  # nothing to apply


def test_what_the_node_itself_says_no_to_is_rejected(garbage: GarbageNode) -> None:
    garbage.login_ok = True
    garbage.reply = envelope(None, -2, "invalid value:\nline two\x00" + "x" * 2000)
    exc = fails(garbage, "register")
    assert type(exc) is Rejected and exc.message.startswith("invalid value: line two")
    assert len(exc.message) <= 300
    garbage.reply = envelope(None, "-2", "handle 88.118.8/SN-1 already exists")  # a number as a string
    assert type(fails(garbage, "register")) is Exists
    garbage.reply = envelope(None, -2, "handle does not exist")
    assert type(fails(garbage, "resolve")) is NotFound
    garbage.reply = envelope(None)  # success without a record
    assert type(fails(garbage, "resolve")) is NotFound
    garbage.reply = Reply(413, HTML, "text/html")  # a request too large: sent one by one instead
    assert type(fails(garbage, "batch")) is Rejected
    garbage.reply, garbage.login_ok = envelope(None, -2, "wrong username or password"), False
    exc = fails(garbage, "resolve")
    assert type(exc) is Unauthorised and "login refused: wrong username" in exc.message


def test_a_login_without_a_usable_token_is_transient(garbage: GarbageNode) -> None:
    garbage.login_ok, garbage.routes = False, {}
    for data in (None, {}, {"token": ""}, {"token": 42}, {"token": "two words"}, {"token": "ä"}, [1]):
        garbage.reply = envelope(data)
        exc = fails(garbage, "resolve")
        assert type(exc) is Transient and "without a usable token" in exc.message, (data, exc.message)


def test_numbers_as_strings_and_odd_content_types_are_read(garbage: GarbageNode) -> None:
    """A node that writes its numbers as strings, or labels JSON as text, still means it."""
    garbage.login_ok, garbage.routes = True, {}
    raw = {
        "handle": REG.handle,
        "templateVersion": "1.0",
        "value": [{"index": "2000", "type": "serial_number", "data": {"format": "string", "value": "SN-1"}}],
    }
    garbage.reply = Reply(200, json.dumps({"status": "1", "data": raw}).encode(), "text/plain")
    rec = outcome(snms(garbage), OPS["resolve"])
    assert rec.values == (Value(2000, "serial_number", "SN-1"),)
    garbage.reply = envelope({**TEMPLATE_1.to_api(), "items": [{"idType": "x", "idIndex": "2000"}]})
    t = outcome(snms(garbage), OPS["template"])
    assert t.items[0].id_index == 2000 and t.items[0].max_length is None
    # Handle.Net: an admin value's data is an object, kept as its JSON text
    admin = {"index": 100, "type": "HS_ADMIN", "data": {"format": "admin", "value": {"index": 200}}}
    garbage.reply = Reply(
        200, json.dumps({"responseCode": "1", "handle": REG.handle, "values": [admin]}).encode()
    )
    rec = outcome(handle_api(garbage), OPS["resolve"])
    assert rec.values == (Value(100, "HS_ADMIN", '{"index":200}'),)


def test_handle_api_answers_of_the_wrong_shape(garbage: GarbageNode) -> None:
    garbage.routes = {}
    garbage.reply = Reply(401, HTML, "text/html")
    assert type(fails(garbage, "register", "handle")) is Unauthorised
    garbage.reply = Reply(200, b'{"handle": "88.118.8/SN-1"}')
    exc = fails(garbage, "resolve", "handle")
    assert type(exc) is Transient and "responseCode is null" in exc.message
    results = outcome(handle_api(garbage), OPS["batch"])  # per item, as the API has no batch call
    assert [type(r) for r in results] == [Transient, Transient]
    garbage.reply = Reply(200, b'{"responseCode": 1, "values": {"index": 1}}')
    assert type(fails(garbage, "resolve", "handle")) is Transient
    garbage.reply = Reply(200, b'{"responseCode": 2}', mode="close")
    assert type(fails(garbage, "resolve", "handle")) is Transient


# ---- the template check at gateway start ----


def part_rule(template: str = "1.0") -> IdentifierRule:
    return IdentifierRule(
        name="part",
        trigger=PointRef(device="m1", point="serial"),
        template=template,
        values=[
            RuleValue(index=2000, type="serial_number", value="{value}"),
            RuleValue(index=2003, type="colour", value="red"),
        ],
    )


def test_a_garbled_template_defers_the_check_and_it_runs_when_the_node_answers(
    garbage: GarbageNode, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    garbage.login_ok = True
    garbage.reply = envelope(None)
    garbage.routes = {"/snms/api/v5/template": envelope({"prefix": P, "items": "all of them"})}
    queue = DurableQueue(tmp_path / "q.sqlite3", 10**8)
    caplog.set_level(logging.INFO, "edgegw.identifier")

    async def run() -> None:
        registrar = Registrar(queue, snms(garbage), RuleSet([part_rule()], P), lambda *_: None, retry_max=0.5)
        assert await registrar.check_templates() == []  # the gateway starts
        assert set(registrar.deferred) == {"part"}
        assert registrar.status()["template_check"] == "deferred"
        deferred = [r for r in caplog.records if r.getMessage().startswith("template check deferred")]
        assert deferred and deferred[0].fields["rule"] == "part"  # type: ignore[attr-defined]
        assert "cannot be read" in deferred[0].fields["error"]  # type: ignore[attr-defined]
        await registrar.start()
        await asyncio.sleep(0.8)
        assert registrar.deferred  # still garbled: still waiting
        # the node answers properly now; its template has no item 2003 colour
        garbage.routes = {"/snms/api/v5/template": envelope(TEMPLATE_1.to_api())}
        for _ in range(100):
            if not registrar.deferred:
                break
            await asyncio.sleep(0.05)
        assert not registrar.deferred
        await registrar.stop()

    asyncio.run(run())
    queue.close()
    misfit = [r for r in caplog.records if "does not fit the node's template" in r.getMessage()]
    assert misfit and "2003 type 'colour' is not an item" in misfit[0].fields["problems"]  # type: ignore[attr-defined]


def test_a_missing_template_is_still_a_problem_at_start(garbage: GarbageNode, tmp_path: Path) -> None:
    garbage.login_ok, garbage.reply = True, envelope(None)
    garbage.routes = {"/snms/api/v5/template": envelope(None, -2, "template 9.9 does not exist")}
    queue = DurableQueue(tmp_path / "q.sqlite3", 10**8)

    async def run() -> list[tuple[str, str]]:
        registrar = Registrar(queue, snms(garbage), RuleSet([part_rule("9.9")], P), lambda *_: None)
        try:
            return await registrar.check_templates()
        finally:
            await registrar.client.close()

    assert asyncio.run(run()) == [("part", "template 9.9 does not exist")]
    queue.close()


# ---- edgegw id ----


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*EDGEGW, "id", *args, "-c", str(config)], cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def test_edgegw_id_prints_one_line_for_an_unreadable_answer(garbage: GarbageNode, tmp_path: Path) -> None:
    config = tmp_path / "gw.yaml"
    config.write_text(
        f"""
gateway: {{id: gw-cli, data_dir: {tmp_path}/data}}
identifier:
  node: {{kind: snms, url: "{garbage.url}", username: ops, password: pw, prefix: "{P}", timeout: 2s}}
"""
    )
    garbage.login_ok, garbage.routes = True, {}
    cases: list[tuple[Reply, tuple[str, ...], str]] = [
        (Reply(200, HTML, "text/html"), ("resolve", REG.handle), "not JSON"),
        (envelope({"handle": REG.handle, "value": "none"}), ("resolve", REG.handle), "cannot be read"),
        (Reply(200, b"[]"), ("resolve", REG.handle), "instead of an object"),
        (
            envelope({"prefix": P, "version": "1.0", "items": [{"idType": "x"}]}),
            ("register", REG.handle, "--template", "1.0", "--value", "2000:serial_number=SN-1"),
            "no idType or no idIndex",
        ),
        (
            Reply(200, b'{"status": 1, "data": tru'),
            ("register", REG.handle, "--value", "2000:serial_number=SN-1"),
            "not JSON",
        ),
    ]
    for reply, args, words in cases:
        garbage.reply = reply
        out = cli(config, *args)
        assert out.returncode == 1, (args, out.stdout, out.stderr)
        lines = out.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"edgegw: {REG.handle}: "), out.stderr
        assert words in lines[0] and "Traceback" not in out.stderr, out.stderr
    bad_ca = tmp_path / "gw-ca.yaml"
    bad_ca.write_text(config.read_text().replace("timeout: 2s", "timeout: 2s, ca: missing.pem"))
    out = cli(bad_ca, "resolve", REG.handle)
    assert out.returncode == 2 and len(out.stderr.splitlines()) == 1 and "Traceback" not in out.stderr
