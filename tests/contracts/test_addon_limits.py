"""contracts/limits.effective_limits and contracts/addons.py, pure: what add-ons bought (× their
quantity) add to a contract's seat, instance and meter limits, alone and with overrides."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from allotment.contracts.addons import bought, total
from allotment.contracts.limits import effective_limits
from allotment.contracts.terms import Override, Terms
from allotment.policy import compile_policy, load
from allotment.policy.catalog import NO_RAISES, Catalog

T0 = datetime(2026, 5, 1, tzinfo=UTC)

POLICY = """
currency: USD
features: {api: {meter: api_calls}, exports: {meter: exports}}
meters:
  api_calls: {event_type: api.call, aggregation: count}
  exports: {event_type: export.created, aggregation: count}
plans:
  team:
    features: [api, exports]
    seats: {limit: 10}
    instances: {limit: 3}
    limits: {api_calls: {limit: 1000, period: day, enforcement: soft}}
addons:
  growth: {raises: {seats: 5, instances: 2, limits: {api_calls: 500, exports: 7}}}
  extra_seats: {price: "10.00", raises: {seats: 1}}
  plain: {price: "1.00"}
"""


def catalog() -> Catalog:
    result = load(POLICY, "application/yaml")
    assert result.document is not None, result.errors
    return compile_policy(result.document)


def terms(*addons: str, quantities: dict[str, int] | None = None, **more: Any) -> Terms:
    return Terms(
        plan="team",
        kind="standard",
        starts_at=T0,
        ends_at=None,
        addons=addons,
        addon_quantities=tuple(sorted((quantities or {}).items())),
        **more,
    )


def test_without_addons_the_plans_limits_stand() -> None:
    limits = effective_limits(terms("plain"), catalog(), at=T0)
    assert limits.seats is not None and limits.seats.limit == 10
    assert limits.instances is not None and limits.instances.limit == 3
    assert limits.meters["api_calls"].limit == 1000
    assert total(bought(terms("plain"), catalog().addons)) is NO_RAISES


def test_raises_add_per_unit_bought() -> None:
    limits = effective_limits(
        terms("growth", "extra_seats", quantities={"growth": 2, "extra_seats": 3}),
        catalog(),
        at=T0,
    )
    assert limits.seats is not None and limits.seats.limit == 10 + 2 * 5 + 3 * 1
    assert limits.instances is not None and limits.instances.limit == 3 + 2 * 2
    api = limits.meters["api_calls"]
    assert (api.limit, api.period, api.enforcement) == (1000 + 2 * 500, "day", "soft")
    assert "exports" not in limits.meters  # unlimited stays unlimited


def test_raises_add_to_the_contracts_own_pool_and_to_an_override() -> None:
    from allotment.contracts.terms import InstanceTerms, SeatTerms

    expiry = T0 + timedelta(days=10)
    contract = terms(
        "growth",
        seats=SeatTerms(limit=40, burst=None),
        instances=InstanceTerms(limit=9),
        overrides=(Override(reason="migration", meter="api_calls", limit=5000, expires_at=expiry),),
    )
    during = effective_limits(contract, catalog(), at=T0)
    assert during.seats is not None and during.seats.limit == 45
    assert during.instances is not None and during.instances.limit == 11
    assert during.meters["api_calls"].limit == 5500
    after = effective_limits(contract, catalog(), at=expiry)
    assert after.meters["api_calls"].limit == 1500


def test_an_addon_a_later_policy_removed_adds_nothing() -> None:
    limits = effective_limits(terms("vanished"), catalog(), at=T0)
    assert limits.seats is not None and limits.seats.limit == 10


def test_quantities_round_trip_through_the_stored_terms() -> None:
    stored = terms("growth", "plain", quantities={"growth": 3}).to_json()
    assert stored["addons"] == ["growth", "plain"] and stored["addon_quantities"] == {"growth": 3}
    again = Terms.from_json(stored)
    assert again.quantity("growth") == 3 and again.quantity("plain") == 1
    assert "addon_quantities" not in terms("plain").to_json()  # old terms stay as they were
    assert "discount_reason" not in terms("plain").to_json()


def test_a_contract_in_another_currency_buys_only_addons_priced_in_it() -> None:
    from allotment.contracts.addons import check

    text = POLICY.replace(
        '  plain: {price: "1.00"}',
        '  plain: {price: "1.00", price_lists: {EUR: "0.90"}}\n'
        '  dear: {price: "5.00"}\n'
        '  support: {per_seat: {unit: "4.00"}}\n'
        "  upkeep: {percent: 20, of: [base]}",
    )
    result = load(text, "application/yaml")
    assert result.document is not None, result.errors
    compiled = compile_policy(result.document)
    euro = terms("plain", "dear", "support", "upkeep", currency="EUR")
    assert check(euro, compiled, version=1) == [
        {"path": "addons[1]", "message": "add-on 'dear' has no EUR price in policy version 1"},
        {
            "path": "addons[2]",
            "message": "add-on 'support' is priced per seat in USD only: a EUR contract "
            "cannot buy it",
        },
    ]
    assert check(terms("plain", "dear", "support", "upkeep"), compiled, version=1) == []
