"""edgegw's OPC UA server (`northbound.opcua_server`) seen by an independent client: asyncua's
Client over Basic256Sha256/SignAndEncrypt with users, against `edgegw run` polling the Modbus
simulator over TCP. Values held on the simulator are read back through the server; writes by
the write user reach the simulator's register; the read user, an ro point, a value out of
range, security None, an untrusted client certificate and anonymous sessions are refused; the
address space follows a reload."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from asyncua import Client, ua
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from edgegw.gateway.opcua import pki
from harness import EDGEGW, ROOT, Proc, free_port, wait_for, wait_port

GW = "gw-ua"
ENV = {"UA_READ_PW": "r3ad-only", "UA_WRITE_PW": "wr1te-access"}


def _config(tmp: Path, sim: int, control: int, ua_port: int, devices: str) -> str:
    return f"""
include: {ROOT}/configs/models/*.yaml
gateway: {{id: {GW}, data_dir: {tmp}/data}}
devices:
{devices}
northbound:
  opcua_server:
    endpoint: opc.tcp://127.0.0.1:{ua_port}/edgegw
    security: [{{policy: Basic256Sha256, mode: SignAndEncrypt}}]
    users:
      - {{username: viewer, password: "${{UA_READ_PW}}", access: read}}
      - {{username: engineer, password: "${{UA_WRITE_PW}}", access: write}}
    max_classification: important
"""


def _device(name: str, sim: int, unit: int) -> str:
    return f"""  - id: {name}
    model: injection-molder
    protocol: modbus-tcp
    connection: {{host: 127.0.0.1, port: {sim}, unit_id: {unit}, timeout: 300ms}}
    poll: {{interval: 200ms}}
"""


@dataclass
class Plant:
    tmp: Path
    config: Path
    ua_port: int
    control: int
    sim: Proc
    gw: Proc
    cert: Path
    key: Path
    sim_port: int

    @property
    def url(self) -> str:
        return f"opc.tcp://127.0.0.1:{self.ua_port}/edgegw"

    def ctl(self, method: str, path: str, body: Any = None) -> Any:
        r = httpx.request(method, f"http://127.0.0.1:{self.control}{path}", json=body, timeout=10)
        r.raise_for_status()
        return r.json()


@pytest.fixture(scope="module")
def plant(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plant]:
    tmp = tmp_path_factory.mktemp("uaserver")
    sim_port, control, ua_port = free_port(), free_port(), free_port()
    cfg = tmp / "gw.yaml"
    cfg.write_text(
        _config(tmp, sim_port, control, ua_port, _device("im-1", sim_port, 1) + _device("im-2", sim_port, 2))
    )
    # the SCADA's application certificate, trusted by the gateway before it connects
    cert, key = tmp / "scada.der", tmp / "scada.pem"
    pki.create_certificate(cert, key, "urn:test:scada", common_name="test scada")
    trusted = tmp / "data" / "pki" / "trusted"
    trusted.mkdir(parents=True)
    shutil.copy(cert, trusted / "scada.der")
    sim = Proc(
        [*EDGEGW, "simulate", "-c", str(cfg), "--control", f"127.0.0.1:{control}"], tmp / "sim.log", env=ENV
    )
    wait_port(control, 20)
    gw = Proc([*EDGEGW, "run", "-c", str(cfg)], tmp / "gw.log", env=ENV)
    try:
        wait_port(ua_port, 30)
        yield Plant(tmp, cfg, ua_port, control, sim, gw, cert, key, sim_port)
    finally:
        gw.stop()
        sim.stop()
    assert "Traceback" not in gw.output()


async def _connect(
    plant: Plant,
    user: str | None = "engineer",
    locale: list[str] | None = None,
    cert: Path | None = None,
    secure: bool = True,
) -> Client:
    client = Client(plant.url, timeout=10)
    client.application_uri = "urn:test:scada"
    if secure:
        await client.set_security(
            SecurityPolicyBasic256Sha256,
            certificate=str(cert or plant.cert),
            private_key=str((cert or plant.cert).with_suffix(".pem")),
            mode=ua.MessageSecurityMode.SignAndEncrypt,
        )
    if user is not None:
        client.set_user(user)
        client.set_password(ENV["UA_WRITE_PW"] if user == "engineer" else ENV["UA_READ_PW"])
    if locale is not None:
        client.set_locale(locale)
    await client.connect()
    return client


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def _ns(client: Client) -> int:
    return int(await client.get_namespace_index(f"urn:edgegw:{GW}"))


async def _status_until(node: Any, wanted: Any, timeout: float = 10.0) -> ua.DataValue:
    """The node's DataValue once `wanted(StatusCode)` holds (or the last one read)."""
    for _ in range(int(timeout / 0.1)):
        dv = await node.read_data_value(raise_on_bad_status=False)
        if wanted(dv.StatusCode):
            break
        await asyncio.sleep(0.1)
    return dv


async def _value_until(client: Client, node: Any, want: Any, timeout: float = 10.0) -> ua.DataValue:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        dv = await node.read_data_value(raise_on_bad_status=False)
        if dv.Value is not None and dv.Value.Value == want:
            return dv
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{node}: {dv.Value} {dv.StatusCode}, wanted {want!r}")
        await asyncio.sleep(0.1)


def test_browse_paths_node_ids_types_and_values_equal_the_simulators(plant: Plant) -> None:
    held = {"barrel_temp_1": 215.3, "injection_pressure": 1234.5, "shot_count": 4242, "alarm_active": True}
    for point, value in held.items():
        plant.ctl("PUT", f"/devices/im-1/points/{point}", {"value": value})

    async def check() -> None:
        client = await _connect(plant, user="viewer")
        try:
            ns = await _ns(client)
            objects = client.nodes.objects
            gw = await objects.get_child([f"{ns}:{GW}"])
            device = await gw.get_child([f"{ns}:im-1"])
            assert device.nodeid == ua.NodeId("im-1", ns)
            names = {(await c.read_browse_name()).Name for c in await device.get_children()}
            assert {"barrel_temp_1", "shot_count", "barrel_setpoint_1", "_status"} <= names
            assert "recipe_code" not in names  # core: above max_classification important
            for point, value in held.items():
                node = await device.get_child([f"{ns}:{point}"])
                assert node.nodeid == ua.NodeId(f"im-1.{point}", ns)
                dv = await _value_until(client, node, value)
                assert dv.StatusCode.is_good()
                assert dv.SourceTimestamp is not None
            types = {
                "barrel_temp_1": ua.VariantType.Double,  # int16 with scale 0.1
                "injection_pressure": ua.VariantType.Float,
                "shot_count": ua.VariantType.UInt32,
                "alarm_active": ua.VariantType.Boolean,
                "machine_state": ua.VariantType.UInt16,
                "product_serial": ua.VariantType.String,
            }
            for point, vtype in types.items():
                node = client.get_node(ua.NodeId(f"im-1.{point}", ns))
                assert await node.read_data_type() == ua.NodeId(vtype.value), point
                assert (await node.read_data_value(raise_on_bad_status=False)).Value.VariantType == vtype, (
                    point
                )
            status = await device.get_child([f"{ns}:_status"])
            await _value_until(client, status, "online")
        finally:
            await client.disconnect()

    run(check())


def test_eurange_engineering_units_and_both_languages(plant: Plant) -> None:
    async def check() -> None:
        en = await _connect(plant, user="viewer")
        zh = await _connect(plant, user="viewer", locale=["zh-CN", "en"])
        try:
            ns = await _ns(en)
            node = en.get_node(ua.NodeId("im-1.barrel_temp_1", ns))
            rng = await (await node.get_child(["0:EURange"])).read_value()
            assert (rng.Low, rng.High) == (0.0, 400.0)
            eu = await (await node.get_child(["0:EngineeringUnits"])).read_value()
            assert eu.NamespaceUri == "http://www.opcfoundation.org/UA/units/un/cefact"
            assert eu.UnitId == (ord("C") << 16) | (ord("E") << 8) | ord("L")  # CEL, OPC 10000-8 5.6.3
            assert eu.DisplayName.Text == "°C"
            assert (await node.read_display_name()).Text == "Barrel temperature zone 1"
            zh_node = zh.get_node(ua.NodeId("im-1.barrel_temp_1", ns))
            shown = await zh_node.read_display_name()
            assert (shown.Text, shown.Locale) == ("料筒温度1区", "zh")
            # Browse answers in the session's language as well
            refs = await zh.get_node(ua.NodeId("im-1", ns)).get_references(ua.ObjectIds.HasComponent)
            by_id = {r.NodeId.Identifier: r.DisplayName.Text for r in refs}
            assert by_id["im-1.barrel_temp_1"] == "料筒温度1区"
            refs = await en.get_node(ua.NodeId("im-1", ns)).get_references(ua.ObjectIds.HasComponent)
            assert {r.NodeId.Identifier: r.DisplayName.Text for r in refs}["im-1.barrel_temp_1"] == (
                "Barrel temperature zone 1"
            )
        finally:
            await en.disconnect()
            await zh.disconnect()

    run(check())


def test_a_subscription_delivers_changes(plant: Plant) -> None:
    async def check() -> None:
        client = await _connect(plant, user="viewer")
        got: list[Any] = []

        class Handler:
            def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
                got.append(val)

        try:
            ns = await _ns(client)
            sub = await client.create_subscription(100, Handler())
            await sub.subscribe_data_change(client.get_node(ua.NodeId("im-1.cycle_time", ns)))
            for value in (31.5, 42.25, 17.75):
                plant.ctl("PUT", "/devices/im-1/points/cycle_time", {"value": value})
                for _ in range(100):
                    if value in got:
                        break
                    await asyncio.sleep(0.1)
                assert value in got, got[-5:]
            await sub.delete()
        finally:
            await client.disconnect()

    run(check())


def test_bad_and_uncertain_points_carry_the_closest_status_code(plant: Plant) -> None:
    plant.ctl("PUT", "/devices/im-2/fault", {"mode": "exception", "code": 2})
    plant.ctl("PUT", "/devices/im-1/points/mold_temp", {"value": 130.0})  # range [10, 120]

    async def check() -> None:
        client = await _connect(plant, user="viewer")
        try:
            ns = await _ns(client)
            node = client.get_node(ua.NodeId("im-2.barrel_temp_1", ns))
            dv = await _status_until(node, ua.StatusCode.is_bad)
            assert dv.StatusCode.value == ua.StatusCodes.BadConfigurationError, dv.StatusCode
            assert dv.Value is None or dv.Value.Value is None
            other = client.get_node(ua.NodeId("im-1.mold_temp", ns))
            dv = await _status_until(other, ua.StatusCode.is_uncertain)
            assert dv.StatusCode.value == ua.StatusCodes.UncertainEngineeringUnitsExceeded
            assert dv.Value.Value == 130.0
        finally:
            await client.disconnect()

    try:
        run(check())
    finally:
        plant.ctl("PUT", "/devices/im-2/fault", {"mode": "none"})
        plant.ctl("DELETE", "/devices/im-1/points/mold_temp")


def test_writes_reach_the_device_for_the_write_user_only(plant: Plant) -> None:
    async def write(client: Client, point: str, value: float, vtype: ua.VariantType) -> ua.StatusCode:
        ns = await _ns(client)
        params = ua.WriteParameters()
        wv = ua.WriteValue()
        wv.NodeId = ua.NodeId(f"im-1.{point}", ns)
        wv.AttributeId = ua.AttributeIds.Value
        wv.Value = ua.DataValue(ua.Variant(value, vtype))
        params.NodesToWrite = [wv]
        return (await client.uaclient.write(params))[0]

    async def check() -> None:
        engineer = await _connect(plant, user="engineer")
        viewer = await _connect(plant, user="viewer")
        try:
            code = await write(engineer, "barrel_setpoint_1", 187.5, ua.VariantType.Double)
            assert code.is_good(), code
            assert plant.ctl("GET", "/devices/im-1/values")["barrel_setpoint_1"] == 187.5
            code = await write(viewer, "barrel_setpoint_1", 150.0, ua.VariantType.Double)
            assert code.value == ua.StatusCodes.BadUserAccessDenied
            assert plant.ctl("GET", "/devices/im-1/values")["barrel_setpoint_1"] == 187.5
            code = await write(engineer, "barrel_temp_1", 100.0, ua.VariantType.Double)  # ro
            assert code.value == ua.StatusCodes.BadNotWritable
            code = await write(engineer, "barrel_setpoint_1", 999.0, ua.VariantType.Double)  # range 0..400
            assert code.value == ua.StatusCodes.BadOutOfRange
            code = await write(engineer, "barrel_setpoint_1", "hot", ua.VariantType.String)  # type: ignore[arg-type]
            assert code.value == ua.StatusCodes.BadTypeMismatch
            assert plant.ctl("GET", "/devices/im-1/values")["barrel_setpoint_1"] == 187.5
        finally:
            await engineer.disconnect()
            await viewer.disconnect()
        log = plant.gw.output()
        assert "point=barrel_setpoint_1" in log and "by=engineer" in log and "via=opcua" in log
        assert ENV["UA_WRITE_PW"] not in log and ENV["UA_READ_PW"] not in log

    run(check())


def test_security_none_anonymous_wrong_password_and_untrusted_clients_are_refused(plant: Plant) -> None:
    stranger = plant.tmp / "stranger.der"
    pki.create_certificate(stranger, stranger.with_suffix(".pem"), "urn:test:scada", common_name="stranger")

    async def refused(**kw: Any) -> str:
        try:
            client = await _connect(plant, **kw)
        except Exception as exc:  # asyncua raises what the server answered
            return f"{type(exc).__name__}: {exc}"
        await client.disconnect()
        raise AssertionError(f"connected with {kw}")

    async def check() -> None:
        assert await refused(secure=False, user="viewer")  # no None endpoint is offered
        assert "BadIdentityTokenRejected" in await refused(user=None)  # anonymous not listed
        wrong = Client(plant.url, timeout=10)
        wrong.application_uri = "urn:test:scada"
        await wrong.set_security(
            SecurityPolicyBasic256Sha256,
            certificate=str(plant.cert),
            private_key=str(plant.key),
            mode=ua.MessageSecurityMode.SignAndEncrypt,
        )
        wrong.set_user("engineer")
        wrong.set_password("guess")
        with pytest.raises(Exception, match="BadUserAccessDenied"):
            await wrong.connect()
        assert "BadCertificateUntrusted" in await refused(cert=stranger)

    run(check())
    rejected = list((plant.tmp / "data" / "pki" / "rejected").glob("client-*.der"))
    assert [p.read_bytes() for p in rejected] == [pki.load_der(stranger)]
    wait_for(lambda: "OPC UA client refused" in plant.gw.output(), 5, "the refusal logged")


def test_the_address_space_follows_a_reload(plant: Plant) -> None:
    plant.config.write_text(
        _config(
            plant.tmp,
            plant.sim_port,
            plant.control,
            plant.ua_port,
            _device("im-1", plant.sim_port, 1)
            + _device("im-3", plant.sim_port, 2),  # unit 2 of the simulator
        )
    )
    plant.gw.signal(signal.SIGHUP)
    wait_for(lambda: "config reloaded" in plant.gw.output(), 15, "reload applied")

    async def check() -> None:
        client = await _connect(plant, user="viewer")
        try:
            ns = await _ns(client)
            gw = await client.nodes.objects.get_child([f"{ns}:{GW}"])
            for _ in range(100):
                names = {(await c.read_browse_name()).Name for c in await gw.get_children()}
                if names == {"im-1", "im-3"}:
                    break
                await asyncio.sleep(0.1)
            assert names == {"im-1", "im-3"}
            node = client.get_node(ua.NodeId("im-3.shot_count", ns))
            dv = await _status_until(node, ua.StatusCode.is_good)
            assert dv.StatusCode.is_good()
            gone = await client.get_node(ua.NodeId("im-2.shot_count", ns)).read_attribute(
                ua.AttributeIds.Value, raise_on_bad_status=False
            )
            assert gone.StatusCode.value == ua.StatusCodes.BadNodeIdUnknown
        finally:
            await client.disconnect()

    run(check())
    assert os.path.exists(plant.tmp / "data" / "pki" / "edgegw.der")


NODE_MODULES = ROOT / ".venv" / "node" / "node_modules"


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed here")
def test_a_node_opcua_client_browses_reads_and_writes(plant: Plant) -> None:
    """Another OPC UA stack than asyncua: node-opcua (installed by `make setup`)."""
    assert (NODE_MODULES / "node-opcua-client").is_dir(), "run `make setup` (it installs node-opcua-client)"
    cert, key = plant.tmp / "node.der", plant.tmp / "node.pem"
    pki.create_certificate(cert, key, "urn:test:node-opcua", common_name="node-opcua test")
    shutil.copy(cert, plant.tmp / "data" / "pki" / "trusted" / "node.der")
    pem = plant.tmp / "node-cert.pem"
    pem.write_text(ssl.DER_cert_to_PEM_cert(cert.read_bytes()))
    plant.ctl("PUT", "/devices/im-1/points/shot_count", {"value": 777})
    args = {
        "endpoint": plant.url,
        "pki": str(plant.tmp / "node-pki"),
        "uri": "urn:test:node-opcua",
        "cert": str(pem),
        "key": str(key),
        "user": "engineer",
        "password": ENV["UA_WRITE_PW"],
        "ns_uri": f"urn:edgegw:{GW}",
        "device": "im-1",
        "node": "im-1.shot_count",
        "write_node": "im-1.barrel_setpoint_1",
        "write_value": 212.5,
    }
    wait_for(lambda: run(_read_shot_count(plant)) == 777, 10, "the held value served")
    done = subprocess.run(
        ["node", str(Path(__file__).with_name("node_client.js")), json.dumps(args)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "NODE_PATH": str(NODE_MODULES)},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(next(ln for ln in done.stdout.splitlines() if ln.startswith("RESULT "))[7:])
    assert seen["ns"] > 0
    assert (seen["value"], seen["status"], seen["dataType"]) == (777, "Good", "UInt32")
    assert {"barrel_temp_1", "shot_count", "_status"} <= set(seen["children"])
    assert "recipe_code" not in seen["children"]
    assert seen["write"] == "Good"
    assert plant.ctl("GET", "/devices/im-1/values")["barrel_setpoint_1"] == 212.5


async def _read_shot_count(plant: Plant) -> Any:
    client = await _connect(plant, user="viewer")
    try:
        node = client.get_node(ua.NodeId("im-1.shot_count", await _ns(client)))
        return (await node.read_data_value(raise_on_bad_status=False)).Value.Value
    finally:
        await client.disconnect()


def test_a_taken_port_is_reported_and_the_server_opens_once_it_is_free(plant: Plant) -> None:
    """Another process holds the endpoint's port: /readyz says why, polling goes on, and the
    server listens by itself once the port is free."""
    ua_port, api_port = free_port(), free_port()
    cfg = plant.tmp / "taken.yaml"
    cfg.write_text(
        f"""
include: {ROOT}/configs/models/*.yaml
gateway: {{id: gw-taken, data_dir: {plant.tmp}/taken-data}}
devices:
{_device("im-1", plant.sim_port, 1)}
northbound:
  opcua_server:
    endpoint: opc.tcp://127.0.0.1:{ua_port}/edgegw
    security: [{{policy: None}}]
    anonymous: read
api: {{listen: 127.0.0.1:{api_port}}}
"""
    )
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.bind(("127.0.0.1", ua_port))
    holder.listen()
    gw = Proc([*EDGEGW, "run", "-c", str(cfg)], plant.tmp / "taken.log")
    try:
        wait_port(api_port, 20)

        def why() -> str:
            return str(httpx.get(f"http://127.0.0.1:{api_port}/readyz", timeout=5).json())

        wait_for(lambda: "OPC UA server cannot open" in why(), 20, "readyz naming the endpoint")
        holder.close()
        wait_for(lambda: "OPC UA" not in why(), 40, "the server listening once the port is free")

        async def read() -> Any:
            client = Client(f"opc.tcp://127.0.0.1:{ua_port}/edgegw", timeout=10)
            await client.connect()
            try:
                ns = int(await client.get_namespace_index("urn:edgegw:gw-taken"))
                node = client.get_node(ua.NodeId("im-1.shot_count", ns))
                dv = await _status_until(node, ua.StatusCode.is_good)
                # the device came online while the port was taken: its status is not lost
                status = await client.get_node(ua.NodeId("im-1._status", ns)).read_value()
                return dv, status
            finally:
                await client.disconnect()

        dv, status = run(read())
        assert dv.StatusCode.is_good()
        assert status == "online"
        assert "Traceback" not in gw.output()
    finally:
        holder.close()
        gw.stop()
