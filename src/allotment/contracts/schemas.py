"""Contract request and response bodies (docs/design.md, "The API").

These check what one value says about itself (types, ranges, the shape of an override).
What needs the catalog — plans, add-ons, features, meters, kind rules — is checked by
`terms.check_terms`, so a 422 reports every problem with its path either way.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import PydanticCustomError

from allotment.contracts.terms import (
    BurstTerms,
    InstanceTerms,
    Kind,
    Override,
    Quantities,
    SeatTerms,
    Terms,
)
from allotment.customers.schemas import check_attributes
from allotment.kit.clock import Instant
from allotment.policy.durations import Duration
from allotment.policy.paths import format_path
from allotment.policy.schemas import MAX_VERSION
from allotment.policy.spec import NAME_PATTERN, AttributeValue, Currency, Name

# Strict: a count written as "5" or 5.0 is a mistake to report, as the policy and the other
# routes report it, not a value to convert.
Count = Annotated[int, Field(ge=0, le=1_000_000_000, strict=True)]


def _not_blank(value: str) -> str:
    # A reason is read by an auditor and printed on the invoice line: spaces alone explain
    # nothing, so "   " is refused as "" is. The text is kept as written.
    if not value.strip():
        raise PydanticCustomError("blank_reason", "a reason must say something; it is blank")
    return value


Reason = Annotated[str, Field(min_length=1, max_length=500), AfterValidator(_not_blank)]


# Stored and shown with two decimals ("12.50"), however it was written.
def _not_a_float(value: object) -> object:
    # A JSON fraction arrives as a binary float (0.1 is not 0.1): a percent is written as an
    # integer or a quoted decimal, as amounts are everywhere.
    if isinstance(value, float):
        raise ValueError('write a fractional percent as a quoted decimal ("12.5"), not a number')
    return value


Percent = Annotated[
    Decimal,
    BeforeValidator(_not_a_float),
    Field(gt=0, le=100, max_digits=5, decimal_places=2),
    AfterValidator(lambda value: value.quantize(Decimal("0.01"))),
]

MAX_ADDONS = 100
MAX_OVERRIDES = 200
MAX_QUANTITY = 1_000_000


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- pieces ----------------------------------------------------------------------------------


class BurstIn(Body):
    extra: Count = Field(description="Seats allowed over the limit while the window is open.")
    window: Duration | None = Field(
        default=None,
        description="How long, from the first seat over the limit; default: the plan's.",
    )

    def to_terms(self) -> BurstTerms:
        return BurstTerms(extra=self.extra, window=self.window)


class SeatsIn(Body):
    limit: Count
    burst: BurstIn | None = Field(default=None, description="Default: the plan's burst.")

    def to_terms(self) -> SeatTerms:
        return SeatTerms(
            limit=self.limit, burst=self.burst.to_terms() if self.burst is not None else None
        )


class InstancesIn(Body):
    limit: Count = Field(description="Total kind weight of live instances.")

    def to_terms(self) -> InstanceTerms:
        return InstanceTerms(limit=self.limit)


class QuantitiesIn(Body):
    """What the contract bought, billed whatever is used (a `contracted` price basis)."""

    seats: Count | None = Field(default=None, description="Seats bought (named or floating).")
    instances: Count | None = Field(default=None, description="Instance licences bought.")

    @model_validator(mode="after")
    def _something(self) -> QuantitiesIn:
        if self.seats is None and self.instances is None:
            raise PydanticCustomError(
                "quantities_empty", "name at least one quantity (seats, instances), or send null"
            )
        return self

    def to_terms(self) -> Quantities:
        return Quantities(seats=self.seats, instances=self.instances)


class OverrideIn(Body):
    """`{feature, action: grant|revoke, expires_at?, reason}` or
    `{meter, limit, expires_at?, reason}`."""

    feature: Name | None = None
    action: Literal["grant", "revoke"] | None = None
    meter: Name | None = None
    limit: Count | None = None
    expires_at: Instant | None = None
    reason: Reason

    @model_validator(mode="after")
    def _one_form(self) -> OverrideIn:
        feature_form = self.feature is not None or self.action is not None
        meter_form = self.meter is not None or self.limit is not None
        if feature_form == meter_form:
            raise PydanticCustomError(
                "override_form",
                "an override is either {feature, action} or {meter, limit}",
            )
        if feature_form and (self.feature is None or self.action is None):
            raise PydanticCustomError(
                "override_form", "a feature override needs both `feature` and `action`"
            )
        if meter_form and (self.meter is None or self.limit is None):
            raise PydanticCustomError(
                "override_form", "a limit override needs both `meter` and `limit`"
            )
        return self

    def to_terms(self) -> Override:
        return Override(
            reason=self.reason,
            expires_at=self.expires_at,
            feature=self.feature,
            action=self.action,
            meter=self.meter,
            limit=self.limit,
        )


class AddonIn(Body):
    """An add-on bought `quantity` times; written as its bare name when bought once."""

    name: Name
    quantity: int = Field(default=1, ge=1, le=MAX_QUANTITY, strict=True)


def _addon_entry(value: Any) -> Any:
    return {"name": value} if isinstance(value, str) else value


# `"audit_pack"` or `{"name": "storage_pack", "quantity": 3}`: the bare name is the form every
# request took before quantities, and still means one.
AddonEntry = Annotated[
    AddonIn,
    BeforeValidator(_addon_entry),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": NAME_PATTERN},
                {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string", "pattern": NAME_PATTERN},
                        "quantity": {"type": "integer", "minimum": 1, "maximum": MAX_QUANTITY},
                    },
                    "required": ["name"],
                    "additionalProperties": False,
                },
            ],
            "description": "An add-on's name (bought once), or {name, quantity}.",
        }
    ),
]


def addon_terms(entries: list[AddonIn]) -> dict[str, Any]:
    """The `Terms` fields of a list of add-ons: their names, and the quantities above 1."""
    return {
        "addons": tuple(entry.name for entry in entries),
        "addon_quantities": tuple(
            sorted((entry.name, entry.quantity) for entry in entries if entry.quantity != 1)
        ),
    }


Attributes = dict[Name, AttributeValue]


# -- requests --------------------------------------------------------------------------------


class ContractCreate(Body):
    plan: Name
    kind: Kind = "standard"
    starts_at: Instant = Field(description="May lie in the past: deals are often recorded late.")
    ends_at: Instant | None = Field(
        default=None, description="Required for trial, educational and pilot contracts."
    )
    attributes: Attributes = Field(
        default_factory=dict,
        description="Immutable: merged over the plan's attributes (edition, region, "
        "support_level, ...) and fixed for the contract's life.",
    )
    seats: SeatsIn | None = Field(default=None, description="Default: the plan's seat pool.")
    instances: InstancesIn | None = Field(
        default=None, description="Default: the plan's instance pool."
    )
    quantities: QuantitiesIn | None = Field(
        default=None,
        description="Bought seats / instance licences; required by a plan whose price has "
        "basis contracted (docs/contracts.md).",
    )
    addons: list[AddonEntry] = Field(default_factory=list, max_length=MAX_ADDONS)
    overrides: list[OverrideIn] = Field(default_factory=list, max_length=MAX_OVERRIDES)
    discount_percent: Percent | None = Field(
        default=None,
        description="0 < p ≤ 100: required for educational and pilot contracts; a negotiated "
        "discount on a standard one (with discount_reason); refused on a trial.",
    )
    discount_reason: Reason | None = Field(
        default=None, description="Why the discount was given; required on a standard contract."
    )
    policy_version: int | None = Field(
        default=None,
        ge=1,
        le=MAX_VERSION,
        description="Pin a published policy version; default: follow the active one.",
    )
    currency: Currency | None = Field(
        default=None,
        description="ISO 4217 code the contract is billed in, fixed at creation; default: the "
        "policy's currency. Another needs a price list for it on the plan (docs/contracts.md).",
    )

    _attributes = field_validator("attributes")(check_attributes)


# Fields an amendment may change; anything else in the contract is fixed at creation.
AMENDABLE = (
    "plan",
    "seats",
    "instances",
    "quantities",
    "addons",
    "overrides",
    "discount_percent",
    "discount_reason",
    "ends_at",
    "policy_version",
)
IMMUTABLE = ("attributes", "kind", "starts_at", "currency")
NOT_NULL = ("plan", "addons", "overrides", "effective_at")


class ContractAmend(Body):
    """An amendment: the terms it changes, from `effective_at` (default now)."""

    plan: Name | None = None
    seats: SeatsIn | None = Field(default=None, description="null: back to the plan's pool.")
    instances: InstancesIn | None = Field(default=None, description="null: the plan's pool.")
    quantities: QuantitiesIn | None = Field(default=None, description="null: none bought.")
    addons: list[AddonEntry] | None = Field(default=None, max_length=MAX_ADDONS)
    overrides: list[OverrideIn] | None = Field(default=None, max_length=MAX_OVERRIDES)
    discount_percent: Percent | None = Field(default=None, description="null: no discount.")
    discount_reason: Reason | None = Field(
        default=None,
        description="Required with a changed discount_percent on a standard contract.",
    )
    ends_at: Instant | None = Field(default=None, description="null: open-ended.")
    policy_version: int | None = Field(
        default=None, ge=1, le=MAX_VERSION, description="null: unpin."
    )
    effective_at: Instant | None = Field(
        default=None,
        description="When the new terms take effect; default now (or, for a contract whose "
        "latest revision takes effect later, that moment). Never before the latest revision's.",
    )

    # Immutable: accepted only so that a 422 can name exactly which field was sent.
    attributes: SkipJsonSchema[dict[str, Any] | None] = None
    kind: SkipJsonSchema[Any] = None
    starts_at: SkipJsonSchema[Any] = None
    currency: SkipJsonSchema[Any] = None

    @field_validator(*NOT_NULL)
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        # Runs only for a value that was sent: an explicit null is refused, absence is fine.
        if value is None:
            raise PydanticCustomError("not_null", "may be left out, but not null")
        return value

    def immutable_problems(self) -> list[dict[str, str]]:
        problems: list[dict[str, str]] = []
        if "attributes" in self.model_fields_set:
            keys = sorted(self.attributes) if isinstance(self.attributes, dict) else []
            paths = [format_path(("attributes", key)) for key in keys] or ["attributes"]
            problems += [
                {
                    "path": path,
                    "message": "immutable: a contract's attributes are fixed at creation; "
                    "record a new contract to change them",
                }
                for path in paths
            ]
        for name in ("kind", "starts_at", "currency"):
            if name in self.model_fields_set:
                problems.append(
                    {
                        "path": name,
                        "message": f"immutable: a contract's {name} is fixed at creation",
                    }
                )
        return problems

    def changes(self) -> dict[str, Any]:
        """The amended terms as `Terms` field values (None where a field is cleared)."""
        out: dict[str, Any] = {}
        for name in AMENDABLE:
            if name not in self.model_fields_set:
                continue
            value = getattr(self, name)
            if name in ("seats", "instances", "quantities"):
                value = value.to_terms() if value is not None else None
            elif name == "addons":
                out.update(addon_terms(value))
                continue
            elif name == "overrides":
                value = tuple(o.to_terms() for o in value)
            out[name] = value
        if "discount_percent" in out and out["discount_percent"] is None:
            out.setdefault("discount_reason", None)  # no discount, nothing to give a reason for
        return out


class ContractConvert(Body):
    """A trial's conversion: the paid terms, from `at`. Terms left out keep the trial's;
    `quantities`, `seats` and `instances` sent as null clear them, as in an amendment."""

    plan: Name | None = Field(default=None, description="Default: the trial's plan.")
    addons: list[AddonEntry] | None = Field(
        default=None, max_length=MAX_ADDONS, description="Default: the trial's add-ons."
    )
    discount_percent: Percent | None = Field(
        default=None, description="A negotiated discount on the paid contract, with its reason."
    )
    discount_reason: Reason | None = Field(default=None, description="Why it was negotiated.")
    quantities: QuantitiesIn | None = Field(
        default=None, description="Bought seats / instance licences (basis contracted)."
    )
    seats: SeatsIn | None = Field(default=None, description="Default: the trial's seat terms.")
    instances: InstancesIn | None = Field(default=None, description="Default: the trial's.")
    ends_at: Instant | None = Field(
        default=None, description="The paid term's end; default open-ended."
    )
    at: Instant | None = Field(
        default=None,
        description="When the paid terms take effect; default now. At the latest when the "
        "trial ends; never before the latest revision takes effect.",
    )

    def changes(self) -> dict[str, Any]:
        """The terms it sets besides kind and end, as `Terms` field values."""
        out: dict[str, Any] = {}
        if self.plan is not None:
            out["plan"] = self.plan
        if self.addons is not None:
            out.update(addon_terms(self.addons))
        for name in ("discount_percent", "discount_reason"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        for name in ("quantities", "seats", "instances"):
            if name in self.model_fields_set:  # null clears, as in an amendment
                value = getattr(self, name)
                out[name] = value.to_terms() if value is not None else None
        return out


class ContractTerminate(Body):
    at: Instant | None = Field(
        default=None,
        description="When the term ends; default now. May lie in the past, not before the "
        "latest revision took effect.",
    )


def create_terms(data: ContractCreate, *, attributes: dict[str, Any]) -> Terms:
    return Terms(
        plan=data.plan,
        kind=data.kind,
        starts_at=data.starts_at,
        ends_at=data.ends_at,
        attributes=attributes,
        seats=data.seats.to_terms() if data.seats is not None else None,
        instances=data.instances.to_terms() if data.instances is not None else None,
        quantities=data.quantities.to_terms() if data.quantities is not None else None,
        overrides=tuple(o.to_terms() for o in data.overrides),
        discount_percent=data.discount_percent,
        discount_reason=data.discount_reason,
        policy_version=data.policy_version,
        currency=data.currency,
        **addon_terms(data.addons),
    )
