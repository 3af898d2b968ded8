"""The price blocks of the policy document: pydantic models of what a plan's `price` (or a
`price_lists` entry) and an add-on's per-seat, per-instance and per-unit prices say
(docs/policy.md, docs/billing.md).

    PriceSpec                     a plan's price
     ├── base, interval, minimum, minimum_period, burst_seat_day, instance_hour
     ├── seat: SeatPriceSpec      by unit or in tiers (TierSpec), on a basis
     ├── instance_licence: InstanceLicencePriceSpec
     ├── meters: {name: MeterPriceSpec}     tiers or a package (PackageSpec), month or year
     ├── allowances: {name: AllowanceSpec}  included units the meters draw (AllowanceDrawSpec)
     ├── instances: InstancePriceSpec       kind → rate
     ├── one_time, one_time_per
     └── credits: CreditsSpec     the monthly grant and the lines the wallet pays
    AddonSeatPriceSpec, AddonInstancePriceSpec, AddonUnitPriceSpec   an add-on's prices

As in document.py, these check what one value says about itself (an amount's digits for the
currency `validation.validate` passes them); what needs the whole document (tier order, a
unit or tiers once inheritance is resolved, the lines credits pay) is checked by
price_checks.py, from checks.py.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from allotment.policy.money import Money, Rate
from allotment.policy.quantities import Multiplier, Units
from allotment.policy.spec import MAX_VOLUME, BoughtQuantity, Name, NonNegative, Spec


class TierSpec(Spec):
    up_to: Annotated[int, Field(gt=0, le=MAX_VOLUME)] | None = Field(
        default=None, description="The total count this tier prices up to; omitted: no bound."
    )
    unit: Rate
    flat: Money | None = Field(
        default=None,
        description="Charged once when the tier is reached: graduated, every tier reached; "
        "volume, the tier the total reaches.",
    )


TierModeSpec = Literal["graduated", "volume"]
UsageBasis = Literal["peak", "average", "end"]
Interval = Literal["month", "year"]


class SeatPriceSpec(Spec):
    unit: Money | None = Field(default=None, description="Price per seat above `included`.")
    tiers: list[TierSpec] | None = Field(
        default=None, min_length=1, description="Seat tiers instead of `unit` (one or the other)."
    )
    mode: TierModeSpec | None = Field(default=None, description="Of `tiers`; default graduated.")
    basis: Literal["peak", "average", "end", "contracted"] | None = Field(
        default=None,
        description="Default peak; contracted: the contract's `quantities.seats` "
        "(docs/billing.md).",
    )
    included: NonNegative | None = Field(default=None, description="Seats in the base fee.")
    overage: UsageBasis | None = Field(
        default=None,
        description="basis contracted only: how use above the contracted seats is measured "
        "(default peak).",
    )
    overage_unit: Money | None = Field(
        default=None,
        description="basis contracted only: the price of a seat over the contracted ones "
        "(default `unit`).",
    )


class InstanceLicencePriceSpec(Spec):
    unit: Money | None = Field(default=None, description="Per instance licence and month.")
    basis: Literal["peak", "average", "end", "contracted"] | None = Field(
        default=None,
        description="Default peak (of live instances); contracted: the contract's "
        "`quantities.instances`.",
    )
    overage: UsageBasis | None = Field(
        default=None, description="basis contracted only: how use above it is measured."
    )
    overage_unit: Money | None = Field(
        default=None, description="basis contracted only: default `unit`."
    )


class PackageSpec(Spec):
    size: Annotated[int, Field(gt=0, le=MAX_VOLUME)] = Field(description="Units per package.")
    price: Money = Field(description="Per package started.")


class MeterPriceSpec(Spec):
    included: Units | None = Field(
        default=None, description='Free units (default 0): an integer, or a decimal as "0.5".'
    )
    tiers: list[TierSpec] | None = Field(default=None, min_length=1)
    mode: TierModeSpec | None = Field(default=None, description="Of `tiers`; default graduated.")
    package: PackageSpec | None = Field(
        default=None, description="Per started package of units, instead of `tiers`."
    )
    period: Interval | None = Field(
        default=None,
        description="Default month; year: `included` and the tiers count over the contract "
        "year, billed month by month as the year's use crosses them.",
    )


class AllowanceDrawSpec(Spec):
    meter: Name = Field(description="A meter the plan prices monthly (price.meters).")
    rate: Multiplier | None = Field(
        default=None, description="Allowance units one unit of the meter uses (default 1)."
    )


class AllowanceSpec(Spec):
    included: Units = Field(description="Allowance units a month, shared by the meters.")
    draw: list[AllowanceDrawSpec] = Field(
        min_length=1, description="The meters that draw on it, in the order they draw."
    )


class InstancePriceSpec(Spec):
    kinds: dict[Name, Rate] | None = Field(
        default=None,
        description="Kind → price per lease-hour, unweighted; kinds not named: instance_hour.",
    )


# A line code (`burst`, `meter:api_calls`) or a prefix of codes ending in `*` (`meter:*`).
CREDIT_LINE_PATTERN = r"^[a-z][a-z_]*(:([a-z][a-z0-9_]{0,62}|\*)?)?\*?$"
CreditLine = Annotated[str, StringConstraints(pattern=CREDIT_LINE_PATTERN, max_length=80)]


class CreditsSpec(Spec):
    monthly: Money | None = Field(
        default=None, description="Credits granted at the start of each month on the plan."
    )
    rollover: Annotated[int, Field(ge=0, le=120)] | None = Field(
        default=None,
        description="Months a monthly grant stays valid after its own (default 0).",
    )
    applies_to: list[CreditLine] | None = Field(
        default=None,
        min_length=1,
        description="The lines the wallet pays: codes, or prefixes ending in `*`. Default: "
        "meter:*, instances, instances:*, burst.",
    )
    enforce: bool | None = Field(
        default=None,
        description="Deny metered features whose line the wallet pays once it is empty "
        "(credits_exhausted). Default false.",
    )


class PriceSpec(Spec):
    base: Money | None = Field(default=None, description="Monthly fee, prorated by active days.")
    seat: SeatPriceSpec | None = None
    burst_seat_day: Money | None = Field(default=None, description="Per seat-day over the limit.")
    instance_hour: Rate | None = Field(
        default=None, description="Per lease-hour and unit of kind weight."
    )
    instance_licence: InstanceLicencePriceSpec | None = Field(
        default=None, description="A per-instance licence fee per month (docs/billing.md)."
    )
    meters: dict[Name, MeterPriceSpec] | None = None
    allowances: dict[Name, AllowanceSpec] | None = Field(
        default=None,
        description="Name → included units shared by several meters, each drawing at its rate, "
        "in order (docs/billing.md).",
    )
    instances: InstancePriceSpec | None = None
    minimum: Money | None = Field(
        default=None, description="Least billed per month (prorated), as a `minimum` line."
    )
    minimum_period: Interval | None = Field(
        default=None,
        description="Of `minimum`: month (default), or year: the least billed per contract "
        "year, trued up in the month the year (or the contract) ends.",
    )
    one_time: dict[Name, Money] | None = Field(
        default=None, description="Name → fee, charged once when the contract starts on the plan."
    )
    one_time_per: dict[Name, BoughtQuantity] | None = Field(
        default=None,
        description="One-time fee name → seats or instances: the fee is charged once per unit "
        "of the contract's quantities.seats or quantities.instances.",
    )
    interval: Interval | None = Field(
        default=None,
        description="Of `base`: month (default), or year: a year's fee, charged in full once "
        "per contract year.",
    )
    credits: CreditsSpec | None = Field(
        default=None, description="Prepaid credits: a monthly grant, what the wallet pays."
    )


class AddonSeatPriceSpec(Spec):
    unit: Money = Field(description="Per seat a month, prorated like the plan's seats line.")
    basis: Literal["peak", "average", "end", "contracted"] | None = Field(
        default=None,
        description="Default: the plan's seat basis, else peak; contracted: the seats bought, "
        "or the peak held when more.",
    )


class AddonInstancePriceSpec(Spec):
    unit: Money = Field(description="Per live instance a month, prorated like a fee.")
    basis: Literal["peak", "average", "end", "contracted", "p95", "p99"] | None = Field(
        default=None,
        description="Default peak; contracted: the instance licences bought, or the peak "
        "held when more; p95, p99: that percentile of the hourly peaks of live instances.",
    )


class AddonUnitPriceSpec(Spec):
    meter: Name = Field(description="The meter whose units it prices (one no plan prices).")
    unit: Rate
