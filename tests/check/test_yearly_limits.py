"""Yearly usage limits in checks, pure: the contract year a limit counts in and ends with, at
arbitrary instants (a contract starting Feb 29, the last instant of a contract year), and
the gate refusing at the year's limit (docs/contracts.md, "Contract years")."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from allotment.check import gates
from allotment.check.meter_use import yearly_since
from allotment.check.values import MeterTotals, Usage
from allotment.contracts.years import contract_year
from allotment.kit.clock import isoformat
from allotment.policy.catalog import UsageLimit
from tests.check.snapshots import catalog, snapshot

instants = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2090, 12, 31), timezones=st.just(UTC)
)
starts = st.one_of(
    instants,
    st.sampled_from([2000, 2024, 2028]).map(lambda y: datetime(y, 2, 29, 12, 30, tzinfo=UTC)),
)


def yearly(starts_at: datetime, limit: int = 100):  # type: ignore[no-untyped-def]
    compiled = catalog()
    team = compiled.plans["team"]
    limits = {"api_calls": UsageLimit("api_calls", limit, "year", "hard")}
    plan = dataclasses.replace(team, limits=limits)
    found = snapshot(starts_at=starts_at)
    return dataclasses.replace(found, plan=plan)


@given(starts_at=starts, later=st.timedeltas(timedelta(0), timedelta(days=3000)))
def test_a_yearly_limit_counts_from_the_hour_its_contract_year_starts_in(
    starts_at: datetime, later: timedelta
) -> None:
    now = starts_at + later
    found = yearly(starts_at)
    year = contract_year(starts_at, now)
    since = yearly_since(found, now)
    assert since is not None and since <= year.start < since + timedelta(hours=1)
    assert since.minute == since.second == since.microsecond == 0
    assert gates.year_end_text(found, now) == isoformat(year.end)
    last = year.end - timedelta(microseconds=1)
    assert yearly_since(found, last) == since  # the last instant is still the year's
    assert gates.year_end_text(found, year.end) == isoformat(contract_year(starts_at, year.end).end)


def test_a_plan_without_a_yearly_limit_reads_no_year() -> None:
    assert yearly_since(snapshot(), datetime(2026, 5, 1, tzinfo=UTC)) is None


def test_the_gate_refuses_at_the_years_limit_whatever_the_month() -> None:
    starts_at = datetime(2028, 2, 29, 12, 30, tzinfo=UTC)
    now = datetime(2029, 2, 28, 12, 29, tzinfo=UTC)  # the year's last minute
    found = yearly(starts_at)
    usage = Usage(
        as_of=now,
        meters={"api_calls": MeterTotals(Decimal(0), Decimal(0), Decimal(5), Decimal(100))},
        tenants={},
    )
    verdict = gates.meter_state(found, "api_calls", now, usage=usage)
    assert verdict is not None and not verdict.allowed
    assert verdict.reason == "usage_limit_reached"
    assert (
        verdict.limit is not None and verdict.limit["period_end"] == "2029-02-28T12:30:00.000000Z"
    )
    fewer = dataclasses.replace(usage, meters={"api_calls": MeterTotals(year=Decimal(99))})
    assert gates.meter_state(found, "api_calls", now, usage=fewer).allowed  # type: ignore[union-attr]
