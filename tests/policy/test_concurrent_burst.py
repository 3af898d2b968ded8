"""Burst on concurrent seats is refused, not silently ignored (docs/seats.md#the-burst-window).

Sessions never go over the pool's limit, so a `burst` on a concurrent pool, written in the
plan or inherited from the plan it extends, is a 422 at `plans.<name>.seats.burst`; a
contract's `seats.burst` on a concurrent plan at `seats.burst`. Stored versions that carry
one still load (the burst is dropped), so a stricter release never breaks a live catalog.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from allotment.contracts.limits import effective_limits
from allotment.contracts.terms import BurstTerms, SeatTerms, Terms, check_terms
from allotment.policy import compile_policy, validate
from allotment.policy.validation import validate as validate_stored
from tests.factories.policies_for_contracts import demo_catalog
from tests.policy.documents import base, errors_by_path

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def concurrent_with_burst() -> dict:
    raw = base()
    raw["plans"]["floating"] = {
        "features": ["reports"],
        "seats": {"limit": 5, "model": "concurrent", "burst": {"extra": 2, "window": "1h"}},
    }
    return raw


def test_a_concurrent_pool_with_burst_is_refused_at_its_path() -> None:
    found = errors_by_path(concurrent_with_burst())
    assert list(found) == ["plans.floating.seats.burst"]
    (message,) = found["plans.floating.seats.burst"]
    assert "concurrent" in message and "extra: 0" in message


def test_an_inherited_burst_is_refused_on_the_concurrent_child() -> None:
    raw = base()  # team: named seats with burst {extra: 2, window: 72h}
    raw["plans"]["floating"] = {"extends": "team", "seats": {"model": "concurrent"}}
    found = errors_by_path(raw)
    assert list(found) == ["plans.floating.seats.burst"]
    assert "team" in found["plans.floating.seats.burst"][0]


def test_extra_zero_turns_the_inherited_burst_off() -> None:
    raw = base()
    raw["plans"]["floating"] = {
        "extends": "team",
        "seats": {"model": "concurrent", "burst": {"extra": 0}},
    }
    assert validate(raw).errors == []


def test_a_stored_version_with_one_still_loads_without_the_burst() -> None:
    result = validate_stored(concurrent_with_burst(), stored=True)
    assert result.errors == []
    assert result.document is not None
    pool = compile_policy(result.document).plans["floating"].seats
    assert pool is not None and pool.burst is None


def test_a_contract_burst_on_a_concurrent_plan_is_refused() -> None:
    terms = Terms(
        plan="floating",
        kind="standard",
        starts_at=T0,
        ends_at=None,
        seats=SeatTerms(limit=5, burst=BurstTerms(extra=3, window=timedelta(hours=1))),
    )
    problems = check_terms(terms, demo_catalog(), version=1)
    assert [p["path"] for p in problems] == ["seats.burst"]
    assert "concurrent" in problems[0]["message"]
    # A burst of 0 says "no burst" and is fine; a stored one is ignored by the limits.
    off = terms.replace(seats=SeatTerms(limit=5, burst=BurstTerms(extra=0, window=None)))
    assert check_terms(off, demo_catalog(), version=1) == []
    seats = effective_limits(terms, demo_catalog(), at=T0).seats
    assert seats is not None and seats.burst_extra == 0 and seats.burst_window is None
