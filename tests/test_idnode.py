"""The secondary-node simulator's rules, and both clients against it, over real HTTP."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from edgegw.identifier.client import (
    Exists,
    HandleClient,
    NotFound,
    Registration,
    Rejected,
    SnmsClient,
    Transient,
)
from edgegw.identifier.templates import Template, TemplateItem, Value
from harness import GOOD, ROOT, P


def post(url: str, path: str, body: Any, token: str | None = None, method: str = "POST") -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    r = httpx.request(method, url + path, json=body, headers=headers, timeout=10)
    assert r.status_code == 200, r.text  # snms answers business outcomes with HTTP 200
    return r.json()


def login(url: str) -> str:
    return post(url, "/identity/token", {"username": "ops", "password": "pw"})["data"]["token"]


def item(handle: str, values: tuple[Value, ...] = GOOD, template: str = "1.0") -> dict[str, Any]:
    return {"handle": handle, "templateVersion": template, "value": [v.to_api() for v in values]}


def test_envelope_status_codes_and_template_rules(node: str) -> None:
    assert post(node, "/identity/token", {"username": "ops", "password": "no"})["status"] == -2
    assert post(node, "/identityv2/data", item(f"{P}/E-1"))["status"] == -1  # no token
    tok = login(node)
    ok = post(node, "/identityv2/data", item(f"{P}/E-1"), tok)
    assert ok == {"status": 1, "message": "success", "data": True}
    again = post(node, "/identityv2/data", item(f"{P}/e-1"), tok)  # case-insensitive
    assert again["status"] == -2 and "already exists" in again["message"]
    assert (
        post(node, "/identityv2/data", item("77.1/E-2"), tok)["status"] == -2
    )  # another enterprise's prefix
    missing = post(node, "/identityv2/data", item(f"{P}/E-3", GOOD[:2]), tok)
    assert "requires item 2002:batch" in missing["message"]
    reserved = post(node, "/identityv2/data", item(f"{P}/E-4", (*GOOD, Value(1200, "x", "y"))), tok)
    assert "reserved" in reserved["message"]
    long = post(
        node,
        "/identityv2/data",
        item(f"{P}/E-5", (GOOD[0], GOOD[1], Value(2002, "batch", "B" * 33), GOOD[3])),
        tok,
    )
    assert "33 characters" in long["message"]
    unknown = post(node, "/identityv2/data", item(f"{P}/E-6", template="9.9"), tok)
    assert "template 9.9 does not exist" in unknown["message"]
    wrong_type = post(node, "/identityv2/data", item(f"{P}/E-7", (*GOOD, Value(2003, "colour", "red"))), tok)
    assert "2003 type 'colour' is not an item" in wrong_type["message"]
    detail = post(node, f"/identityv2/data/detail?handle={P}/E-1", None, tok, "GET")
    assert (
        detail["data"]["templateVersion"] == "1.0" and detail["data"]["value"][0]["data"]["value"] == "SN-1"
    )


def test_batches_are_limited_to_2000_and_answer_per_item(node: str) -> None:
    tok = login(node)
    too_many = post(node, "/identityv2/data/batchCreate", [item(f"{P}/M-{i}") for i in range(2001)], tok)
    assert too_many["status"] == -2 and "2000" in too_many["message"]
    answer = post(
        node, "/identityv2/data/batchCreate", [item(f"{P}/M-1"), item(f"{P}/M-1"), item(f"{P}/M 2")], tok
    )
    msgs = [a["msg"] for a in answer["data"]]
    assert msgs[0] == "success" and "already exists" in msgs[1] and "invalid handle" in msgs[2]


def test_clients_relogin_on_expiry_and_map_outcomes(node: str) -> None:
    async def run() -> None:
        c = SnmsClient(node, P, "ops", "pw", timeout=5)
        await c.register(Registration(f"{P}/C-1", "1.0", GOOD))
        httpx.post(node + "/admin/expire-tokens")
        await c.register(Registration(f"{P}/C-2", "1.0", GOOD))  # logs in again by itself
        assert c.logins == 2
        with pytest.raises(Exists):
            await c.register(Registration(f"{P}/C-1", "1.0", GOOD))
        with pytest.raises(NotFound):
            await c.resolve(f"{P}/C-404")
        with pytest.raises(Rejected, match="requires item"):
            await c.register(Registration(f"{P}/C-3", "1.0", GOOD[:1]))
        results = await c.register_batch(
            [Registration(f"{P}/C-1", "1.0", GOOD), Registration(f"{P}/C-4", "1.0", GOOD)]
        )
        assert isinstance(results[0], Exists) and results[1] is None
        await c.create_template(
            Template(P, "2.0", "pallet", (TemplateItem("sn", "serial_number", 2000, True, 1, 8),))
        )
        assert (await c.template("2.0")).items[0].max_length == 8
        httpx.put(node + "/admin/faults", json={"timeout_rate": 1.0})
        with pytest.raises(Transient) as t:
            await c.register(Registration(f"{P}/C-5", "1.0", GOOD))
        assert t.value.maybe_done  # a 504: it may have registered
        httpx.put(node + "/admin/faults", json={})
        # it had; like a real node, the snms record also carries the template version at 1001
        assert (await c.resolve(f"{P}/C-5")).values == (*GOOD, Value(1001, "TEMPLATE", "1.0"))
        await c.close()

        h = HandleClient(node, P, "ops", "pw", timeout=5)
        assert (await h.resolve(f"{P}/C-1")).values == GOOD  # one store behind both APIs
        await h.register(Registration(f"{P}/H-1", None, GOOD[:1]))
        with pytest.raises(Exists):
            await h.register(Registration(f"{P}/H-1", None, GOOD[:1]))
        await h.update(Registration(f"{P}/H-1", None, GOOD[:2]))
        assert len((await h.resolve(f"{P}/H-1")).values) == 2
        await h.delete(f"{P}/H-1")
        with pytest.raises(NotFound):
            await h.resolve(f"{P}/H-1")
        with pytest.raises(Rejected, match="authentication"):
            await HandleClient(node, P, "ops", "wrong").register(Registration(f"{P}/H-2", None, GOOD))
        await h.close()

    asyncio.run(run())
    stats = httpx.get(node + "/admin/stats").json()[P]
    assert stats["registrations"] >= 4 and stats["resolutions"] >= 3


def test_handle_api_response_codes(node: str) -> None:
    r = httpx.get(f"{node}/api/handles/{P}/NOPE")
    assert r.status_code == 404 and r.json()["responseCode"] == 100
    r = httpx.put(f"{node}/api/handles/{P}/Z-1", json={"values": [GOOD[0].to_api()]})
    assert r.status_code == 401 and r.json()["responseCode"] == 402
    r = httpx.put(f"{node}/api/handles/{P}/Z 1", json={"values": [GOOD[0].to_api()]}, auth=("ops", "pw"))
    assert r.json()["responseCode"] == 102


def test_templates_file_seeds_the_node(node: str) -> None:
    tok = login(node)
    t = post(node, f"/snms/api/v5/template?prefix={P}&version=1.0", None, tok, "GET")["data"]
    assert [i["idIndex"] for i in t["items"]] == [2000, 2001, 2002, 2003, 2004, 2005]
    assert (ROOT / "configs" / "identifier" / "templates.yaml").exists()
