"""A contract's add-ons, pure: checked against a catalog, and what they add to its allowances,
each add-on's `raises` (docs/policy.md, "addons") times the quantity the contract bought of it
(docs/contracts.md, "Add-ons and quantities").

    check(terms, catalog, version=)  → [{path, message}]
    bought(terms, addons)   → ((Addon, quantity), ...)   the add-ons in the catalog, by name
    total(bought)           → Raises                     seats, instances, meter limits and
                                                         included units, summed

Checks (the seat and instance pools, meter limits: `limits.effective_limits`,
`check/payload.py`, `check/gates.py`) and pricing (included units: `billing/addons.py`) read
the same sums, so a customer with the add-on is both allowed past the plan's limit and priced
for it. An add-on a later policy removed adds nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from types import MappingProxyType
from typing import TYPE_CHECKING

from allotment.policy.catalog import NO_RAISES, Addon, Catalog, Raises

if TYPE_CHECKING:
    from allotment.contracts.terms import Terms


def check(terms: Terms, catalog: Catalog, *, version: int) -> list[dict[str, str]]:
    """Each add-on listed twice or missing from `catalog`, and each quantity above 1 of an
    add-on a quantity cannot change (priced per unit of use, or as a percentage)."""
    problems: list[dict[str, str]] = []
    seen: set[str] = set()
    for index, name in enumerate(terms.addons):
        path = f"addons[{index}]"
        if name in seen:
            problems.append({"path": path, "message": f"add-on '{name}' is listed twice"})
            continue
        seen.add(name)
        addon = catalog.addons.get(name)
        if addon is None:
            known = ", ".join(sorted(catalog.addons)) or "none"
            problems.append(
                {
                    "path": path,
                    "message": f"no add-on '{name}' in policy version {version} (add-ons: {known})",
                }
            )
            continue
        pricing = addon.pricing.kind if addon.pricing is not None else None
        currency = terms.currency or catalog.currency
        if currency != catalog.currency:  # priced by the add-ons' price lists
            if addon.price and currency not in addon.price_lists:
                problems.append(
                    {
                        "path": path,
                        "message": f"add-on '{name}' has no {currency} price in policy "
                        f"version {version}",
                    }
                )
            elif pricing in ("seat", "instance", "unit"):
                problems.append(
                    {
                        "path": path,
                        "message": f"add-on '{name}' is priced per {pricing} in "
                        f"{catalog.currency} only: a {currency} contract cannot buy it",
                    }
                )
        if terms.quantity(name) != 1 and pricing in ("unit", "percent"):
            how = "per unit of use" if pricing == "unit" else "as a percentage of other lines"
            problems.append(
                {
                    "path": f"{path}.quantity",
                    "message": f"add-on '{name}' is priced {how}: a quantity would change "
                    "nothing; buy it once",
                }
            )
    return problems


def bought(terms: Terms, addons: Mapping[str, Addon]) -> tuple[tuple[Addon, int], ...]:
    """The contract's add-ons that `addons` (a catalog's) has, with their quantities."""
    return tuple(
        (addons[name], terms.quantity(name))
        for name in dict.fromkeys(terms.addons)
        if name in addons
    )


def total(pairs: Iterable[tuple[Addon, int]]) -> Raises:
    seats = instances = 0
    limits: dict[str, int] = {}
    included: dict[str, int | Decimal] = {}
    for addon, quantity in pairs:
        raises = addon.raises
        if raises is NO_RAISES:
            continue
        seats += raises.seats * quantity
        instances += raises.instances * quantity
        for meter, units in raises.limits.items():
            limits[meter] = limits.get(meter, 0) + units * quantity
        for meter, free in raises.included.items():
            included[meter] = included.get(meter, 0) + free * quantity
    if not (seats or instances or limits or included):
        return NO_RAISES
    return Raises(
        seats=seats,
        instances=instances,
        limits=MappingProxyType(dict(sorted(limits.items()))),
        included=MappingProxyType(dict(sorted(included.items()))),
    )
