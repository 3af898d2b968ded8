"""Whole-plan checks on bought quantities and devices per seat, once inheritance is resolved
(docs/policy.md, "Bought quantities" and "Devices per seat"). Called by `checks.py`.

    problem                                         path
    included seats under basis contracted           plans.p.price.seat.included
    seat tiers under basis contracted               plans.p.price.seat.tiers
    overage / overage_unit without basis contracted plans.p.price.seat.overage
    instance_licence without a unit                 plans.p.price.instance_licence.unit
    devices_per_seat on concurrent seats            plans.p.seats.devices_per_seat
    devices_per_seat without an instance pool       plans.p.seats.devices_per_seat

A problem a plan inherits from the plan it extends is reported once, on that plan.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from allotment.policy.inheritance import ResolvedPlan
from allotment.policy.paths import Location

Finding = tuple[Location, str]


def problems(name: str, plan: ResolvedPlan, parent: ResolvedPlan | None) -> Iterator[Finding]:
    inherited = set(_problems(parent.settings)) if parent is not None else set()
    for relative, message in _problems(plan.settings):
        if (relative, message) not in inherited:
            yield ("plans", name, *relative), message


def _problems(settings: Mapping[str, Any]) -> Iterator[Finding]:
    price = settings.get("price")
    if isinstance(price, Mapping):
        seat = price.get("seat")
        if isinstance(seat, Mapping):
            yield from _priced(seat, ("price", "seat"), "seats")
            if seat.get("basis") == "contracted" and (seat.get("included") or 0) > 0:
                yield (
                    ("price", "seat", "included"),
                    "basis contracted bills the contract's quantities.seats, so no seats are "
                    "included: leave `included` out (or write 0)",
                )
            if seat.get("basis") == "contracted" and seat.get("tiers") is not None:
                yield (
                    ("price", "seat", "tiers"),
                    "basis contracted bills the contract's quantities.seats at `unit`; tiers "
                    "price a measured count: leave them out",
                )
        licence = price.get("instance_licence")
        if isinstance(licence, Mapping):
            if licence.get("unit") is None:
                yield (
                    ("price", "instance_licence", "unit"),
                    "required: the price of an instance licence per month",
                )
            yield from _priced(licence, ("price", "instance_licence"), "instances")
    seats = settings.get("seats")
    devices = seats.get("devices_per_seat") if isinstance(seats, Mapping) else None
    if isinstance(seats, Mapping) and devices is not None:
        where: Location = ("seats", "devices_per_seat")
        if seats.get("model") == "concurrent":
            yield (
                where,
                "devices per seat binds instances to a named seat's holder; concurrent "
                "(floating) seats have no holder between sessions: use model named",
            )
        if not isinstance(settings.get("instances"), Mapping):
            yield where, "the plan has no instance pool: a device is a registered instance"


def _priced(block: Mapping[str, Any], location: Location, quantity: str) -> Iterator[Finding]:
    if block.get("basis") == "contracted":
        return
    for key in ("overage", "overage_unit"):
        if block.get(key) is not None:
            yield (
                (*location, key),
                f"only with basis contracted (use above the contract's quantities.{quantity}); "
                f"the basis here is {block.get('basis') or 'peak'}",
            )
