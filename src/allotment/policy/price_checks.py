"""Whole-document checks of a plan's `price` block: tiers, alternatives, modes, priced kinds.

Called from `checks.py` (the one pass that reports every error), on the raw document: a
value the models reject is skipped here rather than reported twice. docs/policy.md lists
every error.

    check                                      path of the error
    tier order (meters and seat tiers)         plans.team.price.meters.api_calls.tiers[1].up_to
    unit and tiers written together            plans.team.price.seat.tiers
    tiers and package written together         plans.team.price.meters.storage.package
    resolved: no unit nor tiers                plans.team.price.seat.unit
    resolved: no tiers nor package             plans.team.price.meters.storage.tiers
    resolved: mode without tiers               plans.team.price.seat.mode, ...meters.storage.mode
    resolved: a priced kind the plan refuses   plans.team.price.instances.kinds.gpu
    credits: a line no wallet pays             plans.team.price.credits.applies_to[0]
    resolved: credits for a meter not priced   plans.team.price.credits.applies_to[1]
    resolved: rollover without monthly         plans.team.price.credits.rollover
    resolved: per for no one-time fee          plans.team.price.one_time_per.setup
    resolved: minimum_period without minimum   plans.team.price.minimum_period
    resolved: an allowance's meter not priced   plans.team.price.allowances.ci.draw[1].meter
      monthly, or drawing twice
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from allotment.policy.paths import Location

Finding = tuple[Location, str]


def check_tiers(tiers: object, *, location: Location) -> Iterator[Finding]:
    """Only the last tier may omit `up_to`, and `up_to` strictly increases."""
    if not isinstance(tiers, list):
        return
    previous: int | None = None
    last = len(tiers) - 1
    for index, tier in enumerate(tiers):
        if not isinstance(tier, Mapping):
            continue
        up_to = tier.get("up_to")
        if up_to is None:
            if index < last:
                yield (*location, index, "up_to"), "required: only the last tier may omit up_to"
            continue
        if not isinstance(up_to, int) or isinstance(up_to, bool):
            continue
        if previous is not None and up_to <= previous:
            yield (
                (*location, index, "up_to"),
                f"must be greater than the previous tier's up_to ({previous})",
            )
        previous = up_to


# The line kinds a credit wallet can pay (docs/billing.md, "Credit wallets"), with those of
# bought quantities (seats_overage, instance_licences, instance_licences_overage);
# adjustments (credit:trial, discount:*) and the credits line itself are not among them.
CREDIT_LINES = (
    "base",
    "seats",
    "seats_overage",
    "burst",
    "instances",
    "instance_licences",
    "instance_licences_overage",
    "meter",
    "addon",
    "minimum",
    "one_time",
)
_NAMED = ("meter", "addon", "one_time")  # their codes carry a name: meter:<name>


def _check_credit_lines(credits: object, *, location: Location) -> Iterator[Finding]:
    entries = credits.get("applies_to") if isinstance(credits, Mapping) else None
    if not isinstance(entries, list):
        return
    for index, entry in enumerate(entries):
        if not isinstance(entry, str):
            continue
        head, colon, name = entry.partition(":")
        kind = head.rstrip("*")
        if kind not in CREDIT_LINES or (head.endswith("*") and colon):
            yield (
                (*location, "applies_to", index),
                f"'{entry}' is no line a wallet pays: a code or prefix of "
                f"{', '.join(CREDIT_LINES)} (e.g. meter:*, instances:gpu)",
            )
        elif kind in _NAMED and not head.endswith("*") and not name:
            yield (
                (*location, "applies_to", index),
                f"'{entry}' names no {kind}: write {kind}:<name>, or {kind}:* for every one",
            )


def check_written(price: object, *, location: Location) -> Iterator[Finding]:
    """What one plan's own `price` block says about itself (before inheritance)."""
    if not isinstance(price, Mapping):
        return
    yield from _check_credit_lines(price.get("credits"), location=(*location, "credits"))
    seat = price.get("seat")
    if isinstance(seat, Mapping):
        yield from check_tiers(seat.get("tiers"), location=(*location, "seat", "tiers"))
        if seat.get("unit") is not None and seat.get("tiers") is not None:
            yield (
                (*location, "seat", "tiers"),
                "a seat is priced by unit or by tiers, not both: remove one",
            )
    meters = price.get("meters")
    if isinstance(meters, Mapping):
        for meter, meter_price in meters.items():
            if not isinstance(meter_price, Mapping):
                continue
            where: Location = (*location, "meters", meter)
            yield from check_tiers(meter_price.get("tiers"), location=(*where, "tiers"))
            if meter_price.get("tiers") is not None and meter_price.get("package") is not None:
                yield (
                    (*where, "package"),
                    "a meter is priced by tiers or by package, not both: remove one",
                )


def price_gaps(settings: Mapping[str, Any]) -> Iterator[Finding]:
    """A resolved plan's price problems, paths relative to the plan (`price`, ...)."""
    price = settings.get("price")
    if not isinstance(price, Mapping):
        return
    seat = price.get("seat")
    if isinstance(seat, Mapping):
        if seat.get("unit") is None and not seat.get("tiers"):
            yield ("price", "seat", "unit"), "required: the price of a seat"
        elif seat.get("mode") is not None and not seat.get("tiers"):
            yield (
                ("price", "seat", "mode"),
                "a mode applies to seat tiers; seats priced by unit have none",
            )
    meter_prices = price.get("meters")
    if isinstance(meter_prices, Mapping):
        for meter, meter_price in meter_prices.items():
            if not isinstance(meter_price, Mapping):
                continue
            if meter_price.get("package") is not None:
                if meter_price.get("mode") is not None:
                    yield (
                        ("price", "meters", meter, "mode"),
                        "a mode applies to tiers; a meter priced by package has none",
                    )
            elif not meter_price.get("tiers"):
                yield ("price", "meters", meter, "tiers"), "required: at least one tier"
    if price.get("minimum_period") is not None and price.get("minimum") is None:
        yield (
            ("price", "minimum_period"),
            "minimum_period is of price.minimum: write the minimum too",
        )
    fees, per = price.get("one_time"), price.get("one_time_per")
    for fee in per if isinstance(per, Mapping) else ():
        if not isinstance(fees, Mapping) or fee not in fees:
            yield (
                ("price", "one_time_per", fee),
                f"the plan has no one-time fee '{fee}' (price.one_time) to charge per unit",
            )
    yield from _allowance_gaps(price.get("allowances"), meter_prices)
    yield from _priced_kinds(price.get("instances"), settings.get("instances"))
    yield from _credit_gaps(price.get("credits"), meter_prices)


def _allowance_gaps(allowances: object, meter_prices: object) -> Iterator[Finding]:
    """Each meter drawing on a shared allowance is priced monthly by the plan, and draws on
    one allowance once."""
    if not isinstance(allowances, Mapping):
        return
    priced = meter_prices if isinstance(meter_prices, Mapping) else {}
    drawn: dict[str, str] = {}
    for name, spec in allowances.items():
        draw = spec.get("draw") if isinstance(spec, Mapping) else None
        for index, entry in enumerate(draw if isinstance(draw, list) else []):
            meter = entry.get("meter") if isinstance(entry, Mapping) else None
            if not isinstance(meter, str):
                continue
            location: Location = ("price", "allowances", name, "draw", index, "meter")
            meter_price = priced.get(meter)
            if meter in drawn:
                yield (
                    location,
                    f"meter '{meter}' draws on allowance '{drawn[meter]}' already: a meter "
                    "draws on one allowance, once",
                )
            elif not isinstance(meter_price, Mapping):
                yield location, f"the plan prices no meter '{meter}' (price.meters) to draw"
            elif meter_price.get("period") == "year":
                yield (
                    location,
                    f"meter '{meter}' is priced over the contract year (period: year); a "
                    "shared allowance is monthly",
                )
            drawn.setdefault(meter, name)


def _credit_gaps(credits: object, meter_prices: object) -> Iterator[Finding]:
    if not isinstance(credits, Mapping):
        return
    if credits.get("rollover") and not credits.get("monthly"):
        yield (
            ("price", "credits", "rollover"),
            "a rollover keeps the monthly grant longer: write price.credits.monthly too",
        )
    entries = credits.get("applies_to")
    priced = meter_prices if isinstance(meter_prices, Mapping) else {}
    for index, entry in enumerate(entries if isinstance(entries, list) else []):
        if isinstance(entry, str) and entry.startswith("meter:") and not entry.endswith("*"):
            meter = entry.removeprefix("meter:")
            if meter not in priced:
                yield (
                    ("price", "credits", "applies_to", index),
                    f"the plan prices no meter '{meter}': no {entry} line to pay",
                )


def _priced_kinds(priced: object, pool: object) -> Iterator[Finding]:
    kinds = priced.get("kinds") if isinstance(priced, Mapping) else None
    if not isinstance(kinds, Mapping):
        return
    allowed = pool.get("kinds") if isinstance(pool, Mapping) else None
    for kind in kinds:
        location: Location = ("price", "instances", "kinds", kind)
        if not isinstance(pool, Mapping):
            yield location, f"the plan has no instances block: no instance of kind '{kind}' runs"
        elif isinstance(allowed, Mapping) and allowed and kind not in allowed:
            yield (
                location,
                f"kind '{kind}' is not one the plan's instances.kinds allows "
                f"({', '.join(sorted(str(k) for k in allowed))})",
            )
