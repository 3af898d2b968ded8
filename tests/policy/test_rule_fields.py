"""Rules may read only the fields a check provides: the scanner, and the 422s it leads to."""

from __future__ import annotations

from typing import Any

import pytest

from allotment.policy import validate
from allotment.policy.rule_fields import field_errors, references
from tests.factories.policies_for_contracts import demo_document

METERS = frozenset({"api_calls", "exports"})


def paths(source: str) -> list[str]:
    return sorted(".".join(path) for path in references(source))


def test_a_string_literal_is_not_a_reference() -> None:
    assert paths("'contract.foo' == contract.kind") == ["contract.kind"]
    assert paths('"a \\" contract.foo" != contract.plan') == ["contract.plan"]
    assert paths("r'contract.foo' == '''x contract.bar'''") == []
    assert field_errors("'contract.foo' == contract.kind", METERS) == []


def test_has_reads_its_argument() -> None:
    assert paths("has(instance.metadata.x)") == ["instance.metadata.x"]
    assert field_errors("has(instance.metadata.x)", METERS) == []
    assert field_errors("has(instance.host)", METERS) != []


def test_bind_names_are_not_variables() -> None:
    assert paths("cel.bind(x, subject, x.id == 'a')") == ["subject"]
    assert field_errors("cel.bind(x, subject, x.id == 'a')", METERS) == []


def test_macro_bound_names_and_receivers() -> None:
    assert paths("usage.exists(m, m > 1)") == ["usage"]
    assert field_errors("usage.exists(m, m > 1)", METERS) == []
    assert field_errors("contract.addons.exists(a, a == 'sso')", METERS) == []
    # a macro variable named like a check variable shadows it: not checked, not refused
    assert field_errors("contract.addons.exists(seats, seats.total == 1)", METERS) == []


def test_index_syntax_with_a_literal_key() -> None:
    assert paths("contract['kind'] == 'trial'") == ["contract.kind"]
    assert field_errors("contract['kind'] == 'trial'", METERS) == []
    assert field_errors("contract['foo'] == 1", METERS) != []
    assert field_errors("contract[context.key] == 1", METERS) == []  # not knowable: allowed


def test_method_calls_end_the_path() -> None:
    assert paths("subject.id.startsWith('u-')") == ["subject.id"]
    assert paths("size(contract.addons) > 0 && now.getHours() > 3") == ["contract.addons", "now"]


@pytest.mark.parametrize(
    ("source", "field", "exists"),
    [
        ("contract.foo == 1", "contract.foo", "id, plan, kind"),
        ("subject.email == 'a'", "subject.email", "id, seat"),
        ("instance.host == 'a'", "instance.host", "fingerprint, kind, environment"),
        ("seats.total > 1", "seats.total", "limit, used, guests, guests_used"),
        ("usage.unknown_meter > 1", "usage.unknown_meter", "api_calls, exports"),
        ("instances.count > 1", "instances.count", "limit, used"),
        ("tenant.name == 'x'", "tenant.name", "key, quotas"),
        ("customer.email == 'x'", "customer.email", "key, name, attributes"),
        ("contract.kind.x == 1", "contract.kind.x", "contract.kind has no fields"),
        ("now.year == 1", "now.year", "now has no fields"),
    ],
)
def test_a_field_never_provided_is_named(source: str, field: str, exists: str) -> None:
    errors = field_errors(source, METERS)
    assert len(errors) == 1
    assert f"'{field}'" in errors[0] and exists in errors[0]


@pytest.mark.parametrize(
    "source",
    [
        "contract.attributes.anything.deeper == 1",
        "customer.attributes['x-y'] == 1",
        "instance.metadata.user == subject.id",
        "tenant.quotas.meters.api_calls > 3",
        "context.tags.exists(t, t == 'beta')",
        "usage.api_calls < 1000 && usage['exports'] < 3",
        "seats.used < seats.limit && seats.guests_used <= seats.guests",
        "instances.used < instances.limit",
        "subject.seat == 'member' && instance.kind == 'vm' && instance.environment == 'prod'",
        "instance.lease_expires_at > now",
        "contract.ends_at == null || contract.ends_at > now + duration('24h')",
        ".contract.kind == 'trial'",
        "contract.?attributes.orValue({}) == {}",
        "// contract.foo in a comment\ncontract.kind == 'trial'",
    ],
)
def test_free_form_maps_and_provided_fields_pass(source: str) -> None:
    assert field_errors(source, METERS) == []


def _rule_document(when: str) -> dict[str, Any]:
    document = demo_document()
    document["rules"] = [
        {"feature": "reports", "when": "contract.kind != 'trial'", "reason": "fine"},
        {"feature": "reports", "when": when, "reason": "bad"},
    ]
    return document


@pytest.mark.parametrize(
    ("when", "field"),
    [
        ("contract.foo == 1", "contract.foo"),
        ("subject.email == 'a'", "subject.email"),
        ("instance.host == 'a'", "instance.host"),
        ("seats.total > 1", "seats.total"),
        ("usage.unknown_meter > 1", "usage.unknown_meter"),
    ],
)
def test_validation_refuses_a_field_never_provided(when: str, field: str) -> None:
    result = validate(_rule_document(when))
    assert result.document is None
    assert [error["path"] for error in result.errors] == ["rules[1].when"]
    assert f"'{field}'" in result.errors[0]["message"]


def test_usage_keys_are_the_policys_meters() -> None:
    assert validate(_rule_document("usage.api_calls < 1000")).ok
    assert validate(_rule_document("usage.exports < 10")).ok


async def test_the_api_answers_422_naming_the_field(client: Any, admin: dict[str, str]) -> None:
    response = await client.post(
        "/v1/policies", json=_rule_document("subject.email == 'a'"), headers=admin
    )
    assert response.status_code == 422, response.text
    problem = response.json()
    assert response.headers["content-type"].startswith("application/problem+json")
    assert [error["path"] for error in problem["errors"]] == ["rules[1].when"]
    assert "'subject.email'" in problem["errors"][0]["message"]


def test_fields_cover_exactly_the_rule_variables() -> None:
    from allotment.policy.rule_fields import FIELDS
    from allotment.policy.rules import RULE_VARIABLES

    assert list(FIELDS) == list(RULE_VARIABLES)


def test_a_string_literal_binds_nothing() -> None:
    from allotment.policy.rules import compile_condition, unknown_variables

    program = compile_condition("'.exists(stranger,' == 'x' || stranger == 1")
    assert unknown_variables(program) == ["stranger"]
