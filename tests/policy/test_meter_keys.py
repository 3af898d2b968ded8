"""The richer meter keys (docs/policy.md, "Meters"): `average`, `percentile`, `filter`,
`multiplier` and decimal `included`, each error with its path, and the digest of documents
that do not use them left as it was."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from allotment.policy import validate
from allotment.policy.compiler import compile_policy, digest
from allotment.policy.document import canonical_form
from tests.policy.documents import assert_error, base, errors_by_path

# The digest of tests/policy/documents.py's base document before these keys existed.
BASE_DIGEST = "e5cae1e2c5f1025ce3040a90cc7543dfad454fcbd4fc697ebff50780175b1a84"


def with_levels() -> dict[str, Any]:
    raw = base()
    raw["meters"].update(
        {
            "storage_gb": {
                "event_type": "storage.gauge",
                "aggregation": "average",
                "property": "gb",
            },
            "hosts": {
                "event_type": "host.seen",
                "aggregation": "max",
                "property": "n",
                "percentile": 95,
            },
            "windows_kb": {
                "event_type": "transfer",
                "aggregation": "sum",
                "property": "bytes",
                "filter": "data.os == 'windows'",
                "multiplier": "0.001",
            },
        }
    )
    raw["plans"]["team"]["price"]["meters"].update(
        {
            "storage_gb": {"included": "0.5", "tiers": [{"unit": "0.10"}]},
            "hosts": {"tiers": [{"unit": "15"}]},
            "windows_kb": {"tiers": [{"unit": "0.02"}]},
        }
    )
    return raw


def compiled(raw: dict[str, Any]) -> Any:
    result = validate(raw)
    assert result.errors == [] and result.document is not None
    return compile_policy(result.document)


def test_the_new_keys_compile() -> None:
    catalog = compiled(with_levels())
    storage, hosts, windows = (catalog.meters[m] for m in ("storage_gb", "hosts", "windows_kb"))
    assert storage.aggregation == "average" and storage.is_level()
    assert hosts.percentile == Decimal(95) and hosts.is_level()
    assert windows.multiplier == Decimal("0.001") and not windows.is_level()
    assert windows.counts({"os": "windows", "bytes": 1}) and not windows.counts({"os": "linux"})
    assert not windows.counts({"bytes": 1})  # no `os`: the filter cannot hold
    assert catalog.plans["team"].price.meters["storage_gb"].included == Decimal("0.5")
    assert catalog.plans["team"].price.meters["api_calls"].included == 100_000


def test_documents_without_the_new_keys_keep_their_digest() -> None:
    assert compiled(base()).digest == BASE_DIGEST
    form = canonical_form(validate(base()).document)  # type: ignore[arg-type]
    assert form["plans"]["team"]["price"]["meters"]["api_calls"]["included"] == 100000


def test_an_integral_decimal_is_the_integer_in_the_canonical_form() -> None:
    raw = base()
    raw["plans"]["team"]["price"]["meters"]["api_calls"]["included"] = "100000.000"
    assert compiled(raw).digest == BASE_DIGEST
    raw["plans"]["team"]["price"]["meters"]["api_calls"]["included"] = "100000.50"
    document = validate(raw).document
    assert document is not None
    form = canonical_form(document)
    assert form["plans"]["team"]["price"]["meters"]["api_calls"]["included"] == "100000.5"
    assert digest(document) != BASE_DIGEST


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (0.5, ['quoted, as "0.5"']),
        ("-1", ["at least 0", "not -1"]),
        ("0.1234567", ["more than 6 decimal places"]),
        ("1000000000000001", ["at most 1000000000000000"]),
        (True, ["integer or a quoted decimal"]),
    ],
)
def test_included_takes_an_integer_or_a_quoted_decimal(value: object, words: list[str]) -> None:
    raw = base()
    raw["plans"]["team"]["price"]["meters"]["api_calls"]["included"] = value
    assert_error(raw, "plans.team.price.meters.api_calls.included", *words)


def test_average_reads_a_property() -> None:
    raw = with_levels()
    del raw["meters"]["storage_gb"]["property"]
    assert_error(raw, "meters.storage_gb.property", "required", "'average'")


def test_a_percentile_is_of_count_sum_or_max_meters() -> None:
    raw = with_levels()
    raw["meters"]["storage_gb"]["percentile"] = 95
    assert_error(raw, "meters.storage_gb.percentile", "'count', 'sum' and 'max'", "'average'")
    raw = with_levels()
    raw["meters"]["users"] = {
        "event_type": "login",
        "aggregation": "unique_count",
        "property": "user",
        "percentile": 50,
    }
    assert_error(raw, "meters.users.percentile", "'unique_count'")


@pytest.mark.parametrize(
    ("value", "words"),
    [(0, ["above 0"]), (101, ["at most 100"]), ("99.12345", ["more than 4"]), (99.9, ["quoted"])],
)
def test_a_percentile_is_above_0_and_at_most_100(value: object, words: list[str]) -> None:
    raw = with_levels()
    raw["meters"]["hosts"]["percentile"] = value
    assert_error(raw, "meters.hosts.percentile", *words)


def test_a_filter_must_compile() -> None:
    raw = with_levels()
    raw["meters"]["windows_kb"]["filter"] = "data.os == "
    assert_error(raw, "meters.windows_kb.filter", "does not compile")


def test_a_filter_reads_only_data() -> None:
    raw = with_levels()
    raw["meters"]["windows_kb"]["filter"] = "subject == 'acme' && data.os == 'windows'"
    assert_error(raw, "meters.windows_kb.filter", "unknown name 'subject'", "only `data`")


def test_an_empty_filter_is_refused() -> None:
    raw = with_levels()
    raw["meters"]["windows_kb"]["filter"] = ""
    assert_error(raw, "meters.windows_kb.filter", "must not be empty")


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("0", ["above 0"]),
        (0.001, ["quoted"]),
        ("2000000000", ["at most 1000000000"]),
        ("0.0000000000001", ["more than 12"]),
    ],
)
def test_a_multiplier_is_a_positive_exact_number(value: object, words: list[str]) -> None:
    raw = with_levels()
    raw["meters"]["windows_kb"]["multiplier"] = value
    assert_error(raw, "meters.windows_kb.multiplier", *words)


def test_a_unique_count_takes_no_multiplier() -> None:
    raw = with_levels()
    raw["meters"]["users"] = {
        "event_type": "login",
        "aggregation": "unique_count",
        "property": "user",
        "multiplier": 2,
    }
    assert_error(raw, "meters.users.multiplier", "distinct values")


@pytest.mark.parametrize("meter", ["storage_gb", "hosts"])
def test_a_level_takes_no_usage_limit(meter: str) -> None:
    raw = with_levels()
    raw["plans"]["team"]["limits"][meter] = {"limit": 100}
    assert_error(raw, f"plans.team.limits.{meter}", "is a level", "takes no usage limit")


def test_a_filtered_or_scaled_meter_takes_a_limit() -> None:
    raw = with_levels()
    raw["plans"]["team"]["limits"]["windows_kb"] = {"limit": 100}
    assert errors_by_path(raw) == {}


def test_rules_do_not_read_levels() -> None:
    raw = with_levels()
    raw["rules"].append(
        {"feature": "reports", "when": "usage.storage_gb < 100", "reason": "too_much"}
    )
    found = errors_by_path(raw)
    assert list(found) == ["rules[1].when"]
    assert "never provided" in found["rules[1].when"][0]
    raw["rules"][1]["when"] = "usage.windows_kb < 100"
    assert errors_by_path(raw) == {}
