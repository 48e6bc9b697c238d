"""Logins as real nodes do them, and enterprise nodes (idhub), against the node simulator over
real HTTP: the cipher digest of the guide (teleinfo-dev/id-guide
docs/dev-tools/snms/v3/identity-auth.md), the IDHub challenge-response
(docs/dev-tools/standard/api/challenge.md) and DOIP calls (docs/dev-tools/standard/api/handle.md);
each login good, refused (wrong digest, wrong signature), and with its token expired in the middle
of a backlog under 20 % injected 5xx/504, registering and resolving exactly once."""

from __future__ import annotations

import asyncio
import datetime as dt
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from edgegw.gateway.config import ConfigError, load_config
from edgegw.gateway.durable_queue import DurableQueue
from edgegw.gateway.normalise import Reading
from edgegw.identifier.client import (
    BEIJING,
    Exists,
    IdhubClient,
    NodeClient,
    NotFound,
    Registration,
    Rejected,
    SnmsClient,
    Unauthorised,
    cipher_days,
    cipher_digest,
)
from edgegw.identifier.registrar import Registrar, year_now
from edgegw.identifier.rules import STREAM, RuleSet
from edgegw.identifier.settings import IdentifierRule, PointRef, RuleValue
from harness import EDGEGW, GOOD, ROOT, P, Proc, free_port, wait_port

APP = f"{P}/App_edgegw"
META = f"{P}/META_1.0"  # the simulator's template 1.0 as an IDHub metadata template


def rsa_pem(tmp: Path, name: str, pkcs8: bool = True) -> Path:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    fmt = serialization.PrivateFormat.PKCS8 if pkcs8 else serialization.PrivateFormat.TraditionalOpenSSL
    path = tmp / name
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption()))
    return path


def public_pem(private: Path) -> Path:
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(private.read_bytes(), password=None)
    out = private.with_suffix(".pub")
    out.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return out


class Hub:
    def __init__(self, url: str, tmp: Path, key: Path):
        self.url, self.tmp, self.key = url, tmp, key


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    """The node simulator with user ops:pw and the IDHub app APP (its public key only)."""
    tmp = tmp_path_factory.mktemp("hub")
    key = rsa_pem(tmp, "app.pem")
    port = free_port()
    proc = Proc(
        [
            *EDGEGW,
            "simulate",
            "--idnode",
            "--port",
            str(port),
            "--user",
            "ops:pw",
            "--prefix",
            P,
            "--app",
            f"{APP}={public_pem(key)}",
        ],
        tmp / "node.log",
    )
    wait_port(port, 20)
    yield Hub(f"http://127.0.0.1:{port}", tmp, key)
    proc.stop()


@pytest.fixture(autouse=True)
def no_faults(hub: Hub) -> Iterator[None]:
    faults(hub.url)
    yield
    faults(hub.url)


def faults(url: str, **kw: Any) -> None:
    httpx.put(f"{url}/admin/faults", json=kw, timeout=10).raise_for_status()


def stats(url: str) -> dict[str, int]:
    return httpx.get(f"{url}/admin/stats", timeout=10).json().get(P, {})


def on_node(url: str, pattern: str) -> list[dict[str, Any]]:
    return [h for h in httpx.get(f"{url}/admin/handles", timeout=10).json() if pattern in h["handle"]]


def test_the_cipher_digest_is_the_guides_known_answer() -> None:
    # the guide's example value; its note says '12345', but the value is the digest of '123456'
    assert (
        cipher_digest("123456", dt.date(2019, 8, 15))
        == "58e2c92c46485fdbc35fdcd0814d6c0f000cad5aa156848ca5edaf29406b7661"
    )
    assert cipher_digest("12345", dt.date(2019, 8, 15)) != cipher_digest("123456", dt.date(2019, 8, 15))
    # the node's date is Beijing's: 16:30 UTC is already the next day there
    assert cipher_days(dt.datetime(2019, 8, 14, 16, 30, tzinfo=dt.UTC)) == [dt.date(2019, 8, 15)]
    late = dt.datetime(2019, 8, 15, 23, 55, tzinfo=BEIJING)
    early = dt.datetime(2019, 8, 16, 0, 5, tzinfo=BEIJING)
    assert cipher_days(late) == [dt.date(2019, 8, 15), dt.date(2019, 8, 16)]
    assert cipher_days(early) == [dt.date(2019, 8, 16), dt.date(2019, 8, 15)]


def test_plain_and_cipher_logins_good_and_refused(hub: Hub) -> None:
    today = dt.datetime.now(BEIJING)
    yesterday_late = (today - dt.timedelta(days=1)).replace(hour=23, minute=59, second=30)
    yesterday_noon = (today - dt.timedelta(days=1)).replace(hour=12, minute=0)
    sent: list[dict[str, Any]] = []

    async def run() -> None:
        async def login(client: SnmsClient) -> str | None:
            try:
                await client.login()
            except Unauthorised as exc:
                return exc.message
            finally:
                await client.close()
            return None

        assert await login(SnmsClient(hub.url, P, "ops", "pw")) is None
        assert await login(SnmsClient(hub.url, P, "ops", "pw", login="cipher")) is None
        # the gateway's clock still on yesterday, seconds before midnight: the neighbouring day is tried
        near = SnmsClient(hub.url, P, "ops", "pw", login="cipher", clock=lambda: yesterday_late)
        near._h.http.event_hooks["request"] = [lambda r: _record(r, sent)]
        assert await login(near) is None
        assert [s["password"] for s in sent] == [
            cipher_digest("pw", yesterday_late.date()),
            cipher_digest("pw", today.date()),
        ]
        assert all(s["password"] != "pw" for s in sent)  # never the password itself
        # a day off, far from midnight: refused as the guide shows, no second try
        refused = await login(
            SnmsClient(hub.url, P, "ops", "pw", login="cipher", clock=lambda: yesterday_noon)
        )
        assert refused == "login refused (cipher): 用户名/密码错误！"
        wrong = await login(SnmsClient(hub.url, P, "ops", "not-pw", login="cipher"))
        assert wrong is not None and "用户名/密码错误" in wrong and "not-pw" not in wrong
        # the plain password is not a digest
        assert await login(SnmsClient(hub.url, P, "ops", "pw", login="cipher", clock=lambda: today)) is None
        r = httpx.post(f"{hub.url}/identity/token/v1", json={"username": "ops", "password": "pw"}, timeout=5)
        assert r.json() == {"status": -2, "message": "用户名/密码错误！", "data": None}

    asyncio.run(run())


async def _record(request: httpx.Request, sent: list[dict[str, Any]]) -> None:
    import json

    if request.url.path == "/identity/token/v1":
        sent.append(json.loads(request.content))


def test_idhub_challenge_response_and_doip_operations(hub: Hub) -> None:
    other = rsa_pem(hub.tmp, "other.pem")
    pkcs1 = rsa_pem(hub.tmp, "pkcs1.pem", pkcs8=False)
    reg = Registration(f"{P}/HUB-1", META, GOOD)

    async def run() -> None:
        c = IdhubClient(hub.url, P, APP, str(hub.key))
        try:
            t = await c.template(META)
            assert [(i.id_index, i.id_type, i.required) for i in t.items][:3] == [
                (2000, "serial_number", True),
                (2001, "model", True),
                (2002, "batch", True),
            ]
            await c.register(reg)
            with pytest.raises(Exists, match="标识已存在"):
                await c.register(reg)
            record = await c.resolve(reg.handle)
            assert record.template == META and set(record.values) == set(GOOD)
            changed = Registration(
                reg.handle,
                META,
                (*GOOD[:3], GOOD[3].__class__(2005, "produced_at", "2026-11-22T08:00:00.000Z")),
            )
            await c.update(changed)
            assert set((await c.resolve(reg.handle)).values) == set(changed.values)
            with pytest.raises(Rejected, match="not this enterprise's identifier: 非本企业标识"):
                await c.register(Registration("77.1/HUB-1", META, GOOD))
            with pytest.raises(Rejected, match="barrel_temp"):  # the template's rules hold
                await c.register(
                    Registration(
                        f"{P}/HUB-2", META, (*GOOD, GOOD[0].__class__(2003, "barrel_temp", "1" * 17))
                    )
                )
            await c.delete(reg.handle)
            with pytest.raises(NotFound, match="标识对象不存在"):
                await c.resolve(reg.handle)
            assert c.logins == 1
        finally:
            await c.close()
        for key, words in [
            (other, "签名验证失败"),  # a key the node does not know for this app
            (pkcs1, "not a PKCS#8 PEM private key"),
            (hub.tmp / "missing.pem", "cannot read the private key file"),
        ]:
            bad = IdhubClient(hub.url, P, APP, str(key))
            with pytest.raises(Unauthorised, match=words) as exc:
                await bad.register(reg)
            assert "PRIVATE" not in exc.value.message.replace("PRIVATE KEY-----)", "")
            await bad.close()
        unknown = IdhubClient(hub.url, P, f"{P}/App_nobody", str(hub.key))
        with pytest.raises(Unauthorised, match="标识格式异常"):
            await unknown.login()
        await unknown.close()

    asyncio.run(run())
    # a signature over another nonce is refused too, and each nonce answers once
    nonce = httpx.get(f"{hub.url}/api/v1/doip/public/challenge", params={"handle": APP}, timeout=5).json()
    assert nonce["code"] == 1 and isinstance(nonce["data"], str)
    r = httpx.post(
        f"{hub.url}/api/v1/doip/public/verify-response", json={"handle": APP, "signature": "AAAA"}, timeout=5
    ).json()
    assert r["code"] == 401 and "data" not in r


RULES = {
    "plain": "1.0",
    "cipher": "1.0",
    "idhub": META,
}


def client_for(kind: str, hub: Hub) -> NodeClient:
    if kind == "idhub":
        return IdhubClient(hub.url, P, APP, str(hub.key), timeout=5)
    return SnmsClient(hub.url, P, "ops", "pw", timeout=5, login=kind)


@pytest.mark.parametrize("kind", ["plain", "cipher", "idhub"])
def test_a_backlog_under_faults_with_the_token_expired_midway_registers_and_resolves_exactly_once(
    hub: Hub, tmp_path: Path, kind: str
) -> None:
    rules = [
        IdentifierRule(
            name="part",
            trigger=PointRef(device="m1", point="serial"),
            template=RULES[kind],
            values=[
                RuleValue(index=2000, type="serial_number", value="{value}"),
                RuleValue(index=2001, type="model", value="IM-200"),
                RuleValue(index=2002, type="batch", value="B-1"),
                RuleValue(index=2005, type="produced_at", value="{ts}"),
            ],
        ),
        IdentifierRule(name="scan", resolve=PointRef(device="m1", point="scanned")),
    ]
    tag = f"{kind.upper()}-"
    serials = [f"{tag}{n:03d}" for n in range(40)]
    events: list[tuple[str, dict[str, Any]]] = []
    queue = DurableQueue(tmp_path / "queue.sqlite3", 10**8)
    registrar = Registrar(
        queue,
        client_for(kind, hub),
        RuleSet(rules, P),
        lambda suffix, body: events.append((suffix, body)),
        batch_size=20,
        retry_max=0.5,
    )
    before = stats(hub.url).get("registrations", 0)
    updates = stats(hub.url).get("updates", 0)

    def registered() -> list[str]:
        return [b["handle"] for s, b in events if s == "identifiers" and b["state"] == "registered"]

    async def until(cond: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            assert time.monotonic() < deadline, f"timed out waiting for {what}: {events[-3:]}"
            await asyncio.sleep(0.02)

    async def run() -> None:
        assert await registrar.check_templates() == []
        faults(hub.url, timeout_rate=1.0)  # first every write is applied and answered 504
        await registrar.start()
        ts = time.time_ns() // 1_000_000
        for n, s in enumerate(serials):
            registrar.on_sample("m1", [Reading("serial", s, "good")], ts + n, lambda d, p: "")
            if n == 19:
                await until(lambda: on_node(hub.url, f"/{tag}"), 10, "a registration answered 504")
                faults(hub.url, error_rate=0.1, timeout_rate=0.1)  # then 20 % of the data calls
                await until(lambda: len(registered()) >= 5, 10, "the first registrations")
                httpx.post(f"{hub.url}/admin/expire-tokens", timeout=5)
        await until(lambda: queue.depth_of(STREAM) == 0, 15, "the backlog registered")
        for n, s in enumerate(serials[:10]):  # a scanner reads parts that were registered
            registrar.on_sample("m1", [Reading("scanned", s, "good")], ts + 100 + n, lambda d, p: "")
            await until(lambda n=n: sum(1 for x, _ in events if x == "m1/resolved") > n, 10, "a resolution")
        await registrar.stop()

    asyncio.run(run())
    faults(hub.url)
    outcomes = Counter(
        (b["handle"], b["state"]) for s, b in events if s == "identifiers" and tag in b["handle"]
    )
    assert outcomes == Counter({(f"{P}/{s}", "registered"): 1 for s in serials}), outcomes
    records = on_node(hub.url, f"/{tag}")
    assert sorted(r["handle"] for r in records) == [f"{P}/{s}" for s in serials]
    assert all(r["templateVersion"] == RULES[kind] for r in records)
    # each was created once: a 504 that had registered was recognised on the retry
    assert stats(hub.url)["registrations"] - before == len(serials)
    resolved = [b for s, b in events if s == "m1/resolved"]
    assert [b["handle"] for b in resolved] == [f"{P}/{s}" for s in serials[:10]]
    assert all("record" in b for b in resolved), [b.get("error") for b in resolved]
    values = {v["type"]: v["value"] for v in resolved[0]["record"]["values"]}
    assert values["serial_number"] == serials[0] and values["model"] == "IM-200"
    counts = registrar.this_year()
    assert counts[P] == {"registered": len(serials), "resolved": 10}
    assert registrar.client.logins >= 2  # type: ignore[attr-defined]  # logged in again after the expiry
    assert registrar.counters["retries"] >= 1 and stats(hub.url)["updates"] > updates  # the 504s happened
    queue.close()


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*EDGEGW, *args, "-c", str(config)], cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def test_idhub_config_is_checked_and_edgegw_id_uses_it(hub: Hub, tmp_path: Path) -> None:
    key = tmp_path / "keys" / "app.pem"
    key.parent.mkdir()
    key.write_bytes(hub.key.read_bytes())
    node = f'kind: idhub, url: "{hub.url}", app_handle: {APP}, private_key: keys/app.pem, prefix: "{P}"'
    config = tmp_path / "gw.yaml"
    config.write_text(
        f"gateway: {{id: gw-hub, data_dir: {tmp_path}/data}}\nidentifier:\n  node: {{{node}}}\n"
    )

    async def register() -> None:
        client = IdhubClient(hub.url, P, APP, str(hub.key))
        await client.register(Registration(f"{P}/HUB-CLI", META, GOOD))
        await client.close()

    asyncio.run(register())
    out = cli(config, "id", "resolve", f"{P}/HUB-CLI")  # the command logs in with the config's key
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0] == f"{P}/HUB-CLI  (template {META})"
    assert any(line.split() == ["2000", "serial_number", "SN-1"] for line in out.stdout.splitlines())
    (tmp_path / "data").mkdir()
    queue = DurableQueue(tmp_path / "data" / "queue.sqlite3", 10**8)  # what a gateway counted
    year = year_now()
    queue.put_state(f"idcount/{year}/{P}/registered", "12345")
    queue.put_state(f"idcount/{year}/{P}/resolved", "678")
    queue.put_state(f"idcount/{year - 1}/{P}/registered", "99999")  # last year's: not shown
    queue.put_state(f"idcount/{year}/88.999/resolved", "20000")
    assert queue.commit() is True
    queue.close()
    out = cli(config, "id", "status")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert f"this year ({year}, Beijing time) by this gateway; the reward needs 100,000 and 20,000:" in lines
    assert f"  {P:<20} {12345:>12,} {678:>12,}   (12.3 % / 3.4 %)" in lines, out.stdout
    assert f"  {'88.999':<20} {0:>12,} {20000:>12,}   (0.0 % / 100.0 %)" in lines, out.stdout
    assert "99,999" not in out.stdout
    cases = [
        (node.replace(", app_handle: " + APP, ""), "identifier.node: an idhub node needs app_handle"),
        (
            node.replace("keys/app.pem", "keys/none.pem"),
            "identifier.node.private_key: cannot read keys/none.pem",
        ),
        (node.replace("keys/app.pem", "gw.yaml"), "identifier.node.private_key: gw.yaml is not a PKCS#8 PEM"),
        (node + ", login: cipher", "identifier.node: login: cipher is the snms login"),
    ]
    for n, (text, words) in enumerate(cases):
        bad = tmp_path / f"bad{n}.yaml"
        bad.write_text(
            f"gateway: {{id: gw-hub, data_dir: {tmp_path}/data}}\nidentifier:\n  node: {{{text}}}\n"
        )
        with pytest.raises(ConfigError) as exc:
            load_config(bad)
        assert str(exc.value).startswith(f"{bad}:3: {words}"), str(exc.value)
    out = cli(tmp_path / "bad1.yaml", "validate")  # and the command says so, exit 2
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.startswith(f"{tmp_path / 'bad1.yaml'}:3: identifier.node.private_key: cannot read"), (
        out.stderr
    )


def test_after_a_504_the_nodes_own_template_value_does_not_make_the_record_differ(
    hub: Hub, tmp_path: Path
) -> None:
    """A real node adds the template version at index 1001 to a record (handle-operate.md): with
    on_exists keep, the retry after a 504 must still recognise the record as ours."""
    rule = IdentifierRule(
        name="keep",
        trigger=PointRef(device="m1", point="serial"),
        template="1.0",
        on_exists="keep",
        values=[RuleValue(index=v.index, type=v.type, value=v.value) for v in GOOD[1:]]
        + [RuleValue(index=2000, type="serial_number", value="{value}")],
    )
    events: list[dict[str, Any]] = []
    queue = DurableQueue(tmp_path / "queue.sqlite3", 10**8)
    registrar = Registrar(
        queue, client_for("plain", hub), RuleSet([rule], P), lambda _s, b: events.append(b), retry_max=0.3
    )

    async def run() -> None:
        faults(hub.url, timeout_rate=1.0)
        await registrar.start()
        registrar.on_sample("m1", [Reading("serial", "KEEP-1", "good")], 1, lambda d, p: "")
        deadline = time.monotonic() + 10
        while not on_node(hub.url, "/KEEP-1"):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        faults(hub.url)
        while not events:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        await registrar.stop()

    asyncio.run(run())
    detail = on_node(hub.url, "/KEEP-1")[0]
    assert events == [
        {**events[0], "state": "registered", "note": "already registered with the same values"}
    ], events
    assert detail["templateVersion"] == "1.0"
    queue.close()


class SlowWrites:
    """The real client, with writes that take 0.5 s more to start (a busy node or network): the
    registration is still under way when the part is read."""

    def __init__(self, client: NodeClient):
        self.client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    async def register(self, reg: Registration) -> None:
        await asyncio.sleep(0.5)
        await self.client.register(reg)

    async def register_batch(self, regs: list[Registration]) -> list[Any]:
        await asyncio.sleep(0.5)
        return await self.client.register_batch(regs)


def test_a_part_resolved_as_soon_as_it_is_made_waits_for_its_registration(hub: Hub, tmp_path: Path) -> None:
    """The demo's rules: a trigger and a resolve rule on one point. The resolution waits for the
    registration queued for the same handle, so it finds the record (not "does not exist")."""
    import yaml

    demo = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())["identifier"]["rules"]
    rules = [IdentifierRule.model_validate(r) for r in demo]
    assert rules[1].resolve == rules[0].trigger  # the demo resolves the parts its moulder made
    events: list[tuple[str, dict[str, Any]]] = []
    queue = DurableQueue(tmp_path / "queue.sqlite3", 10**8)
    slow = SlowWrites(client_for("plain", hub))
    registrar = Registrar(queue, slow, RuleSet(rules, P), lambda s, b: events.append((s, b)))  # type: ignore[arg-type]
    values = {"recipe_code": "R-7", "barrel_temp_1": "215.3", "cycle_time": "32.5"}

    async def run() -> None:
        await registrar.start()
        for n in range(3):
            ts = time.time_ns() // 1_000_000
            reading = Reading("product_serial", f"DEMO-{n}", "good")
            registrar.on_sample("im-01", [reading], ts, lambda d, p: values.get(p, ""))
        deadline = time.monotonic() + 10
        while sum(1 for s, _ in events if s == "im-01/resolved") < 3:
            assert time.monotonic() < deadline, events
            await asyncio.sleep(0.05)
        await registrar.stop()

    asyncio.run(run())
    resolved = [b for s, b in events if s == "im-01/resolved"]
    assert sorted(b["handle"] for b in resolved) == [f"{P}/DEMO-{n}" for n in range(3)]
    assert all("record" in b for b in resolved), resolved
    assert registrar.this_year()[P]["resolved"] == 3
    queue.close()
