"""Whole-document checks of the `addons` section's pricing and allowances, each with a path
(docs/policy.md, "addons"). Run by `checks.check_document` on the raw document.

    check                                             path of the error
    priced more than one way                          addons.support
    percent without `of`, `of` without percent        addons.maintenance.of
    `of` names a line that cannot exist               addons.maintenance.of[1]
    (monthly: a yearly add-on's or a one-time fee's;
    yearly: any but one_time:<fee>, a yearly add-on's)
    per without a yearly price                        addons.licence.per
    per_unit of an unknown meter, or of one a plan    addons.gpu.per_unit.meter
      prices already
    raises a limit / included units of an unknown     addons.boost.raises.limits.foo,
      meter, or included units no line prices         addons.boost.raises.included.foo
    raises the limit of a level (average, percentile) addons.boost.raises.limits.storage
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator, Mapping
from typing import Any, TypeGuard

from allotment.policy.paths import Location
from allotment.policy.spec import NAME_PATTERN

Finding = tuple[Location, str]

PRICING_KEYS = ("price", "per_seat", "per_instance", "per_unit", "percent")
FIXED_LINES = (
    "base",
    "seats",
    "seats_overage",
    "burst",
    "instances",
    "instance_licences",
    "instance_licences_overage",
)
_NAME = re.compile(NAME_PATTERN)
_LINE = re.compile(r"^(?:(meter|addon|instances|one_time):)?([a-z][a-z0-9_]{0,62})$")
_FORMS = (
    "base, seats, seats_overage, burst, instances, instances:<kind>, instance_licences, "
    "instance_licences_overage, meter:<meter>, addon:<add-on> or one_time:<fee>"
)


def check_priced_addons(
    addons: Mapping[str, Any],
    *,
    meter_names: set[str],
    levels: set[str],
    plans: Mapping[str, Any],
) -> Iterator[Finding]:
    """`levels`: the meters whose value is a level (they take no limit: docs/usage.md)."""
    plan_meters = _plan_meters(plans)
    unit_meters = {
        spec["per_unit"]["meter"]
        for spec in addons.values()
        if isinstance(spec, Mapping)
        and isinstance(spec.get("per_unit"), Mapping)
        and isinstance(spec["per_unit"].get("meter"), str)
    }
    seats_priced = any(
        isinstance(plan, Mapping)
        and isinstance(plan.get("price"), Mapping)
        and plan["price"].get("seat") is not None
        for plan in plans.values()
    )
    for name, spec in addons.items():
        if not isinstance(spec, Mapping):
            continue
        where: Location = ("addons", name)
        written = [key for key in PRICING_KEYS if spec.get(key) is not None]
        if len(written) > 1:
            yield (
                where,
                (
                    f"an add-on is priced one way, not by {' and '.join(written)}: keep one, and "
                    "sell the other as an add-on of its own"
                ),
            )
        priced_otherwise = [key for key in written if key != "price"]
        for key in ("interval", "price_lists"):
            # A percentage may be yearly: of yearly and one-time lines (docs/billing.md).
            other = [k for k in priced_otherwise if key != "interval" or k != "percent"]
            if spec.get(key) is not None and other:
                yield (
                    (*where, key),
                    (f"{key} is of `price`, a fee; an add-on priced by {other[0]} takes none"),
                )
        if spec.get("per") is not None and (
            spec.get("interval") != "year" or spec.get("price") is None
        ):
            yield (
                (*where, "per"),
                "per multiplies a yearly fee (price with interval: year) by a bought quantity; "
                "a monthly fee per seat or instance is per_seat or per_instance with basis "
                "contracted",
            )
        if spec.get("percent") is not None and spec.get("of") is None:
            yield (*where, "of"), "required with percent: the line codes it is a percentage of"
        if spec.get("of") is not None and spec.get("percent") is None:
            yield (*where, "of"), "only with percent: the lines a percentage is taken of"
        yield from _check_of(
            name,
            spec.get("of"),
            addons=addons,
            meter_names=meter_names,
            priced_meters=set(plan_meters),
            priced_kinds=_plan_kinds(plans),
            seats_priced=seats_priced,
            priced_keys=_price_keys(plans),
            yearly=spec.get("interval") == "year",
            one_time=_one_time_fees(plans),
        )
        per_unit = spec.get("per_unit")
        meter = per_unit.get("meter") if isinstance(per_unit, Mapping) else None
        if _is_name(meter):
            location: Location = (*where, "per_unit", "meter")
            if meter not in meter_names:
                yield location, _unknown("meter", meter, meter_names)
            elif meter in plan_meters:
                yield (
                    location,
                    (
                        f"plan '{plan_meters[meter]}' prices meter '{meter}' already "
                        f"(price.meters.{meter}): an add-on prices a meter no plan prices, or its "
                        "units would be billed twice"
                    ),
                )
        raises = spec.get("raises")
        if not isinstance(raises, Mapping):
            continue
        for key in ("limits", "included"):
            entries = raises.get(key)
            if not isinstance(entries, Mapping):
                continue
            for meter in entries:
                location = (*where, "raises", key, meter)
                if not _is_name(meter):
                    continue
                if meter not in meter_names:
                    yield location, _unknown("meter", meter, meter_names)
                elif key == "limits" and meter in levels:
                    yield (
                        location,
                        (
                            f"meter '{meter}' is a level (an average or a percentile of hourly "
                            "values): it takes no limit to raise"
                        ),
                    )
                elif key == "included" and meter not in plan_meters and meter not in unit_meters:
                    yield (
                        location,
                        (
                            f"no plan or add-on prices meter '{meter}', so no line has included "
                            "units to raise"
                        ),
                    )


def _check_of(
    addon: str,
    codes: object,
    *,
    addons: Mapping[str, Any],
    meter_names: set[str],
    priced_meters: set[str],
    priced_kinds: set[str],
    seats_priced: bool,
    priced_keys: set[str],
    yearly: bool,
    one_time: set[str],
) -> Iterator[Finding]:
    seen: set[str] = set()
    for index, code in enumerate(_list(codes)):
        location: Location = ("addons", addon, "of", index)
        if not isinstance(code, str):
            yield location, f"a line code is a string, not {code!r}"
            continue
        found = _LINE.fullmatch(code)
        if found is None or (found.group(1) is None and code not in FIXED_LINES):
            yield location, f"'{code}' is not a line code: write {_FORMS}"
            continue
        if code in seen:
            yield location, f"'{code}' is listed twice"
            continue
        seen.add(code)
        kind, name = found.group(1), found.group(2)
        if yearly:
            yield from _check_yearly_of(location, kind, name, addon=addon, addons=addons)
            if kind == "one_time" and name not in one_time:
                yield location, _unknown("one-time fee", name, one_time)
            continue
        if kind == "one_time":
            yield (
                location,
                f"{code} is charged once, not monthly: a percentage of it is yearly (give "
                "this add-on interval: year)",
            )
        elif code == "seats" and not seats_priced:
            yield location, "no plan prices seats (price.seat), so there is no seats line"
        elif code == "seats_overage" and "contracted_seats" not in priced_keys:
            yield location, "no plan prices seats on basis contracted, so there is no " + code
        elif code.startswith("instance_licences") and "instance_licence" not in priced_keys:
            yield location, f"no plan has price.instance_licence, so there is no {code} line"
        elif kind == "meter" and name not in meter_names:
            yield location, _unknown("meter", name, meter_names)
        elif kind == "meter" and name not in priced_meters:
            yield (
                location,
                (
                    f"no plan prices meter '{name}', so there is no line {code} (an add-on's "
                    "per_unit line is addon:<its name>)"
                ),
            )
        elif kind == "instances" and name not in priced_kinds:
            yield (
                location,
                (
                    f"no plan prices instances of kind '{name}' apart (price.instances.kinds), so "
                    f"there is no line {code}"
                ),
            )
        elif kind == "addon" and name == addon:
            yield location, "an add-on is not a percentage of itself"
        elif kind == "addon" and name not in addons:
            yield location, _unknown("add-on", name, set(addons) - {addon})
        elif (
            kind == "addon"
            and isinstance(addons[name], Mapping)
            and (addons[name].get("interval") == "year")
        ):
            yield (
                location,
                f"add-on '{name}' is billed yearly (interval: year): a percentage of it is "
                "yearly too (give this add-on interval: year)",
            )
        elif kind == "addon" and _is_percent(addons[name]):
            yield (
                location,
                (f"add-on '{name}' is a percentage too: a percentage is taken of the other lines"),
            )


def _check_yearly_of(
    location: Location, kind: str | None, name: str, *, addon: str, addons: Mapping[str, Any]
) -> Iterator[Finding]:
    """A yearly percentage is of the full price of yearly and one-time lines, so it can be
    charged each contract year whatever month those lines fall in (docs/billing.md)."""
    if kind == "one_time":
        return
    if kind != "addon":
        yield (
            location,
            "a yearly percentage (interval: year) is of one-time fees and yearly add-ons: "
            "write one_time:<fee> or addon:<add-on>",
        )
    elif name == addon:
        yield location, "an add-on is not a percentage of itself"
    elif name not in addons:
        yield location, _unknown("add-on", name, set(addons) - {addon})
    else:
        spec = addons[name]
        if not isinstance(spec, Mapping) or spec.get("interval") != "year" or _is_percent(spec):
            yield (
                location,
                f"add-on '{name}' is not a yearly fee (price with interval: year): a yearly "
                "percentage is of one-time fees and yearly add-on fees",
            )


def _one_time_fees(plans: Mapping[str, Any]) -> set[str]:
    """The one-time fees some plan names (`price.one_time`)."""
    found: set[str] = set()
    for spec in plans.values():
        price = spec.get("price") if isinstance(spec, Mapping) else None
        fees = price.get("one_time") if isinstance(price, Mapping) else None
        if isinstance(fees, Mapping):
            found.update(fee for fee in fees if isinstance(fee, str))
    return found


def _price_keys(plans: Mapping[str, Any]) -> set[str]:
    """Which of the priced quantities some plan has: `instance_licence`, and
    `contracted_seats` for a seat price on basis contracted."""
    found: set[str] = set()
    for spec in plans.values():
        price = spec.get("price") if isinstance(spec, Mapping) else None
        if not isinstance(price, Mapping):
            continue
        if price.get("instance_licence") is not None:
            found.add("instance_licence")
        seat = price.get("seat")
        if isinstance(seat, Mapping) and seat.get("basis") == "contracted":
            found.add("contracted_seats")
    return found


def _plan_kinds(plans: Mapping[str, Any]) -> set[str]:
    """The instance kinds some plan prices apart (`price.instances.kinds`)."""
    found: set[str] = set()
    for spec in plans.values():
        price = spec.get("price") if isinstance(spec, Mapping) else None
        instances = price.get("instances") if isinstance(price, Mapping) else None
        kinds = instances.get("kinds") if isinstance(instances, Mapping) else None
        if isinstance(kinds, Mapping):
            found.update(kind for kind in kinds if isinstance(kind, str))
    return found


def _plan_meters(plans: Mapping[str, Any]) -> dict[str, str]:
    """Each meter a plan prices (written there; a plan that extends inherits it), with the
    first such plan."""
    found: dict[str, str] = {}
    for plan, spec in plans.items():
        price = spec.get("price") if isinstance(spec, Mapping) else None
        meters = price.get("meters") if isinstance(price, Mapping) else None
        if isinstance(meters, Mapping):
            for meter in meters:
                if isinstance(meter, str):
                    found.setdefault(meter, plan)
    return found


def _is_percent(spec: object) -> bool:
    return isinstance(spec, Mapping) and spec.get("percent") is not None


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _is_name(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and _NAME.fullmatch(value) is not None


def _unknown(kind: str, name: str, known: set[str]) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=1)
    return f"unknown {kind} '{name}'" + (f" (did you mean '{close[0]}'?)" if close else "")
