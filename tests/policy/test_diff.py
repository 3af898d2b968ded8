"""Diffs between policy documents, by path."""

from __future__ import annotations

from typing import Any

from allotment.policy import canonical_form, validate
from allotment.policy.diff import diff
from tests.policy.documents import base


def canonical(raw: dict[str, Any]) -> dict[str, Any]:
    document = validate(raw).document
    assert document is not None
    return canonical_form(document)


def test_identical_documents_have_no_diff() -> None:
    assert diff(canonical(base()), canonical(base())) == {"added": [], "removed": [], "changed": []}


def test_added_removed_and_changed_by_path() -> None:
    new = base()
    new["plans"]["team"]["price"]["base"] = "550.00"
    new["plans"]["team"]["limits"]["exports"] = {"limit": 10}
    del new["addons"]["audit_pack"]
    result = diff(canonical(base()), canonical(new))
    assert result["changed"] == [
        {"path": "plans.team.price.base", "old": "500.00", "new": "550.00"}
    ]
    assert result["added"] == [{"path": "plans.team.limits.exports", "value": {"limit": 10}}]
    assert result["removed"] == [
        {"path": "addons.audit_pack", "value": {"features": ["audit_log"], "price": "100.00"}}
    ]


def test_lists_of_names_change_as_a_whole() -> None:
    new = base()
    new["plans"]["team"]["features"].remove("editor")
    result = diff(canonical(base()), canonical(new))
    assert result["changed"] == [
        {
            "path": "plans.team.features",
            "old": ["reports", "editor", "viewer", "api"],
            "new": ["reports", "viewer", "api"],
        }
    ]


def test_lists_of_objects_are_compared_by_index() -> None:
    new = base()
    new["rules"][0]["reason"] = "export_controls"
    new["rules"].append({"feature": "api", "when": "true", "reason": "always"})
    result = diff(canonical(base()), canonical(new))
    assert result["changed"] == [
        {"path": "rules[0].reason", "old": "region_not_supported", "new": "export_controls"}
    ]
    assert result["added"] == [
        {"path": "rules[1]", "value": {"feature": "api", "when": "true", "reason": "always"}}
    ]


def test_equivalent_spellings_do_not_show_in_a_canonical_diff() -> None:
    new = base()
    new["plans"]["team"]["seats"]["burst"]["window"] = "3d"
    new["features"]["reports"] = {"seat": "optional"}
    assert diff(canonical(base()), canonical(new))["changed"] == []


def test_a_change_of_type_is_a_change() -> None:
    assert diff({"a": 1}, {"a": True})["changed"] == [{"path": "a", "old": 1, "new": True}]
    assert diff({"a": {"b": 1}}, {"a": [1]})["changed"] == [
        {"path": "a", "old": {"b": 1}, "new": [1]}
    ]
