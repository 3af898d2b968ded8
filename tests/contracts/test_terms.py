"""The pure core of contracts: checks against a catalog, effective limits, time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from allotment.contracts.limits import effective_limits
from allotment.contracts.terms import (
    BurstTerms,
    InstanceTerms,
    Override,
    SeatTerms,
    Terms,
    TermsOutOfCatalog,
    check_terms,
    initial_attributes,
    overlaps,
    status,
)
from tests.factories.policies_for_contracts import demo_catalog

T0 = datetime(2026, 1, 1, tzinfo=UTC)
DAY = timedelta(days=1)


catalog = demo_catalog


def terms(**changes: object) -> Terms:
    base = Terms(plan="team", kind="standard", starts_at=T0, ends_at=T0 + 365 * DAY)
    return base.replace(**changes)


def paths(value: Terms) -> list[str]:
    return [p["path"] for p in check_terms(value, catalog(), version=7)]


# -- check_terms -----------------------------------------------------------------------------


def test_valid_terms_have_no_problems() -> None:
    assert paths(terms()) == []
    assert paths(terms(kind="trial", ends_at=T0 + 14 * DAY)) == []
    assert paths(terms(kind="pilot", discount_percent=Decimal("50"))) == []


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"kind": "trial", "ends_at": None}, ["ends_at"]),
        ({"kind": "educational"}, ["discount_percent"]),
        ({"kind": "pilot", "ends_at": None}, ["ends_at", "discount_percent"]),
        ({"kind": "standard", "discount_percent": Decimal("10")}, ["discount_reason"]),
        ({"kind": "standard", "discount_percent": Decimal("10"), "discount_reason": "deal"}, []),
        ({"kind": "standard", "discount_reason": "renewal"}, ["discount_reason"]),
        ({"kind": "trial", "discount_percent": Decimal("10")}, ["discount_percent"]),
        ({"ends_at": T0}, ["ends_at"]),
        ({"ends_at": T0 - DAY}, ["ends_at"]),
    ],
)
def test_kind_and_term_rules(changes: dict[str, object], expected: list[str]) -> None:
    assert paths(terms(**changes)) == expected


def test_unknown_names_are_reported_by_path() -> None:
    found = check_terms(
        terms(
            addons=("audit_pack", "nope", "audit_pack"),
            overrides=(
                Override(reason="r", feature="ghost", action="grant"),
                Override(reason="r", meter="ghost_meter", limit=3),
            ),
        ),
        catalog(),
        version=7,
    )
    assert [p["path"] for p in found] == [
        "addons[1]",
        "addons[2]",
        "overrides[0].feature",
        "overrides[1].meter",
    ]
    assert "policy version 7" in found[0]["message"]
    assert "listed twice" in found[1]["message"]


def test_unknown_plan_names_the_known_ones() -> None:
    (problem,) = check_terms(terms(plan="platinum"), catalog(), version=3)
    assert problem["path"] == "plan"
    assert "platinum" in problem["message"] and "enterprise" in problem["message"]


def test_override_rules() -> None:
    twice = (
        Override(reason="a", feature="sso", action="grant"),
        Override(reason="b", feature="sso", action="revoke"),
    )
    assert paths(terms(overrides=twice)) == ["overrides[1]"]
    early = (Override(reason="a", feature="sso", action="grant", expires_at=T0),)
    assert paths(terms(overrides=early)) == ["overrides[0].expires_at"]


def test_pools_the_plan_lacks_cannot_be_sized() -> None:
    # starter has seats but no instance pool; a burst needs a window from somewhere
    assert paths(terms(plan="starter", instances=InstanceTerms(limit=2))) == ["instances"]
    burst = SeatTerms(limit=5, burst=BurstTerms(extra=2, window=None))
    assert paths(terms(plan="starter", seats=burst)) == ["seats.burst.window"]
    assert paths(terms(plan="team", seats=burst)) == []  # team's window is inherited


def test_initial_attributes_put_the_request_over_the_plan() -> None:
    plan = catalog().plans["team"]
    assert initial_attributes(plan, {"region": "eu", "support_level": "gold"}) == {
        "edition": "team",
        "support_level": "gold",
        "region": "eu",
    }


# -- effective_limits ------------------------------------------------------------------------


def test_limits_default_to_the_plan() -> None:
    limits = effective_limits(terms(), catalog(), at=T0)
    assert limits.seats is not None and limits.instances is not None
    assert (limits.seats.limit, limits.seats.burst_extra) == (10, 2)
    assert limits.seats.burst_window == timedelta(hours=72)
    assert limits.seats.ceiling == 12
    assert limits.instances.limit == 3 and limits.instances.weight("cluster") == 4
    assert limits.instances.weight("lambda") is None
    assert limits.meters["api_calls"].limit == 100_000
    assert limits.features == catalog().plans["team"].features


def test_contract_pools_override_the_plan() -> None:
    limits = effective_limits(
        terms(
            seats=SeatTerms(limit=40, burst=BurstTerms(extra=5, window=None)),
            instances=InstanceTerms(limit=9),
        ),
        catalog(),
        at=T0,
    )
    assert limits.seats is not None and limits.instances is not None
    assert (limits.seats.limit, limits.seats.burst_extra) == (40, 5)
    assert limits.seats.burst_window == timedelta(hours=72)  # the plan's window
    assert limits.instances.limit == 9
    no_burst = effective_limits(
        terms(seats=SeatTerms(limit=4, burst=BurstTerms(extra=0, window=None))), catalog(), at=T0
    )
    assert no_burst.seats is not None
    assert (no_burst.seats.ceiling, no_burst.seats.burst_window) == (4, None)


def test_addons_and_overrides_shape_features_and_meters_until_they_expire() -> None:
    expires = T0 + 30 * DAY
    value = terms(
        addons=("audit_pack",),
        overrides=(
            Override(reason="deal", feature="sso", action="grant", expires_at=expires),
            Override(reason="abuse", feature="exports", action="revoke"),
            Override(reason="pilot", meter="api_calls", limit=5, expires_at=expires),
            Override(reason="new", meter="exports", limit=7),
        ),
    )
    before = effective_limits(value, catalog(), at=expires - timedelta(seconds=1))
    assert {"audit_log", "sso"} <= before.features
    assert "exports" not in before.features
    assert before.meters["api_calls"].limit == 5
    assert before.meters["api_calls"].enforcement == "hard"  # kept from the plan
    assert before.meters["exports"].limit == 7
    assert before.meters["exports"].enforcement == "soft"  # kept from the plan
    assert len(before.overrides) == 4

    after = effective_limits(value, catalog(), at=expires)
    assert "sso" not in after.features and "audit_log" in after.features
    assert "exports" not in after.features  # that revocation has no expiry
    assert after.meters["api_calls"].limit == 100_000
    assert len(after.overrides) == 2


def test_a_meter_the_plan_does_not_limit_gets_default_period_and_enforcement() -> None:
    value = terms(plan="starter", overrides=(Override(reason="r", meter="api_calls", limit=9),))
    limit = effective_limits(value, catalog(), at=T0).meters["api_calls"]
    assert (limit.limit, limit.period, limit.enforcement) == (9, "month", "hard")


def test_a_plan_missing_from_the_catalog_raises() -> None:
    with pytest.raises(TermsOutOfCatalog):
        effective_limits(terms(plan="gone"), catalog(), at=T0)


# -- time and storage ------------------------------------------------------------------------


def test_status_over_a_term() -> None:
    kw = {"starts_at": T0, "ends_at": T0 + 10 * DAY, "terminated_at": None}
    assert status(**kw, now=T0 - DAY) == "scheduled"
    assert status(**kw, now=T0) == "active"
    assert status(**kw, now=T0 + 10 * DAY) == "expired"
    cut = {"starts_at": T0, "ends_at": T0 + 5 * DAY, "terminated_at": T0 + 5 * DAY}
    assert status(**cut, now=T0 + 4 * DAY) == "active"  # termination scheduled, not yet
    assert status(**cut, now=T0 + 5 * DAY) == "terminated"
    cancelled = {"starts_at": T0, "ends_at": T0, "terminated_at": T0 - 3 * DAY}
    assert status(**cancelled, now=T0 - DAY) == "terminated"


def test_overlaps_is_half_open_and_ignores_empty_terms() -> None:
    assert overlaps((T0, T0 + DAY), (T0 + DAY, None)) is False
    assert overlaps((T0, None), (T0 + 100 * DAY, T0 + 101 * DAY)) is True
    assert overlaps((T0, T0 + DAY), (T0 - DAY, T0 + timedelta(seconds=1))) is True
    assert overlaps((T0, T0), (T0 - DAY, T0 + DAY)) is False


moments = st.integers(min_value=0, max_value=1000).map(lambda h: T0 + timedelta(hours=h))
terms_in_time = st.tuples(moments, st.one_of(st.none(), moments))


@given(terms_in_time, terms_in_time, moments)
def test_overlap_means_an_instant_in_both(
    a: tuple[datetime, datetime | None], b: tuple[datetime, datetime | None], at: datetime
) -> None:
    def holds(term: tuple[datetime, datetime | None], moment: datetime) -> bool:
        return term[0] <= moment and (term[1] is None or moment < term[1])

    assert overlaps(a, b) == overlaps(b, a)
    if holds(a, at) and holds(b, at):
        assert overlaps(a, b)


def test_terms_survive_their_json_form() -> None:
    value = terms(
        attributes={"edition": "team", "region": "eu"},
        seats=SeatTerms(limit=12, burst=BurstTerms(extra=3, window=timedelta(days=2))),
        instances=InstanceTerms(limit=4),
        addons=("audit_pack",),
        overrides=(
            Override(reason="r", feature="sso", action="grant", expires_at=T0 + DAY),
            Override(reason="m", meter="api_calls", limit=10),
        ),
        kind="pilot",
        discount_percent=Decimal("12.50"),
        policy_version=4,
        terminated_at=T0 + 3 * DAY,
    )
    again = Terms.from_json(value.to_json())
    assert again.to_json() == value.to_json()
    assert again == value.replace(attributes=again.attributes)
    assert value.to_json()["seats"]["burst"]["window"] == "2d"
