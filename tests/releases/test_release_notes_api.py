"""Release notes through the API, on real publishes and rollbacks: the changes in words, the
impact checked against the dry-run endpoint's own answer, a pinned customer, the contracts a
forced publish leaves behind, markdown, the changelog, and sign-off with two admin keys."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.factories.auth import create_key
from tests.factories.contracts import create_contract
from tests.factories.customers import create_customer
from tests.factories.policies_for_contracts import demo_document, publish_policy
from tests.factories.seats import assign


async def _draft(client: httpx.AsyncClient, admin: dict[str, str], document: dict) -> int:
    created = await client.post("/v1/policies", json=document, headers=admin)
    assert created.status_code == 201, created.text
    return int(created.json()["version"])


async def _notes(client: httpx.AsyncClient, headers: dict[str, str], version: int) -> Any:
    response = await client.get(f"/v1/policies/{version}/release-notes", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture
async def world(client: httpx.AsyncClient, admin: dict[str, str]) -> dict[str, Any]:
    """Version 1 (the demo) active; acme on team, globex on starter, initech on team pinned to
    version 1; version 2 drafted: audit_log added to team, api_calls 100,000 → 50,000 on team,
    team's base price 500.00 → 650.00."""
    v1 = await publish_policy(client, admin, demo_document())
    contracts = {}
    for key, plan, pin in (
        ("acme", "team", None),
        ("globex", "starter", None),
        ("initech", "team", v1),
    ):
        await create_customer(client, admin, key=key)
        extra = {"policy_version": pin} if pin else {}
        contracts[key] = (await create_contract(client, admin, customer=key, plan=plan, **extra))[
            "id"
        ]
    document = demo_document()
    team = document["plans"]["team"]
    team["features"].append("audit_log")
    team["limits"]["api_calls"]["limit"] = 50_000
    team["price"]["base"] = "650.00"
    return {"v1": v1, "v2": await _draft(client, admin, document), "contracts": contracts}


async def test_publish_stores_the_diff_in_words_and_the_dry_runs_impact(
    client: httpx.AsyncClient, admin: dict[str, str], finance: dict[str, str], world: dict
) -> None:
    v1, v2 = world["v1"], world["v2"]
    dry = await client.post(f"/v1/policies/{v2}/dry-run", headers=admin)
    assert dry.status_code == 200, dry.text
    report = dry.json()

    published = await client.post(
        f"/v1/policies/{v2}/publish", json={"summary": "Audit log for team."}, headers=admin
    )
    assert published.status_code == 200, published.text

    notes = await _notes(client, finance, v2)
    assert (notes["version"], notes["action"], notes["previous_version"]) == (v2, "publish", v1)
    assert notes["summary"] == "Audit log for team." and notes["approved_by"] is None
    texts = [c["text"] for c in notes["changes"]]
    # enterprise lists +audit_log itself, so it does not inherit the addition.
    assert "audit_log added to team (inherited by floating)" in texts
    assert "api_calls limit 100,000 → 50,000 on team (inherited by floating)" in texts
    assert "base price 500.00 → 650.00 on team (inherited by floating)" in texts
    assert len(texts) == 3

    impact = notes["impact"]
    # The notes carry the dry-run's own answer, computed in the publish's transaction.
    assert (
        impact["summary"]
        == report["summary"]
        == {
            "customers_evaluated": 2,
            "customers_affected": 1,
            "customers_pinned": 1,
            "contracts_orphaned": 0,
        }
    )
    assert impact["customers"] == report["customers"]
    assert impact["pinned"] == report["pinned"] == ["initech"]  # pinned: untouched
    assert impact["features"] == [{"feature": "audit_log", "gained_by": ["acme"], "lost_by": []}]
    assert impact["limits"] == [
        {
            "customer": "acme",
            "contract": world["contracts"]["acme"],
            "path": "meters.api_calls.limit",
            "old": 100_000,
            "new": 50_000,
        }
    ]
    (acme,) = report["customers"]
    assert acme["estimated_invoice_change"] not in (None, "0.00")
    assert impact["invoices"] == [
        {
            "customer": "acme",
            "contract": world["contracts"]["acme"],
            "estimated_invoice_change": acme["estimated_invoice_change"],
        }
    ]
    assert notes["orphaned"] == [] and impact["complete"] is True

    markdown = await client.get(
        f"/v1/policies/{v2}/release-notes", headers={**finance, "Accept": "text/markdown"}
    )
    assert markdown.status_code == 200
    assert markdown.headers["content-type"].startswith("text/markdown")
    text = markdown.text
    assert text.startswith(f"# Policy version {v2}: published (after version {v1})\n")
    assert "> Audit log for team." in text
    assert "- audit_log added to team (inherited by floating)" in text
    assert "- audit_log: gained by acme" in text
    assert f"- acme ({world['contracts']['acme']}): +{acme['estimated_invoice_change']}" in text
    assert "### Pinned customers (untouched)\n\n- initech" in text


async def test_rollback_notes_and_the_changelog_newest_first_in_pages(
    client: httpx.AsyncClient, admin: dict[str, str], world: dict
) -> None:
    v1, v2 = world["v1"], world["v2"]
    assert (await client.post(f"/v1/policies/{v2}/publish", headers=admin)).status_code == 200
    rolled = await client.post(
        "/v1/policies/rollback", json={"to_version": v1, "summary": "Back out."}, headers=admin
    )
    assert rolled.status_code == 200, rolled.text

    notes = await _notes(client, admin, v1)  # the latest move to version 1: the rollback
    assert (notes["action"], notes["previous_version"], notes["summary"]) == (
        "rollback",
        v2,
        "Back out.",
    )
    texts = [c["text"] for c in notes["changes"]]
    assert "audit_log removed from team (inherited by floating)" in texts
    assert "api_calls limit 50,000 → 100,000 on team (inherited by floating)" in texts
    assert notes["impact"]["features"] == [
        {"feature": "audit_log", "gained_by": [], "lost_by": ["acme"]}
    ]
    markdown = await client.get(
        f"/v1/policies/{v1}/release-notes", headers={**admin, "Accept": "text/markdown"}
    )
    assert markdown.text.startswith(f"# Policy version {v1}: rolled back from version {v2}\n")

    first = await client.get("/v1/changelog", params={"limit": 2}, headers=admin)
    assert first.status_code == 200, first.text
    page = first.json()
    assert [(e["version"], e["action"]) for e in page["items"]] == [
        (v1, "rollback"),
        (v2, "publish"),
    ]
    assert page["items"][0]["impact"]["customers_affected"] == 1
    assert "audit_log added to team (inherited by floating)" in page["items"][1]["changes"]
    rest = await client.get(
        "/v1/changelog", params={"limit": 2, "cursor": page["next_cursor"]}, headers=admin
    )
    (oldest,) = rest.json()["items"]
    assert (oldest["version"], oldest["action"], oldest["previous_version"]) == (
        v1,
        "publish",
        None,
    )
    assert rest.json()["next_cursor"] is None


async def test_notes_name_the_contracts_a_forced_publish_leaves_behind(
    client: httpx.AsyncClient, admin: dict[str, str], backend: dict[str, str], world: dict
) -> None:
    for subject in ("u1", "u2", "u3"):
        assert (await assign(client, backend, subject)).status_code in (200, 201)
    await create_customer(client, admin, key="hooli")
    hooli = await create_contract(client, admin, customer="hooli", plan="team")
    tenant = await client.post(
        "/v1/customers/hooli/tenants",
        json={"key": "eu", "quotas": {"meters": {"api_calls": 80_000}}},
        headers=admin,
    )
    assert tenant.status_code == 201, tenant.text
    await create_customer(client, admin, key="umbrella")
    umbrella = await create_contract(
        client, admin, customer="umbrella", plan="team", addons=["audit_pack"]
    )
    document = demo_document()
    del document["plans"]["starter"]  # globex's plan
    del document["addons"]["audit_pack"]  # umbrella's add-on
    team = document["plans"]["team"]
    team["seats"]["limit"] = 2  # acme holds 3
    team["limits"]["api_calls"]["limit"] = 50_000  # hooli's tenant has a quota of 80,000
    version = await _draft(client, admin, document)
    refused = await client.post(f"/v1/policies/{version}/publish", headers=admin)
    assert refused.status_code == 409
    forced = await client.post(f"/v1/policies/{version}/publish?force=true", headers=admin)
    assert forced.status_code == 200, forced.text

    notes = await _notes(client, admin, version)
    orphaned = {o["contract"]: [p["path"] for p in o["problems"]] for o in notes["orphaned"]}
    contracts = world["contracts"]
    assert orphaned == {
        contracts["acme"]: ["seats.limit"],
        contracts["globex"]: ["plan"],
        hooli["id"]: ["tenants.quotas.meters.api_calls"],
        umbrella["id"]: ["addons[0]"],
    }
    assert notes["impact"]["summary"]["contracts_orphaned"] == 4
    texts = [c["text"] for c in notes["changes"]]
    assert "plan starter removed" in texts and "add-on audit_pack removed" in texts
    markdown = (
        await client.get(
            f"/v1/policies/{version}/release-notes", headers={**admin, "Accept": "text/markdown"}
        )
    ).text
    assert "## Contracts left behind" in markdown
    assert f"- {contracts['globex']} (globex): `plan`:" in markdown
    assert f"- {umbrella['id']} (umbrella): `addons[0]`:" in markdown
    # globex's plan is gone: its invoice change is listed (its fees stop at the move), and
    # said to be unpriced after it, never left out as "no invoice impact".
    (globex,) = [i for i in notes["impact"]["invoices"] if i["customer"] == "globex"]
    assert Decimal(globex["estimated_invoice_change"]) < 0
    assert globex["not_priced_after_the_move"] is True
    assert f"- globex ({contracts['globex']}): -" in markdown
    assert "(its plan is not in this version: not priced after the move)" in markdown


async def test_a_version_never_published_has_no_notes(
    client: httpx.AsyncClient, admin: dict[str, str], world: dict
) -> None:
    missing = await client.get(f"/v1/policies/{world['v2']}/release-notes", headers=admin)
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    assert missing.json()["type"].endswith("/release-notes-not-found")
    unknown = await client.get("/v1/policies/999/release-notes", headers=admin)
    assert unknown.status_code == 404 and unknown.json()["type"].endswith("/policy-not-found")


async def test_a_summary_too_long_is_refused_with_its_path(
    client: httpx.AsyncClient, admin: dict[str, str], world: dict
) -> None:
    response = await client.post(
        f"/v1/policies/{world['v2']}/publish", json={"summary": "x" * 10_001}, headers=admin
    )
    assert response.status_code == 422
    assert [e["path"] for e in response.json()["errors"]] == ["summary"]
    nul = await client.post(
        f"/v1/policies/{world['v2']}/publish", json={"summary": "a\u0000b"}, headers=admin
    )
    assert nul.status_code == 422, nul.text
    assert (await client.get("/v1/policies/active", headers=admin)).json()["version"] == world["v1"]


@pytest.fixture
def require_approval(app: Any) -> Iterator[None]:
    """The session's app with ALLOTMENT_POLICY_REQUIRE_APPROVAL=true, for one test."""
    settings = app.state.settings
    app.state.settings = settings.model_copy(update={"policy_require_approval": True})
    try:
        yield
    finally:
        app.state.settings = settings


async def _actor(client: httpx.AsyncClient, headers: dict[str, str], version: int) -> str:
    """Approve `version` with `headers`; returns the approving key's actor."""
    approved = await client.post(
        f"/v1/policies/{version}/approvals", json={"comment": "looks right"}, headers=headers
    )
    assert approved.status_code == 201, approved.text
    return str(approved.json()["approved_by"])


async def test_sign_off_needs_a_second_admin_key_and_both_are_audited(
    app: Any,
    client: httpx.AsyncClient,
    admin: dict[str, str],
    world: dict,
    require_approval: None,
) -> None:
    second = await create_key(app, scopes=["admin"], name="second")
    v2 = world["v2"]

    missing = await client.post(f"/v1/policies/{v2}/publish", headers=admin)
    assert missing.status_code == 409, missing.text
    assert missing.json()["type"].endswith("/approval-required")

    publisher = await _actor(client, admin, v2)  # the publishing key approves its own publish
    self_approved = await client.post(f"/v1/policies/{v2}/publish", headers=admin)
    assert self_approved.status_code == 403, self_approved.text
    assert self_approved.headers["content-type"] == "application/problem+json"
    assert self_approved.json()["type"].endswith("/self-approval")
    assert (await client.get("/v1/policies/active", headers=admin)).json()["version"] == world["v1"]

    approver = await _actor(client, second, v2)
    assert approver != publisher
    published = await client.post(
        f"/v1/policies/{v2}/publish", json={"summary": "Signed off."}, headers=admin
    )
    assert published.status_code == 200, published.text

    notes = await _notes(client, admin, v2)
    assert (notes["actor"], notes["approved_by"]) == (publisher, approver)
    approvals = (await client.get(f"/v1/policies/{v2}/approvals", headers=admin)).json()
    assert [(a["approved_by"], a["used_by"]) for a in approvals] == [
        (publisher, None),
        (approver, publisher),
    ]
    audit = (await client.get("/v1/audit", params={"target": f"policy:{v2}"}, headers=admin)).json()
    actions = [(r["action"], r["actor"]) for r in audit["items"]]
    assert ("policy.approved", publisher) in actions and ("policy.approved", approver) in actions
    (published_record,) = [r for r in audit["items"] if r["action"] == "policy.published"]
    assert published_record["actor"] == publisher
    assert published_record["after"]["approved_by"] == approver
    # Each approval serves one publish: re-activating v2 later needs a fresh one (the only
    # unused approval is the publisher's own).
    back = await client.post(
        "/v1/policies/rollback", json={"to_version": world["v1"]}, headers=admin
    )
    assert back.status_code == 200, back.text
    again = await client.post(f"/v1/policies/{v2}/publish", headers=admin)
    assert again.status_code == 403
    assert (await client.get("/v1/audit/verify", headers=admin)).json()["ok"] is True


async def test_a_key_approves_a_version_once_per_publish_and_a_revoked_key_counts_for_nothing(
    app: Any,
    client: httpx.AsyncClient,
    admin: dict[str, str],
    world: dict,
    require_approval: None,
) -> None:
    v1, v2 = world["v1"], world["v2"]
    second = await create_key(app, scopes=["admin"], name="second")
    third = await create_key(app, scopes=["admin"], name="third")
    approver = await _actor(client, second, v2)
    # A second approval by the same key, while its first is unused, is refused: no stock of
    # approvals for later re-activations.
    twice = await client.post(f"/v1/policies/{v2}/approvals", json={}, headers=second)
    assert twice.status_code == 409, twice.text
    assert twice.headers["content-type"] == "application/problem+json"
    assert twice.json()["type"].endswith("/already-approved")
    published = await client.post(f"/v1/policies/{v2}/publish", headers=admin)
    assert published.status_code == 200, published.text
    assert (await _notes(client, admin, v2))["approved_by"] == approver
    back = await client.post("/v1/policies/rollback", json={"to_version": v1}, headers=admin)
    assert back.status_code == 200, back.text
    # Re-activating needs a new review: nothing was stocked.
    stocked = await client.post(f"/v1/policies/{v2}/publish", headers=admin)
    assert stocked.status_code == 409, stocked.text
    assert stocked.json()["type"].endswith("/approval-required")

    # An approval by a key revoked since no longer counts.
    revoked = await _actor(client, third, v2)
    key_id = revoked.removeprefix("api_key:")
    assert (await client.delete(f"/v1/api-keys/{key_id}", headers=admin)).status_code == 204
    refused = await client.post(f"/v1/policies/{v2}/publish", headers=admin)
    assert refused.status_code == 409, refused.text
    assert refused.json()["type"].endswith("/approval-required")
    assert "revoked" in refused.json()["detail"]
    # The used approval's key may approve again for this new publish.
    again = await _actor(client, second, v2)
    assert again == approver
    published = await client.post(f"/v1/policies/{v2}/publish", headers=admin)
    assert published.status_code == 200, published.text
    assert (await _notes(client, admin, v2))["approved_by"] == approver
    listed = (await client.get(f"/v1/policies/{v2}/approvals", headers=admin)).json()
    assert [(a["approved_by"], a["used_by"] is not None) for a in listed] == [
        (approver, True),
        (revoked, False),
        (approver, True),
    ]


async def test_publishing_the_active_version_is_refused_and_uses_no_approval_or_notes(
    app: Any,
    client: httpx.AsyncClient,
    admin: dict[str, str],
    world: dict,
    require_approval: None,
) -> None:
    v2 = world["v2"]
    second = await create_key(app, scopes=["admin"], name="second")
    await _actor(client, second, v2)
    assert (await client.post(f"/v1/policies/{v2}/publish", headers=admin)).status_code == 200
    notes = await _notes(client, admin, v2)
    await _actor(client, second, v2)  # a fresh approval, unused

    active = await client.post(f"/v1/policies/{v2}/publish", json={"summary": "x"}, headers=admin)
    assert active.status_code == 409, active.text
    assert active.headers["content-type"] == "application/problem+json"
    assert active.json()["type"].endswith("/policy-already-active")
    assert await _notes(client, admin, v2) == notes
    changelog = (await client.get("/v1/changelog", headers=admin)).json()["items"]
    assert [(e["version"], e["action"]) for e in changelog] == [
        (v2, "publish"),
        (world["v1"], "publish"),
    ]
    approvals = (await client.get(f"/v1/policies/{v2}/approvals", headers=admin)).json()
    assert [a["used_by"] is None for a in approvals] == [False, True]


async def test_approving_an_unknown_version_is_a_404(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    response = await client.post("/v1/policies/42/approvals", headers=admin)
    assert response.status_code == 404
    assert response.json()["type"].endswith("/policy-not-found")


async def test_the_cli_cannot_publish_when_sign_off_is_required(
    stores: Any, client: httpx.AsyncClient, admin: dict[str, str], tmp_path: Path
) -> None:
    """`allotment policy publish FILE` posts and publishes in one step, so nothing can
    approve it: with the setting on it is refused and stores nothing."""
    document = tmp_path / "policy.json"
    document.write_text(json.dumps(demo_document()))
    result = await asyncio.to_thread(
        subprocess.run,
        [str(Path(sys.executable).parent / "allotment"), "policy", "publish", str(document)],
        env={**stores.env(), "ALLOTMENT_POLICY_REQUIRE_APPROVAL": "true"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stdout
    assert "needs an approval from a second admin key" in result.stderr
    listed = await client.get("/v1/policies", headers=admin)
    assert listed.json()["items"] == []
