"""POST /v1/policies/{version}/dry-run: what publishing a version would change, per customer."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest

from allotment.db import session_scope
from allotment.impact.service import dry_run
from allotment.kit.clock import isoformat
from tests.factories.auth import create_key
from tests.factories.contracts import create_contract, days_from_now
from tests.factories.customers import create_customer
from tests.factories.policies_for_contracts import demo_document, publish_policy
from tests.factories.seats import assign


async def _draft(client: httpx.AsyncClient, admin: dict[str, str], document: dict) -> int:
    created = await client.post("/v1/policies", json=document, headers=admin)
    assert created.status_code == 201, created.text
    assert created.json()["status"] == "draft"
    return int(created.json()["version"])


async def _dry_run(
    client: httpx.AsyncClient, admin: dict[str, str], version: int, **params: Any
) -> dict[str, Any]:
    response = await client.post(f"/v1/policies/{version}/dry-run", params=params, headers=admin)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def _customers(
    client: httpx.AsyncClient, admin: dict[str, str], plans: dict[str, str], **contract: Any
) -> None:
    for key, plan in plans.items():
        await create_customer(client, admin, key=key)
        await create_contract(client, admin, customer=key, plan=plan, **contract)


def _by_customer(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["customer"]: entry for entry in report["customers"]}


@pytest.fixture
async def active(client: httpx.AsyncClient, admin: dict[str, str]) -> int:
    return await publish_policy(client, admin, demo_document())


async def test_feature_added_to_team_is_gained_by_team_customers_only(
    client: httpx.AsyncClient, admin: dict[str, str], active: int
) -> None:
    await _customers(client, admin, {"acme": "team", "globex": "starter", "initech": "enterprise"})
    document = demo_document()
    document["plans"]["team"]["features"].append("audit_log")
    version = await _draft(client, admin, document)

    report = await _dry_run(client, admin, version)

    assert report["version"] == version and report["active_version"] == active
    assert report["summary"] == {
        "customers_evaluated": 3,
        "customers_affected": 1,
        "customers_pinned": 0,
        "contracts_orphaned": 0,
    }
    (acme,) = report["customers"]
    assert acme["customer"] == "acme" and acme["plan"] == "team"
    assert acme["contract"].startswith("ctr_") and acme["contract_revision"] == 1
    assert acme["features_gained"] == ["audit_log"] and acme["features_lost"] == []
    assert acme["limits_changed"] == [] and acme["plan_missing"] is False
    assert acme["estimated_invoice_change"] == "0.00"  # a feature, no price, changed
    assert report["pinned"] == [] and report["next_cursor"] is None


async def test_a_dry_run_changes_nothing(
    client: httpx.AsyncClient, admin: dict[str, str], active: int
) -> None:
    await _customers(client, admin, {"acme": "team"})
    document = demo_document()
    document["plans"]["team"]["features"].append("audit_log")
    version = await _draft(client, admin, document)
    await _dry_run(client, admin, version)
    assert (await client.get("/v1/policies/active", headers=admin)).json()["version"] == active
    assert (await client.get(f"/v1/policies/{version}", headers=admin)).json()["status"] == "draft"
    check = await client.post(
        "/v1/check", json={"customer": "acme", "feature": "audit_log"}, headers=admin
    )
    assert check.json()["reason"] == "feature_not_in_plan"


async def test_removed_feature_is_lost_with_the_features_that_require_it(
    client: httpx.AsyncClient, admin: dict[str, str], active: int
) -> None:
    await _customers(client, admin, {"acme": "team", "globex": "starter", "initech": "enterprise"})
    document = demo_document()
    document["plans"]["team"]["features"].remove("api")
    document["plans"]["enterprise"]["features"].remove("+audit_log")
    version = await _draft(client, admin, document)

    customers = _by_customer(await _dry_run(client, admin, version))

    assert set(customers) == {"acme", "initech"}  # starter has no api to lose
    assert customers["acme"]["features_lost"] == ["api"]
    assert customers["acme"]["features_gained"] == []
    # sso requires audit_log, scim requires sso: the evaluator's dependency step decides.
    assert customers["initech"]["features_lost"] == ["api", "audit_log", "scim", "sso"]


async def test_an_addon_or_a_grant_keeps_a_feature_the_plan_drops(
    client: httpx.AsyncClient, admin: dict[str, str], active: int
) -> None:
    await create_customer(client, admin, key="acme")
    await create_contract(client, admin, customer="acme", plan="enterprise")
    await create_customer(client, admin, key="globex")
    await create_contract(
        client, admin, customer="globex", plan="enterprise", addons=["audit_pack"]
    )
    await create_customer(client, admin, key="initech")
    await create_contract(
        client,
        admin,
        customer="initech",
        plan="enterprise",
        overrides=[{"feature": "audit_log", "action": "grant", "reason": "deal"}],
    )
    document = demo_document()
    document["plans"]["enterprise"]["features"].remove("+audit_log")
    version = await _draft(client, admin, document)

    report = await _dry_run(client, admin, version)

    assert [c["customer"] for c in report["customers"]] == ["acme"]
    assert report["summary"]["customers_evaluated"] == 3


async def test_changed_seat_limit_shows_in_limits_changed(
    client: httpx.AsyncClient, admin: dict[str, str], active: int
) -> None:
    await _customers(client, admin, {"acme": "team"})
    await create_customer(client, admin, key="globex")
    await create_contract(client, admin, customer="globex", plan="team", seats={"limit": 25})
    document = demo_document()
    document["plans"]["team"]["seats"]["limit"] = 20
    document["plans"]["team"]["limits"]["exports"]["enforcement"] = "hard"
    version = await _draft(client, admin, document)

    customers = _by_customer(await _dry_run(client, admin, version))

    changes = {c["path"]: (c["old"], c["new"]) for c in customers["acme"]["limits_changed"]}
    assert changes == {
        "seats.limit": (10, 20),
        "meters.exports.enforcement": ("soft", "hard"),
    }
    assert customers["acme"]["features_gained"] == customers["acme"]["features_lost"] == []
    # globex's contract sets its own seat limit: only the meter's enforcement moves.
    assert [c["path"] for c in customers["globex"]["limits_changed"]] == [
        "meters.exports.enforcement"
    ]


async def test_pinned_contract_is_excluded_and_listed(
    client: httpx.AsyncClient, admin: dict[str, str], active: int
) -> None:
    await _customers(client, admin, {"acme": "team"})
    await create_customer(client, admin, key="globex")
    await create_contract(client, admin, customer="globex", plan="team", policy_version=active)
    document = demo_document()
    document["plans"]["team"]["features"].remove("reports")
    version = await _draft(client, admin, document)

    report = await _dry_run(client, admin, version)

    assert [c["customer"] for c in report["customers"]] == ["acme"]
    assert report["pinned"] == ["globex"]
    assert report["summary"] == {
        "customers_evaluated": 1,
        "customers_affected": 1,
        "customers_pinned": 1,
        "contracts_orphaned": 0,
    }


async def test_plan_missing_in_the_new_version_is_flagged(
    client: httpx.AsyncClient, admin: dict[str, str], active: int
) -> None:
    await _customers(client, admin, {"acme": "team", "globex": "starter"})
    document = demo_document()
    del document["plans"]["starter"]
    version = await _draft(client, admin, document)

    customers = _by_customer(await _dry_run(client, admin, version))

    assert set(customers) == {"globex"}
    globex = customers["globex"]
    assert globex["plan"] == "starter" and globex["plan_missing"] is True
    assert globex["features_lost"] == ["dashboards", "editor", "exports", "reports", "viewer"]
    changes = {c["path"]: (c["old"], c["new"]) for c in globex["limits_changed"]}
    assert changes["seats.limit"] == (3, None)
    assert changes["meters.exports.limit"] == (50, None)


async def test_dry_run_against_the_active_version_reports_no_change(
    client: httpx.AsyncClient, admin: dict[str, str], active: int
) -> None:
    await _customers(client, admin, {"acme": "team", "globex": "starter", "initech": "enterprise"})
    report = await _dry_run(client, admin, active)
    assert report["customers"] == [] and report["next_cursor"] is None
    assert report["summary"] == {
        "customers_evaluated": 3,
        "customers_affected": 0,
        "customers_pinned": 0,
        "contracts_orphaned": 0,
    }


async def test_only_contracts_in_force_now_are_evaluated(
    client: httpx.AsyncClient, admin: dict[str, str], active: int
) -> None:
    await _customers(client, admin, {"acme": "team"})
    await create_customer(client, admin, key="later")
    await create_contract(client, admin, customer="later", starts_at=days_from_now(5))
    await create_customer(client, admin, key="gone")
    await create_contract(
        client, admin, customer="gone", starts_at=days_from_now(-30), ends_at=days_from_now(-1)
    )
    await create_customer(client, admin, key="nocontract")
    document = demo_document()
    document["plans"]["team"]["features"].remove("reports")
    version = await _draft(client, admin, document)

    report = await _dry_run(client, admin, version)

    assert [c["customer"] for c in report["customers"]] == ["acme"]
    assert report["summary"]["customers_evaluated"] == 1


async def test_the_revision_in_force_decides_the_plan(
    client: httpx.AsyncClient, admin: dict[str, str], active: int
) -> None:
    await create_customer(client, admin, key="acme")
    contract = await create_contract(client, admin, customer="acme", plan="team")
    amended = await client.patch(
        f"/v1/contracts/{contract['id']}",
        json={"plan": "starter"},
        headers={**admin, "If-Match": str(contract["revision"])},
    )
    assert amended.status_code == 200, amended.text
    document = demo_document()
    document["plans"]["starter"]["features"].remove("reports")
    document["plans"]["team"]["features"].remove("dashboards")
    version = await _draft(client, admin, document)

    (acme,) = (await _dry_run(client, admin, version))["customers"]

    assert acme["plan"] == "starter" and acme["contract_revision"] == 2
    assert acme["features_lost"] == ["reports"]


async def test_rules_of_the_new_version_are_evaluated(
    client: httpx.AsyncClient, admin: dict[str, str], active: int
) -> None:
    await _customers(client, admin, {"acme": "enterprise"}, attributes={"region": "eu"})
    await _customers(client, admin, {"globex": "enterprise"}, attributes={"region": "us"})
    document = demo_document()
    document["rules"].append(
        {"feature": "scim", "when": "contract.attributes.region == 'us'", "reason": "us_only"}
    )
    version = await _draft(client, admin, document)

    report = await _dry_run(client, admin, version)

    assert [(c["customer"], c["features_lost"]) for c in report["customers"]] == [
        ("acme", ["scim"])
    ]


async def test_pages_of_affected_and_pinned_customers(
    client: httpx.AsyncClient, admin: dict[str, str], active: int
) -> None:
    await _customers(client, admin, {"a1": "team", "a2": "starter", "a3": "team", "a4": "team"})
    await create_customer(client, admin, key="p1")
    await create_contract(client, admin, customer="p1", plan="team", policy_version=active)
    document = demo_document()
    document["plans"]["team"]["features"].remove("reports")
    version = await _draft(client, admin, document)

    pages = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor is not None:
            params["cursor"] = cursor
        page = await _dry_run(client, admin, version, **params)
        assert page["summary"]["customers_affected"] == 3  # always the whole population
        pages.append(([c["customer"] for c in page["customers"]], page["pinned"]))
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == [(["a1", "a3"], []), (["a4"], ["p1"])]

    bad = await client.post(
        f"/v1/policies/{version}/dry-run", params={"cursor": "nonsense"}, headers=admin
    )
    assert bad.status_code == 400


async def test_batches_cover_every_customer(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str], active: int
) -> None:
    keys = [f"c{n}" for n in range(7)]
    await _customers(client, admin, dict.fromkeys(keys, "team"))
    document = demo_document()
    document["plans"]["team"]["features"].remove("reports")
    version = await _draft(client, admin, document)

    async with session_scope(app.state.sessionmaker) as session:
        report = await dry_run(session, version=version, batch_size=2, limit=3)

    assert report["summary"]["customers_evaluated"] == 7
    assert report["summary"]["customers_affected"] == 7
    assert [c["customer"] for c in report["customers"]] == ["c0", "c1", "c2"]
    assert report["next_cursor"] is not None


async def test_unknown_version_is_404(
    client: httpx.AsyncClient, admin: dict[str, str], active: int
) -> None:
    response = await client.post("/v1/policies/99/dry-run", headers=admin)
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")


async def test_nothing_published_is_409(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    version = await _draft(client, admin, demo_document())
    response = await client.post(f"/v1/policies/{version}/dry-run", headers=admin)
    assert response.status_code == 409
    assert response.json()["type"].endswith("/no-published-policy")


@pytest.mark.parametrize("scope", ["check", "finance", "customer:acme"])
async def test_non_admin_key_is_403(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str], active: int, scope: str
) -> None:
    headers = await create_key(app, scopes=[scope])
    response = await client.post(f"/v1/policies/{active}/dry-run", headers=headers)
    assert response.status_code == 403


async def test_a_price_change_affects_customers_and_estimates_their_invoice(
    client: httpx.AsyncClient, admin: dict[str, str], active: int
) -> None:
    await _customers(client, admin, {"acme": "team", "globex": "starter"})
    document = demo_document()
    document["plans"]["team"]["price"]["base"] = "800.00"  # from 500.00
    version = await _draft(client, admin, document)
    report = await _dry_run(client, admin, version)
    (acme,) = report["customers"]
    assert acme["customer"] == "acme" and acme["prices_changed"] is True
    assert acme["features_gained"] == [] and acme["limits_changed"] == []
    # 300.00 more a month, prorated over the day or so acme's contract has run this month.
    change = Decimal(acme["estimated_invoice_change"])
    assert Decimal("0") < change < Decimal("300.00")


async def _subtotal(client: httpx.AsyncClient, admin: dict[str, str], contract: str) -> Decimal:
    """The contract's preview of this month to date, taken now (to the microsecond: a preview
    left to default is taken at the second, which may come before a publish just made)."""
    now = datetime.now(UTC)
    params = {"period": now.strftime("%Y-%m"), "as_of": isoformat(now)}
    response = await client.get(
        f"/v1/contracts/{contract}/invoice-preview", params=params, headers=admin
    )
    assert response.status_code == 200, response.text
    return Decimal(response.json()["subtotal"])


async def _published_then_priced(
    client: httpx.AsyncClient, admin: dict[str, str], document: dict, contract: str
) -> tuple[Decimal, Decimal]:
    """(the dry-run's estimate for `contract`, its preview after publishing minus before)."""
    version = await _draft(client, admin, document)
    before = await _subtotal(client, admin, contract)
    (entry,) = (await _dry_run(client, admin, version))["customers"]
    published = await client.post(f"/v1/policies/{version}/publish?force=true", headers=admin)
    assert published.status_code == 200, published.text
    after = await _subtotal(client, admin, contract)
    return Decimal(entry["estimated_invoice_change"]), after - before


async def test_the_estimate_is_what_the_publish_does_to_a_month_already_split(
    client: httpx.AsyncClient, admin: dict[str, str], active: int
) -> None:
    """The month was split by an earlier publish (seat and base price up); the next version
    only cuts prices. The estimate is the preview after the publish minus before (the
    earlier split kept), so it is a decrease, to the cent."""
    await create_customer(client, admin, key="hooli")
    contract = await create_contract(
        client, admin, customer="hooli", plan="team", starts_at=days_from_now(-1)
    )
    for n in range(7):
        await assign(client, admin, f"user{n}@hooli.example", customer="hooli")
    raised = demo_document()
    raised["plans"]["team"]["price"]["base"] = "600.00"
    raised["plans"]["team"]["price"]["seat"]["unit"] = "25.00"
    await publish_policy(client, admin, raised)

    cut = copy.deepcopy(raised)
    cut["plans"]["team"]["price"]["base"] = "550.00"
    cut["plans"]["team"]["price"]["seat"]["unit"] = "22.50"
    estimate, actual = await _published_then_priced(client, admin, cut, contract["id"])
    assert estimate < 0
    assert estimate == actual


async def test_a_plan_the_version_drops_is_estimated_as_unpriced_after_the_move(
    client: httpx.AsyncClient, admin: dict[str, str], active: int
) -> None:
    await create_customer(client, admin, key="stark")
    contract = await create_contract(
        client, admin, customer="stark", plan="starter", starts_at=days_from_now(-1)
    )
    dropped = demo_document()
    del dropped["plans"]["starter"]
    estimate, actual = await _published_then_priced(client, admin, dropped, contract["id"])
    # The rest of the month's base fee is no longer priced: a decrease, never left out.
    assert estimate < 0
    assert estimate == actual
