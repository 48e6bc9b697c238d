"""OPC UA against a plain asyncua server written here (not edgegw's simulator), over a real
socket: Basic256Sha256/SignAndEncrypt only, a username, and a trust list that holds exactly the
gateway's certificate (made by `edgegw certs create`). The gateway runs as `edgegw run` with
Mosquitto; what it publishes is checked on the broker, what it refuses in the device status.

Covers: trusting certificates both ways (the untrusted server certificate is saved and named,
moving it to pki/trusted lets the device connect; a gateway certificate the server does not
trust is named in the refusal), no fallback to a weaker endpoint, a wrong password, poll and
subscribe, Bad status, a node that does not exist (only its point bad), a device status that
follows its cause when the cause changes, and `edgegw browse` output that validates as is (the
identity from the environment when the server wants a username)."""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from asyncua import Server, ua
from asyncua.crypto import uacrypto
from asyncua.crypto.permission_rules import User, UserRole
from edgegw.gateway.config import load_config
from edgegw.gateway.opcua import pki
from harness import EDGEGW, ROOT, Proc, Subscriber, free_port, start_mosquitto, wait_for, wait_port

NS_URI = "urn:test:press"


class Users:
    def get_user(
        self, iserver: Any, username: Any = None, password: Any = None, certificate: Any = None
    ) -> Any:
        if username == "op" and password in ("s3cret", b"s3cret"):
            return User(role=UserRole.User, name="op")
        return None


class PlainServer:
    """An asyncua server on its own thread and event loop, with a press's variables."""

    def __init__(self, tmp: Path, port: int, trusted_client: Path):
        self.port = port
        self.endpoint = f"opc.tcp://127.0.0.1:{port}"
        self.cert, self.key = tmp / "server.der", tmp / "server.pem"
        pki.create_certificate(self.cert, self.key, "urn:test:press:server")
        self.trusted_client = pki.load_der(trusted_client)
        self.rejected: list[str] = []
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.ready.wait(20), "server did not start"

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._start())
        self.ready.set()
        self.loop.run_forever()

    async def _validate(self, cert: Any, app: ua.ApplicationDescription) -> None:
        if uacrypto.der_from_x509(cert) != self.trusted_client:
            self.rejected.append(app.ApplicationUri)
            raise ua.UaStatusCodeError(ua.StatusCodes.BadCertificateUntrusted)

    async def _start(self) -> None:
        s = Server(user_manager=Users())  # type: ignore[arg-type]
        await s.init()
        s.set_endpoint(self.endpoint)
        await s.set_application_uri("urn:test:press:server")
        s.set_security_policy([ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt])
        s.set_identity_tokens([ua.UserNameIdentityToken])
        await s.load_certificate(str(self.cert))
        await s.load_private_key(str(self.key))
        s.set_certificate_validator(self._validate)  # type: ignore[arg-type]
        ns = await s.register_namespace(NS_URI)
        press = await s.nodes.objects.add_object(ua.NodeId("Press", ns), ua.QualifiedName("Press", ns))
        self.force = await press.add_variable(
            ua.NodeId("Force", ns), ua.QualifiedName("Force", ns), ua.Variant(0.0, ua.VariantType.Double)
        )
        await self.force.write_attribute(
            ua.AttributeIds.DisplayName, ua.DataValue(ua.LocalizedText("Press force"))
        )
        await self.force.add_property(
            0, "EURange", ua.Variant(ua.Range(0.0, 2500.0), ua.VariantType.ExtensionObject)
        )
        eu = ua.EUInformation()
        eu.NamespaceUri = "http://www.opcfoundation.org/UA/units/un/cefact"
        eu.UnitId = int.from_bytes(b"KNT".rjust(4, b"\0"), "big")  # kilonewton
        eu.DisplayName = ua.LocalizedText("kN")
        await self.force.add_property(0, "EngineeringUnits", ua.Variant(eu, ua.VariantType.ExtensionObject))
        self.strokes = await press.add_variable(
            ua.NodeId(5001, ns), ua.QualifiedName("StrokeCount", ns), ua.Variant(0, ua.VariantType.UInt32)
        )
        self.die = await press.add_variable(
            ua.NodeId("Die", ns), ua.QualifiedName("DieName", ns), ua.Variant("D-17", ua.VariantType.String)
        )
        self.setpoint = await press.add_variable(
            ua.NodeId("Setpoint", ns),
            ua.QualifiedName("ForceSetpoint", ns),
            ua.Variant(1800.0, ua.VariantType.Double),
        )
        await self.setpoint.set_writable()
        self.sensor = await press.add_variable(
            ua.NodeId("Oil", ns),
            ua.QualifiedName("OilTemperature", ns),
            ua.Variant(41.5, ua.VariantType.Float),
        )
        profile = await press.add_variable(
            ua.NodeId("Profile", ns),
            ua.QualifiedName("ForceProfile", ns),
            ua.Variant([1.0, 2.0, 3.0], ua.VariantType.Double),
        )
        await profile.write_attribute(
            ua.AttributeIds.ValueRank, ua.DataValue(ua.Variant(1, ua.VariantType.Int32))
        )
        await press.add_variable(
            ua.NodeId("Started", ns),
            ua.QualifiedName("StartedAt", ns),
            ua.Variant(datetime.datetime(2026, 1, 2, 3, 4, 5), ua.VariantType.DateTime),
        )
        self.server = s
        await s.start()
        self._ticker = asyncio.ensure_future(self._tick())

    async def _tick(self) -> None:
        n = 0
        while True:
            n += 1
            await self.force.write_value(ua.Variant(1000.0 + n % 100, ua.VariantType.Double))
            await self.strokes.write_value(ua.Variant(n, ua.VariantType.UInt32))
            await asyncio.sleep(0.1)

    def call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def sensor_bad(self, bad: bool) -> None:
        dv = (
            ua.DataValue(StatusCode=ua.StatusCode(ua.StatusCodes.BadSensorFailure))
            if bad
            else ua.DataValue(ua.Variant(41.5, ua.VariantType.Float))
        )
        self.call(self.server.write_attribute_value(self.sensor.nodeid, dv))

    def stop(self) -> None:
        async def _stop() -> None:
            self._ticker.cancel()
            await self.server.stop()

        self.call(_stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


POINTS = f"""
      - {{id: force, type: float64, unit: KNT, opcua: {{node: "nsu={NS_URI};s=Force"}}}}
      - {{id: strokes, type: uint32, opcua: {{node: "nsu={NS_URI};i=5001"}}}}
      - {{id: die, type: string, opcua: {{node: "nsu={NS_URI};s=Die"}}}}
      - {{id: oil_temp, type: float32, opcua: {{node: "nsu={NS_URI};s=Oil"}}}}
      - {{id: missing, type: float64, opcua: {{node: "nsu={NS_URI};s=NoSuchNode"}}}}"""


def refused(device: str, connection: str) -> str:
    """A one-point device the server is expected to refuse."""
    return f"""  - id: {device}
    protocol: opcua
    connection: {connection}
    poll: {{interval: 1s, backoff_max: 1s}}
    points:
      - {{id: force, type: float64, opcua: {{node: "nsu={NS_URI};s=Force"}}}}"""


def cause_changes(device: str, mode: str, ep: str, pinned: Path) -> str:
    """A device refused first for the server's certificate (the pinned file does not exist
    yet), then, once it does, for its wrong password."""
    return f"""  - id: {device}
    protocol: opcua
    connection:
      endpoint: {ep}
      security: {{policy: Basic256Sha256, mode: SignAndEncrypt, server_certificate: {pinned}}}
      username: op
      password: nope
      timeout: 2s
    mode: {mode}
    poll: {{interval: 200ms, backoff_max: 1s}}
    points:
      - {{id: force, type: float64, opcua: {{node: "nsu={NS_URI};s=Force"}}}}"""


class Plant:
    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.opc, self.mqtt, self.api = free_port(), free_port(), free_port()
        self.data = tmp / "data"
        self.config = tmp / "gw.yaml"
        self.other = tmp / "other"  # a second gateway identity the server does not trust
        self.pinned = tmp / "pinned" / "press.der"  # appears during a test: the cause changes
        sec = "{policy: Basic256Sha256, mode: SignAndEncrypt}"
        ep = f'"opc.tcp://127.0.0.1:{self.opc}"'
        self.config.write_text(f"""
gateway: {{id: gw-press, data_dir: {self.data}}}
devices:
  - id: press-poll
    protocol: opcua
    connection: {{endpoint: {ep}, security: {sec}, username: op, password: s3cret, timeout: 2s}}
    mode: poll
    poll: {{interval: 200ms, backoff_max: 1s}}
    points:{POINTS}
  - id: press-sub
    protocol: opcua
    connection: {{endpoint: {ep}, security: {sec}, username: op, password: s3cret, timeout: 2s}}
    mode: subscribe
    poll: {{interval: 100ms, backoff_max: 1s}}
    points:{POINTS}
{refused("wrong-password", f"{{endpoint: {ep}, security: {sec}, username: op, password: nope}}")}
{refused("sign-only", f"{{endpoint: {ep}, security: {{policy: Basic256Sha256, mode: Sign}}, username: op, password: s3cret}}")}
{refused("no-security", f"{{endpoint: {ep}, username: op, password: s3cret}}")}
{cause_changes("cause-poll", "poll", ep, self.pinned)}
{cause_changes("cause-sub", "subscribe", ep, self.pinned)}
  - id: untrusted-client
    protocol: opcua
    connection:
      endpoint: {ep}
      security: {{policy: Basic256Sha256, mode: SignAndEncrypt, certificate: {self.other}/edgegw.der,
                  private_key: {self.other}/edgegw.pem}}
      username: op
      password: s3cret
    poll: {{interval: 1s, backoff_max: 1s}}
    points:
      - {{id: force, type: float64, opcua: {{node: "nsu={NS_URI};s=Force"}}}}
northbound:
  mqtt: {{host: 127.0.0.1, port: {self.mqtt}}}
api: {{listen: "127.0.0.1:{self.api}"}}
""")
        made = self.edgegw("certs", "create", "-c", str(self.config))
        assert made.returncode == 0, made.stderr
        assert "urn:edgegw:gw-press" in made.stdout
        made = self.edgegw("certs", "create", "--out", str(self.other), "--uri", "urn:edgegw:other")
        assert made.returncode == 0, made.stderr
        self.server = PlainServer(tmp, self.opc, self.data / "pki" / "edgegw.der")
        self.broker = start_mosquitto(tmp, self.mqtt)
        self.sub = Subscriber(self.mqtt, "edgegw/gw-press/#")
        self.gw = Proc([*EDGEGW, "run", "-c", str(self.config)], tmp / "gw.log")
        wait_port(self.api, 20)

    def edgegw(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*EDGEGW, *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)

    def device(self, dev: str) -> dict[str, Any]:
        r = httpx.get(f"http://127.0.0.1:{self.api}/api/v1/devices/{dev}", timeout=5)
        r.raise_for_status()
        return r.json()

    def stop(self) -> None:
        self.gw.stop()
        self.server.stop()
        self.broker.stop()
        self.sub.stop()


@pytest.fixture(scope="module")
def plant(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plant]:
    p = Plant(tmp_path_factory.mktemp("opcua-plain"))
    yield p
    p.stop()


def values_read(plant: Plant, device: str) -> list[Any]:
    """Values the device published that were read (an offline device publishes its points bad)."""
    return [p for m in plant.sub.data(device) for p in m["points"].values() if p["q"] != "bad"]


def trust_server(plant: Plant) -> None:
    rejected = plant.data / "pki" / "rejected"
    trusted = plant.data / "pki" / "trusted"
    trusted.mkdir(parents=True, exist_ok=True)
    for f in rejected.glob("press-poll-*.der"):
        shutil.move(str(f), trusted / f.name)


def test_untrusted_server_is_refused_naming_the_file_then_trusted(plant: Plant) -> None:
    status = wait_for(
        lambda: (s := plant.device("press-poll"))["state"] == "offline" and s["reason"] and s, 15, "refusal"
    )
    reason = status["reason"]
    assert "is not trusted" in reason and "SHA-1" in reason, reason
    saved = next((plant.data / "pki" / "rejected").glob("press-poll-*.der"))
    assert str(saved) in reason and str(plant.data / "pki" / "trusted") in reason
    assert pki.load_der(saved) == pki.load_der(plant.server.cert)  # the server's, for checking
    assert not values_read(plant, "press-poll")  # nothing was read over an untrusted channel
    trust_server(plant)
    wait_for(lambda: plant.device("press-poll")["state"] == "online", 15, "online once trusted")
    wait_for(lambda: plant.device("press-sub")["state"] == "online", 15, "subscription online")


def test_poll_over_signandencrypt_with_username(plant: Plant) -> None:
    trust_server(plant)
    wait_for(lambda: len(plant.sub.data("press-poll")) > 3, 20, "polled data")
    last = plant.sub.data("press-poll")[-1]["points"]
    assert last["die"] == {"v": "D-17", "q": "good", "ts": last["die"]["ts"]}
    assert 1000 <= last["force"]["v"] < 1100 and last["force"]["q"] == "good"
    assert last["strokes"]["q"] == "good" and last["strokes"]["v"] > 0
    # the node that does not exist: only its point is bad, with the status name
    assert last["missing"]["q"] == "bad" and "BadNodeIdUnknown" in last["missing"]["reason"]
    assert plant.device("press-poll")["state"] == "online"


def test_subscribe_delivers_changes_and_reports_the_missing_node(plant: Plant) -> None:
    trust_server(plant)
    wait_for(lambda: len(plant.sub.data("press-sub")) > 10, 20, "subscription data")
    msgs = plant.sub.data("press-sub")
    strokes = [m["points"]["strokes"]["v"] for m in msgs if m["points"].get("strokes", {}).get("q") == "good"]
    assert len(set(strokes)) > 5 and strokes == sorted(strokes)
    missing = [m["points"]["missing"] for m in msgs if "missing" in m["points"]]
    assert any(p["q"] == "bad" and p["reason"] == "BadNodeIdUnknown" for p in missing), missing


def test_bad_status_is_bad_with_its_name(plant: Plant) -> None:
    trust_server(plant)
    wait_for(lambda: len(plant.sub.data("press-poll")) > 1, 20, "polled data")
    plant.server.sensor_bad(True)
    try:
        n = len(plant.sub.data("press-poll"))
        wait_for(
            lambda: any(
                m["points"]["oil_temp"].get("reason") == "BadSensorFailure"
                for m in plant.sub.data("press-poll")[n:]
            ),
            10,
            "BadSensorFailure",
        )
        last = plant.sub.data("press-poll")[-1]["points"]
        assert last["force"]["q"] == "good"  # the other points of the device are unaffected
    finally:
        plant.server.sensor_bad(False)


def test_refusals_are_clear_and_never_fall_back(plant: Plant) -> None:
    trust_server(plant)  # so each refusal is the one under test, not the server's certificate
    reasons = {
        d: wait_for(
            lambda d=d: (r := plant.device(d)["reason"]) and "is not trusted" not in r and r,
            15,
            f"{d} refused",
        )
        for d in ("wrong-password", "sign-only", "no-security", "untrusted-client")
    }
    for d in reasons:
        assert plant.device(d)["state"] == "offline" and not values_read(plant, d)
    assert "BadUserAccessDenied" in reasons["wrong-password"]
    assert "has no Basic256Sha256/Sign endpoint" in reasons["sign-only"]
    assert "Basic256Sha256/SignAndEncrypt" in reasons["sign-only"]
    assert "refused" in reasons["no-security"] or "cannot connect" in reasons["no-security"]
    # the server's trust list lacks this certificate: the refusal names the file to give it
    assert str(plant.other / "edgegw.der") in reasons["untrusted-client"], reasons["untrusted-client"]
    assert "urn:edgegw:other" in plant.server.rejected


def test_status_reason_follows_the_cause_when_it_changes(plant: Plant) -> None:
    """Refused for the server's certificate, then for the password: the device's status (API
    and MQTT) names the cause of now, not the first one, in poll and in subscribe mode."""
    devices = ("cause-poll", "cause-sub")
    for d in devices:
        wait_for(
            lambda d=d: (
                plant.device(d)["state"] == "offline"
                and "does not exist" in (plant.device(d)["reason"] or "")
            ),
            15,
            f"{d} refused for the missing pinned certificate",
        )
        assert str(plant.pinned) in plant.device(d)["reason"]
    plant.pinned.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(plant.server.cert, plant.pinned)  # the certificate is right now; the password is not
    for d in devices:
        wait_for(
            lambda d=d: "BadUserAccessDenied" in (plant.device(d)["reason"] or ""),
            15,
            f"{d} reason names the password",
        )
        info = plant.device(d)
        assert info["state"] == "offline" and str(plant.pinned) not in info["reason"], info
        assert "BadUserAccessDenied" in (info["last_error"] or "")
        wait_for(
            lambda d=d: "BadUserAccessDenied" in plant.sub.json(f"/{d}/status")[-1].get("reason", ""),
            5,
            f"{d} MQTT status names the password",
        )
        assert not values_read(plant, d)


def browse(plant: Plant, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OPCUA_USER", "OPCUA_PASSWORD")}
    env["OPCUA_PASSWORD"] = "s3cret"
    return plant.edgegw(
        "browse",
        plant.server.endpoint,
        "--security",
        "Basic256Sha256:SignAndEncrypt",
        "-c",
        str(plant.config),
        "-o",
        str(out),
        *extra,
        env=env,
    )


def test_browse_with_a_username_writes_a_config_that_runs_with_the_identity_from_the_environment(
    plant: Plant,
) -> None:
    """The server refuses anonymous sessions: the browsed device must carry a username and a
    password to connect. Both come from the environment (placeholders in the file), the file
    validates with them set, and the password is never printed or written."""
    trust_server(plant)
    out = plant.tmp / "browsed-user.yaml"
    r = browse(plant, out, "--username", "op")
    assert r.returncode == 0, r.stderr
    text = out.read_text()
    assert "      username: ${OPCUA_USER}\n" in text and "      password: ${OPCUA_PASSWORD}\n" in text
    assert "s3cret" not in text + r.stdout + r.stderr
    base = {k: v for k, v in os.environ.items() if k not in ("OPCUA_USER", "OPCUA_PASSWORD")}
    ok = plant.edgegw(
        "validate", "-c", str(out), env={**base, "OPCUA_USER": "op", "OPCUA_PASSWORD": "s3cret"}
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "s3cret" not in ok.stdout + ok.stderr
    missing = plant.edgegw("validate", "-c", str(out), env=base)
    assert missing.returncode != 0 and "OPCUA_USER" in missing.stdout + missing.stderr
    dev = load_config(out, {"OPCUA_USER": "op", "OPCUA_PASSWORD": "s3cret"}).config.devices[0]
    conn: Any = dev.connection
    assert conn.username == "op" and conn.password.get_secret_value() == "s3cret"


def test_browse_prints_a_model_that_validates(plant: Plant) -> None:
    trust_server(plant)
    out = plant.tmp / "browsed.yaml"
    env = {**os.environ, "OPCUA_PASSWORD": "s3cret"}
    r = plant.edgegw(
        "browse",
        plant.server.endpoint,
        "--security",
        "Basic256Sha256:SignAndEncrypt",
        "-c",
        str(plant.config),
        "--username",
        "op",
        "-o",
        str(out),
        env=env,
    )
    assert r.returncode == 0, r.stderr
    loaded = load_config(out, {"OPCUA_USER": "op", "OPCUA_PASSWORD": "s3cret"})  # validates as is
    model = next(iter(loaded.config.models.values()))
    points = {p.id: p for p in model.points}
    force = points["press_force"]
    assert force.name == "Press force" and force.type == "float64"
    assert force.unit == "KNT" and force.range == (0.0, 2500.0) and force.access == "ro"
    assert force.opcua is not None and force.opcua.node.endswith(";s=Force")
    assert points["press_stroke_count"].type == "uint32"
    assert points["press_die_name"].type == "string"
    assert points["press_force_setpoint"].access == "rw"
    assert points["press_oil_temperature"].type == "float32"
    assert points["press_force_profile"].type == "float64"  # an array: published as a list
    assert points["press_started_at"].type == "string"  # DateTime
    text = out.read_text()
    assert "array: published as a JSON list" in text
    assert "Basic256Sha256" in text and "s3cret" not in text
    dev = loaded.config.devices[0]
    assert dev.protocol == "opcua" and dev.connection.endpoint == plant.server.endpoint  # type: ignore[union-attr]


def test_browse_of_untrusted_server_exits_1_with_the_reason(plant: Plant, tmp_path: Path) -> None:
    env = {**os.environ, "OPCUA_PASSWORD": "s3cret"}
    r = plant.edgegw(
        "browse",
        plant.server.endpoint,
        "--security",
        "Basic256Sha256:SignAndEncrypt",
        "--pki",
        str(tmp_path / "pki"),
        "--username",
        "op",
        env=env,
    )
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "is not trusted" in r.stderr and str(tmp_path / "pki" / "rejected") in r.stderr
    assert json.dumps("s3cret") not in r.stderr
