"""releases/notes.py: a policy diff in words, for every kind of change a policy can have,
and the markdown rendering (pure, no database)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from allotment.policy import load
from allotment.policy.diff import diff
from allotment.policy.document import canonical_form
from allotment.releases.markdown import markdown
from allotment.releases.notes import changes, impact_of
from tests.factories.policies_for_contracts import demo_document


def canonical(document: dict[str, Any]) -> dict[str, Any]:
    """The form a stored version holds (defaults filled), as the service diffs it."""
    import json

    result = load(json.dumps(document), "application/json")
    assert result.document is not None, result.errors
    return canonical_form(result.document)


@pytest.fixture(scope="module")
def old() -> dict[str, Any]:
    return canonical(demo_document())


def texts(old: dict[str, Any], new_document: dict[str, Any]) -> list[str]:
    return [c["text"] for c in changes(old, canonical(new_document))]


def edited(**_: Any) -> dict[str, Any]:
    return copy.deepcopy(demo_document())


def test_a_feature_added_to_a_plan_names_the_plans_that_inherit_it(old: dict[str, Any]) -> None:
    new = edited()
    new["plans"]["team"]["features"].append("sso")
    new["plans"]["team"]["features"].append("audit_log")
    new["plans"]["team"]["features"].remove("exports")
    # enterprise lists +sso and +audit_log itself: it had them already, so it inherits nothing.
    assert texts(old, new) == [
        "audit_log added to team (inherited by floating)",
        "exports removed from team (inherited by enterprise, floating)",
        "sso added to team (inherited by floating)",
    ]
    # A plan that takes the feature away itself does not inherit its addition either.
    new["plans"]["floating"]["features"] = ["-sso"]
    assert "sso added to team" in texts(old, new)


def test_limits_seats_and_instances_in_words(old: dict[str, Any]) -> None:
    new = edited()
    team = new["plans"]["team"]
    team["limits"]["api_calls"]["limit"] = 50_000
    team["limits"]["exports"]["enforcement"] = "hard"
    team["seats"]["limit"] = 12
    team["seats"]["burst"]["extra"] = 4
    team["instances"]["kinds"]["vm"] = 2
    inherited = " (inherited by enterprise, floating)"
    # enterprise and floating write their own seat limit and burst extra.
    assert texts(old, new) == [
        "vm instance weight 1 → 2 on team" + inherited,
        # enterprise writes its own api_calls limit.
        "api_calls limit 100,000 → 50,000 on team (inherited by floating)",
        "exports limit enforcement soft → hard on team" + inherited,
        "seat burst extra 2 → 4 on team",
        "seat limit 10 → 12 on team",
    ]


def test_prices_and_tiers_in_words(old: dict[str, Any]) -> None:
    new = edited()
    starter = new["plans"]["starter"]["price"]
    starter["seat"]["unit"] = "25.00"
    starter["base"] = "59.00"
    team = new["plans"]["team"]["price"]
    team["meters"]["api_calls"]["tiers"][0]["unit"] = "0.002"
    assert texts(old, new) == [
        "base price 49.00 → 59.00 on starter",
        "seat price 15.00 → 25.00 on starter",
        "api_calls tier 1 unit price 0.001 → 0.002 on team (inherited by enterprise, floating)",
    ]


def test_plans_addons_meters_features_rules_and_inheritance(old: dict[str, Any]) -> None:
    new = edited()
    new["plans"]["basic"] = {"features": ["reports"], "price": {"base": "9.00"}}
    del new["plans"]["starter"]
    new["plans"]["floating"]["extends"] = "enterprise"
    new["addons"]["audit_pack"]["price"] = "120.00"
    new["addons"]["audit_pack"]["features"].append("sso")
    new["addons"]["extra_exports"] = {"features": ["exports"], "price": "10.00"}
    new["features"]["beta"] = {"description": "Beta access."}
    new["features"]["viewer"]["guests"] = False
    new["meters"]["exports"]["aggregation"] = "unique_count"
    new["meters"]["exports"]["property"] = "file"
    new["rules"].append(
        {"feature": "beta", "when": "customer.attributes.beta == true", "reason": "not_beta"}
    )
    worded = texts(old, new)
    for expected in (
        "plan basic added",
        "plan starter removed",
        "floating now extends enterprise (was team)",
        "price 100.00 → 120.00 on add-on audit_pack",
        "sso added to add-on audit_pack",
        "add-on extra_exports added",
        "feature beta added (Beta access.)",
        "feature viewer guests yes → no",
        "meter exports aggregation count → unique_count",
        "meter exports property file added",
    ):
        assert expected in worded, worded
    rule = len(new["rules"])
    assert (
        f"rule {rule} (beta) added: allowed only when customer.attributes.beta == true "
        "(else not_beta)" in worded
    )


def test_every_path_of_the_diff_is_worded(old: dict[str, Any]) -> None:
    """Whatever changes, the notes never leave a path of the diff out."""
    new = edited()
    new["currency"] = "EUR"
    new["plans"]["team"]["price"]["burst_seat_day"] = "3.00"
    new["plans"]["team"]["attributes"]["support_level"] = "premium"
    new["plans"]["team"]["features"].reverse()
    new["plans"]["starter"]["seats"]["guests"] = 4
    new["rules"] = []
    proposed = canonical(new)
    found = changes(old, proposed)
    result = diff(old, proposed)
    paths = {e["path"] for kind in ("added", "removed", "changed") for e in result[kind]}
    assert {c["path"] for c in found} == paths
    worded = [c["text"] for c in found]
    assert "currency USD → EUR" in worded
    assert any(t.startswith("features of team reordered") for t in worded)


def test_a_first_publish_lists_the_whole_catalog_as_added(old: dict[str, Any]) -> None:
    worded = [c["text"] for c in changes(None, old)]
    assert (
        "plan team added" in worded
        and "feature sso added (requires audit_log; SAML / OIDC single sign-on.)" in worded
    )


def test_markdown_renders_changes_impact_and_orphans() -> None:
    report = {
        "summary": {
            "customers_evaluated": 3,
            "customers_affected": 1,
            "customers_pinned": 1,
            "contracts_orphaned": 1,
        },
        "customers": [
            {
                "customer": "acme",
                "contract": "ctr_1",
                "contract_revision": 1,
                "plan": "team",
                "features_gained": ["sso"],
                "features_lost": ["exports"],
                "limits_changed": [{"path": "meters.api_calls.limit", "old": 100000, "new": 50000}],
                "plan_missing": False,
                "prices_changed": True,
                "estimated_invoice_change": "12.50",
            }
        ],
        "pinned": ["initech"],
        "orphaned": [],
        "next_cursor": None,
    }
    body = {
        "id": 2,
        "version": 2,
        "action": "publish",
        "previous_version": 1,
        "at": "2026-12-04T10:00:00Z",
        "actor": "api_key:key_a",
        "approved_by": "api_key:key_b",
        "summary": "SSO for team.\nExports move to an add-on.",
        "changes": [{"kind": "added", "path": "plans.team.features", "text": "sso added to team"}],
        "impact": impact_of(report),
        "orphaned": [
            {
                "contract": "ctr_9",
                "customer": "globex",
                "problems": [{"path": "plan", "message": "plan starter is not in version 2"}],
            }
        ],
    }
    text = markdown(body)
    assert text.startswith("# Policy version 2: published (after version 1)\n")
    assert "2026-12-04T10:00:00Z by api_key:key_a, approved by api_key:key_b" in text
    assert "> SSO for team.\n> Exports move to an add-on." in text
    assert "- sso added to team" in text
    assert "1 affected, 1 pinned to a version (untouched)" in text
    assert "- sso: gained by acme" in text and "- exports: lost by acme" in text
    # The limit in words; the JSON keeps its path (`meters.api_calls.limit`).
    assert "- acme: api_calls limit on team 100,000 → 50,000" in text
    assert "- acme (ctr_1): +12.50" in text
    assert "### Pinned customers (untouched)\n\n- initech" in text
    assert "- ctr_9 (globex): `plan`: plan starter is not in version 2" in text
