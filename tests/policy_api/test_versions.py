"""Policy versions over the API: drafts, publish, the active pointer, rollback, diff."""

from __future__ import annotations

from typing import Any

import httpx

from tests.factories.auth import create_key
from tests.factories.policies import (
    create_policy,
    policy_document,
    policy_yaml,
    publish_policy,
    published_policy,
)
from tests.policy_api.helpers import audit_records, pointer


async def test_create_draft_from_json(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    created = await create_policy(client, admin)
    assert created["version"] == 1
    assert created["status"] == "draft"
    assert len(created["digest"]) == 64
    assert created["media_type"] == "application/json"
    assert created["active"] is False and created["published_at"] is None
    got = await client.get("/v1/policies/1", headers=admin)
    assert got.status_code == 200
    # The stored document is the canonical form: defaults filled, 72h written as 3d.
    document = got.json()["document"]
    assert document["plans"]["team"]["seats"]["burst"]["window"] == "3d"
    assert document["features"]["reports"]["on_outage"] == "deny"


async def test_create_draft_from_yaml(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    for number, media_type in enumerate(
        ["application/yaml", "application/x-yaml", "text/yaml; charset=utf-8"], start=1
    ):
        response = await client.post(
            "/v1/policies",
            content=policy_yaml(policy_document(variant=str(number))),
            headers={**admin, "Content-Type": media_type},
        )
        assert response.status_code == 201, response.text
        assert response.json()["version"] == number
        assert response.json()["media_type"] == media_type.split(";")[0]


async def test_same_content_twice_returns_the_existing_draft(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    first = await create_policy(client, admin)
    again = await create_policy(client, admin, expect=200)
    assert again["version"] == first["version"] and again["digest"] == first["digest"]
    # The YAML spelling of the same document is the same content too.
    as_yaml = await client.post(
        "/v1/policies",
        content=policy_yaml(),
        headers={**admin, "Content-Type": "application/yaml"},
    )
    assert as_yaml.status_code == 200
    assert as_yaml.json()["version"] == first["version"]
    listed = (await client.get("/v1/policies", headers=admin)).json()
    assert [v["version"] for v in listed["items"]] == [1]


async def test_invalid_document_is_422_with_every_error_path(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    document = policy_document()
    document["plans"]["team"]["seats"]["limt"] = 10
    document["plans"]["team"]["features"].append("reprots")
    document["plans"]["team"]["price"]["base"] = "1.234"
    document["plans"]["enterprise"]["extends"] = "teams"
    response = await client.post("/v1/policies", json=document, headers=admin)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    paths = {error["path"] for error in problem["errors"]}
    assert {
        "plans.team.seats.limt",
        "plans.team.features[3]",
        "plans.team.price.base",
        "plans.enterprise.extends",
    } <= paths
    assert all(error["message"] for error in problem["errors"])
    assert (await client.get("/v1/policies", headers=admin)).json()["items"] == []


async def test_unparseable_and_unsupported_bodies(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    broken = await client.post(
        "/v1/policies",
        content="currency: USD\nfeatures: [unclosed\n",
        headers={**admin, "Content-Type": "application/yaml"},
    )
    assert broken.status_code == 422
    assert [e["path"] for e in broken.json()["errors"]] == ["$"]
    assert "invalid YAML" in broken.json()["errors"][0]["message"]
    not_json = await client.post(
        "/v1/policies", content="{", headers={**admin, "Content-Type": "application/json"}
    )
    assert not_json.status_code == 422
    form = await client.post(
        "/v1/policies", content="a=b", headers={**admin, "Content-Type": "text/plain"}
    )
    assert form.status_code == 415
    assert "application/yaml" in form.json()["detail"]  # policies take YAML too: say so
    bare = await client.post("/v1/policies", content=b'{"currency": "USD"}', headers=admin)
    assert bare.status_code == 415 and "'none'" in bare.json()["detail"]


async def test_active_is_404_before_any_publish(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    await create_policy(client, admin)
    response = await client.get("/v1/policies/active", headers=admin)
    assert response.status_code == 404
    assert response.json()["type"].endswith("/no-active-policy")
    assert "publish" in response.json()["detail"].lower()


async def test_publish_makes_the_version_active(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    created = await create_policy(client, admin)
    published = await publish_policy(client, admin, created["version"])
    assert published["status"] == "published" and published["active"] is True
    assert published["published_at"] is not None
    assert published["published_by"].startswith("api_key:")
    active = (await client.get("/v1/policies/active", headers=admin)).json()
    assert active["version"] == created["version"] and active["active"] is True
    assert active["document"]["currency"] == "USD"
    assert (await pointer(app)).active_version == created["version"]


async def test_publish_unknown_version_is_404(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    response = await client.post("/v1/policies/9/publish", headers=admin)
    assert response.status_code == 404
    assert response.json()["type"].endswith("/policy-not-found")


async def test_republishing_a_published_version_makes_it_active_again(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    first = await published_policy(client, admin, variant="a")
    second = await published_policy(client, admin, variant="b")
    again = await publish_policy(client, admin, first["version"])
    assert again["active"] is True
    # Publishing again does not touch the frozen row.
    assert again["published_at"] == first["published_at"]
    state = await pointer(app)
    assert state.active_version == first["version"] != second["version"]
    assert state.global_version == 3


async def test_publish_and_rollback_bump_the_global_version(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    assert (await pointer(app)).global_version == 0
    one = await published_policy(client, admin, variant="1")
    assert (await pointer(app)).global_version == 1
    await published_policy(client, admin, variant="2")
    assert (await pointer(app)).global_version == 2
    await create_policy(client, admin, variant="3")  # a draft moves nothing
    assert (await pointer(app)).global_version == 2
    rolled = await client.post(
        "/v1/policies/rollback", json={"to_version": one["version"]}, headers=admin
    )
    assert rolled.status_code == 200, rolled.text
    assert rolled.json()["version"] == one["version"] and rolled.json()["active"] is True
    state = await pointer(app)
    assert state.active_version == one["version"] and state.global_version == 3


async def test_rollback_only_to_another_published_version(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    one = await published_policy(client, admin, variant="1")
    two = await published_policy(client, admin, variant="2")
    draft = await create_policy(client, admin, variant="3")

    async def rollback(to: Any) -> httpx.Response:
        return await client.post("/v1/policies/rollback", json={"to_version": to}, headers=admin)

    to_draft = await rollback(draft["version"])
    assert to_draft.status_code == 409
    assert to_draft.json()["type"].endswith("/policy-not-published")
    to_active = await rollback(two["version"])
    assert to_active.status_code == 409
    assert to_active.json()["type"].endswith("/policy-already-active")
    assert (await rollback(99)).status_code == 404
    assert (await rollback("one")).status_code == 422
    assert (await rollback(one["version"])).status_code == 200
    active = (await client.get("/v1/policies/active", headers=admin)).json()
    assert active["version"] == one["version"]
    # Forward again to the later published version is allowed: it is not the active one.
    assert (await rollback(two["version"])).status_code == 200


async def test_diff_lists_added_removed_and_changed_paths(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    old = await published_policy(client, admin)
    document = policy_document()
    document["plans"]["team"]["price"]["base"] = "600.00"
    del document["addons"]["audit_pack"]
    document["features"]["exports"] = {}
    new = await create_policy(client, admin, document=document)

    response = await client.get(
        f"/v1/policies/{new['version']}/diff", params={"against": old["version"]}, headers=admin
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["version"] == new["version"] and body["against"] == old["version"]
    assert {"path": "plans.team.price.base", "old": "500.00", "new": "600.00"} in body["changed"]
    assert [r["path"] for r in body["removed"]] == ["addons.audit_pack"]
    assert body["removed"][0]["value"]["price"] == "100.00"
    assert [a["path"] for a in body["added"]] == ["features.exports"]
    # Without `against`, the draft is compared with the active version.
    default = await client.get(f"/v1/policies/{new['version']}/diff", headers=admin)
    assert default.json() == body
    reverse = (
        await client.get(
            f"/v1/policies/{old['version']}/diff",
            params={"against": new["version"]},
            headers=admin,
        )
    ).json()
    assert [a["path"] for a in reverse["added"]] == ["addons.audit_pack"]
    same = (
        await client.get(
            f"/v1/policies/{old['version']}/diff?against={old['version']}", headers=admin
        )
    ).json()
    assert same["added"] == same["removed"] == same["changed"] == []
    missing = await client.get(f"/v1/policies/{old['version']}/diff?against=42", headers=admin)
    assert missing.status_code == 404


async def test_audit_records_for_create_publish_and_rollback(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    one = await create_policy(client, admin, variant="1")
    await create_policy(client, admin, variant="1", expect=200)  # a duplicate writes nothing
    await publish_policy(client, admin, one["version"])
    two = await published_policy(client, admin, variant="2")
    await client.post("/v1/policies/rollback", json={"to_version": 1}, headers=admin)

    records = await audit_records(app)
    assert [(r.action, r.target_key) for r in records] == [
        ("policy.created", "1"),
        ("policy.published", "1"),
        ("policy.created", "2"),
        ("policy.published", "2"),
        ("policy.rolled_back", "1"),
    ]
    assert all(r.actor.startswith("api_key:") for r in records)
    assert records[0].after == {"version": 1, "status": "draft", "digest": one["digest"]}
    assert records[1].before == {"active_version": None, "global_version": 0}
    assert records[3].after == {
        "active_version": 2,
        "global_version": 2,
        "digest": two["digest"],
    }
    assert records[4].before == {"active_version": 2, "global_version": 2}
    assert records[4].after["active_version"] == 1 and records[4].after["global_version"] == 3
    verified = (await client.get("/v1/audit/verify", headers=admin)).json()
    assert verified["ok"] is True


async def test_list_is_paginated_newest_first(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    for n in range(5):
        await create_policy(client, admin, variant=str(n))
    await publish_policy(client, admin, 2)
    seen: list[int] = []
    actives: list[int] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/v1/policies", params=params, headers=admin)).json()
        seen += [v["version"] for v in page["items"]]
        actives += [v["version"] for v in page["items"] if v["active"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [5, 4, 3, 2, 1] and actives == [2]


async def test_schema_is_published(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    response = await client.get("/v1/policies/schema", headers=admin)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/schema+json")
    schema = response.json()
    assert schema["title"] == "Allotment policy"
    assert schema["required"] == ["currency"]
    assert {"features", "meters", "plans", "addons", "rules"} <= set(schema["properties"])


async def test_readers_read_and_only_admins_write(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    await published_policy(client, admin)
    for scope in ("finance", "check"):
        reader = await create_key(app, scopes=[scope])
        for path in (
            "/v1/policies",
            "/v1/policies/1",
            "/v1/policies/active",
            "/v1/policies/schema",
        ):
            assert (await client.get(path, headers=reader)).status_code == 200, (scope, path)
        denied = await client.post("/v1/policies", json=policy_document(), headers=reader)
        assert denied.status_code == 403
        assert (await client.post("/v1/policies/1/publish", headers=reader)).status_code == 403
    customer = await create_key(app, scopes=["customer:acme"])
    assert (await client.get("/v1/policies/active", headers=customer)).status_code == 403


async def test_publish_with_idempotency_key_replays_without_bumping_again(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    created = await create_policy(client, admin)
    headers = {**admin, "Idempotency-Key": "publish-1"}
    first = await client.post(f"/v1/policies/{created['version']}/publish", headers=headers)
    again = await client.post(f"/v1/policies/{created['version']}/publish", headers=headers)
    assert first.status_code == again.status_code == 200
    assert again.headers.get("idempotent-replayed") == "true"
    assert again.json() == first.json()
    assert (await pointer(app)).global_version == 1


async def test_create_policy_is_documented_in_openapi(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    body = spec["paths"]["/v1/policies"]["post"]["requestBody"]
    assert {"application/json", "application/yaml"} <= set(body["content"])
    assert "/v1/policies/rollback" in spec["paths"]
