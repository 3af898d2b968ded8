"""Builders for the pricing tests: a small compiled policy, segments, intervals and usage.

No database: `billing/pricing.py` is pure, so every test builds its input by hand. The
policy's prices are chosen so May 2026 (31 days) divides evenly: team's base 310.00 is
10.00 a day, a seat over the included five 31.00 a month (1.00 a day), the add-on 62.00.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import lru_cache

from allotment.billing.priced import Interval, Line, MeterTotal, Priced, PricingInput, Segment
from allotment.policy import Catalog, compile_policy, load

MAY = datetime(2026, 5, 1, tzinfo=UTC)
JUNE = datetime(2026, 6, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)

POLICY = """
currency: USD
features:
  editor: {seat: required}
  agent: {instance: required}
  api: {meter: api_calls}
  exports: {meter: exports}
  audit_log: {}
meters:
  api_calls: {event_type: api.call, aggregation: sum, property: count}
  exports: {event_type: export.created, aggregation: count}
plans:
  team:
    features: [editor, agent, api]
    seats: {limit: 10, model: named, burst: {extra: 2, window: 72h}}
    instances: {limit: 8, kinds: {vm: 1, cluster: 4}}
    price:
      base: "310.00"
      seat: {unit: "31.00", basis: peak, included: 5}
      burst_seat_day: "2.00"
      instance_hour: "0.05"
      meters:
        api_calls: {included: 1000, tiers: [{up_to: 5000, unit: "0.01"}, {unit: "0.005"}]}
  team_average:
    extends: team
    price: {seat: {basis: average}}
  team_end:
    extends: team
    price: {seat: {basis: end}}
  pro:
    extends: team
    features: [+exports]
    seats: {limit: 20}
    price:
      base: "620.00"
      seat: {unit: "62.00", included: 10}
      burst_seat_day: "3.00"
      instance_hour: "0.10"
      meters:
        api_calls: {included: 5000, tiers: [{up_to: 100000, unit: "0.002"}, {unit: "0.001"}]}
        exports: {tiers: [{unit: "0.10"}]}
  basic:
    features: [editor]
    seats: {limit: 3, model: named}
    price: {base: "100.00"}
  flex:
    features: [editor]
    seats: {limit: 5, model: concurrent}
    price: {seat: {unit: "10.00", basis: average}, burst_seat_day: "5.00"}
  free:
    features: [editor, agent, api]
    seats: {limit: 3, model: named, burst: {extra: 1, window: 24h}}
    instances: {limit: 2}
    price:
      seat: {unit: "0.00"}
      meters: {api_calls: {tiers: [{unit: "0"}]}}
  metered:
    features: [editor, agent, api, exports]
    seats: {limit: 3, model: named, burst: {extra: 5, window: 72h}}
    instances: {limit: 8}
    price:
      base: "99.99"
      seat: {unit: "7.77", basis: average}
      burst_seat_day: "1.11"
      instance_hour: "0.0333"
      meters:
        api_calls: {tiers: [{unit: "0.0007"}]}
        exports: {tiers: [{unit: "0.25"}]}
  metered_twin:
    extends: metered
addons:
  audit_pack: {features: [audit_log], price: "62.00"}
  support: {features: [audit_log], price: "15.50"}
  gratis: {features: [audit_log], price: "0.00"}
"""

JPY_POLICY = """
currency: JPY
features:
  agent: {instance: required}
plans:
  team:
    features: [agent]
    instances: {limit: 4}
    price: {base: "31000", instance_hour: "0.5"}
"""


@lru_cache
def catalog(text: str = POLICY) -> Catalog:
    result = load(text, "application/yaml")
    assert result.document is not None, result.errors
    return compile_policy(result.document)


def may(day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(2026, 5, day, hour, minute, tzinfo=UTC)


def segment(
    plan: str = "team",
    start: datetime = MAY,
    end: datetime = JUNE,
    *,
    revision: int = 1,
    version: int = 1,
    addons: Iterable[str] = (),
    kind: str = "standard",
    discount: str | None = None,
    seat_limit: int | None = -1,  # -1: the plan's
    policy: str = POLICY,
) -> Segment:
    compiled = catalog(policy)
    resolved = compiled.plans[plan]
    pool = resolved.seats
    return Segment(
        start=start,
        end=end,
        revision=revision,
        policy_version=version,
        plan=resolved,
        addons=tuple(compiled.addons[name] for name in addons),
        kind=kind,
        discount_percent=None if discount is None else Decimal(discount),
        seat_limit=(pool.limit if pool else None) if seat_limit == -1 else seat_limit,
        seat_model=pool.model if pool else None,
    )


Usage = Iterable[tuple[datetime, str, int]]  # (when, meter, quantity): one event each


def usage(events: Usage = ()) -> Callable[[datetime, datetime, str], MeterTotal]:
    """A meter source over explicit events: the sum and count of `meter`'s in [start, end)."""
    stored = tuple(events)

    def total(start: datetime, end: datetime, meter: str) -> MeterTotal:
        hits = [q for when, name, q in stored if name == meter and start <= when < end]
        return MeterTotal(meter, Decimal(sum(hits)), len(hits))

    return total


def pricing(
    *segments: Segment,
    seats: Iterable[Interval] = (),
    instances: Iterable[Interval] = (),
    events: Usage = (),
    start: datetime = MAY,
    end: datetime = JUNE,
    currency: str = "USD",
    digits: int = 2,
) -> PricingInput:
    return PricingInput(
        period_start=start,
        period_end=end,
        currency=currency,
        minor_digits=digits,
        segments=tuple(segments),
        seats=tuple(seats),
        instances=tuple(instances),
        meters=usage(events),
    )


def held(count: int, start: datetime = MAY, end: datetime | None = JUNE) -> list[Interval]:
    """`count` seats held over [start, end)."""
    return [Interval(start, end) for _ in range(count)]


def by_code(priced: Priced) -> dict[str, Line]:
    lines = {line.code: line for line in priced.lines}
    assert len(lines) == len(priced.lines), "codes repeat: use priced.lines"
    return lines


def codes(priced: Priced) -> list[str]:
    return [line.code for line in priced.lines]
