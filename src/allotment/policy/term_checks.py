"""Whole-document checks of annual terms and price lists, each with its path (docs/policy.md).

Called from `checks.py` on the raw document, next to the model validation (which checks each
price list's fees against its own currency's minor unit); values the models reject are
skipped here.

    check                                           path of the error
    a price list in the document's own currency     plans.team.price_lists.USD
                                                    addons.audit.price_lists.USD
    a price list prices an unknown meter            plans.team.price_lists.EUR.meters.foo
    a price list's tiers, alternatives (written)    plans.team.price_lists.EUR.seat.tiers
    period: year on a meter that is not a count     plans.team.price.meters.storage.period
      or a sum, or is a level                       (and in each price list)
    resolved: period: year with volume tiers        plans.team.price.meters.api.mode
    resolved: a price list's gaps (no unit, ...)    plans.team.price_lists.EUR.seat.unit
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from allotment.policy.paths import Location
from allotment.policy.price_checks import check_written, price_gaps

Finding = tuple[Location, str]

YEARLY_AGGREGATIONS = ("count", "sum")


def _prices(spec: Mapping[str, Any]) -> Iterator[tuple[Location, Mapping[str, Any]]]:
    """A plan's `price` and each of its price lists, with their locations in the plan."""
    price = spec.get("price")
    if isinstance(price, Mapping):
        yield ("price",), price
    lists = spec.get("price_lists")
    if isinstance(lists, Mapping):
        for currency, listed in lists.items():
            if isinstance(listed, Mapping):
                yield ("price_lists", currency), listed


def check_plan_terms(
    name: str, spec: Mapping[str, Any], *, currency: object, meters: Mapping[str, Any]
) -> Iterator[Finding]:
    """What one plan's written price lists and yearly meters say about themselves."""
    lists = spec.get("price_lists")
    if isinstance(lists, Mapping) and isinstance(currency, str) and currency in lists:
        yield (
            ("plans", name, "price_lists", currency),
            f"{currency} is the document's currency, priced by `price`: a price list is for "
            "another currency",
        )
    for where, price in _prices(spec):
        location: Location = ("plans", name, *where)
        if where[0] == "price_lists":
            yield from check_written(price, location=location)
        meter_prices = price.get("meters")
        if not isinstance(meter_prices, Mapping):
            continue
        for meter, meter_price in meter_prices.items():
            found = meters.get(meter)
            if where[0] == "price_lists" and isinstance(meter, str) and found is None:
                yield (*location, "meters", meter), f"unknown meter '{meter}'"
            if (
                isinstance(meter_price, Mapping)
                and meter_price.get("period") == "year"
                and isinstance(found, Mapping)
                and (
                    found.get("aggregation") not in YEARLY_AGGREGATIONS
                    or found.get("percentile") is not None
                )
            ):
                yield (
                    (*location, "meters", meter, "period"),
                    f"a yearly allowance adds up a year's use: only a count or a sum meter "
                    f"(not a percentile) has one; meter '{meter}' is "
                    f"'{found.get('aggregation')}'"
                    + (" with a percentile" if found.get("percentile") is not None else ""),
                )


def check_addon_terms(name: str, spec: Mapping[str, Any], *, currency: object) -> Iterator[Finding]:
    lists = spec.get("price_lists")
    if isinstance(lists, Mapping) and isinstance(currency, str) and currency in lists:
        yield (
            ("addons", name, "price_lists", currency),
            f"{currency} is the document's currency, priced by `price`: a price list is for "
            "another currency",
        )


def resolved_terms(settings: Mapping[str, Any]) -> Iterator[Finding]:
    """A resolved plan's problems with yearly meters and price lists, paths relative to it."""
    for where, price in _prices(settings):
        meter_prices = price.get("meters")
        if isinstance(meter_prices, Mapping):
            for meter, meter_price in meter_prices.items():
                if (
                    isinstance(meter_price, Mapping)
                    and meter_price.get("period") == "year"
                    and meter_price.get("mode") == "volume"
                ):
                    yield (
                        (*where, "meters", meter, "mode"),
                        "volume tiers reprice every unit of the year at the tier its total "
                        "reaches, which a month's invoice cannot bill without crediting the "
                        "months before: a yearly meter is priced in graduated tiers or packages",
                    )
        if where[0] == "price_lists":
            listed = {"price": price, "instances": settings.get("instances")}
            for relative, message in price_gaps(listed):
                yield (*where, *relative[1:]), message
