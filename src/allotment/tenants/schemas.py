from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from allotment.kit.identifiers import TenantKey
from allotment.policy.spec import Name
from allotment.tenants.quotas import Quotas

Count = Annotated[int, Field(ge=0, le=1_000_000_000)]


class TenantQuotas(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seats: Count | None = Field(default=None, description="Seats carved out of the contract's.")
    instances: Count | None = Field(
        default=None, description="Instance weight carved out of the contract's."
    )
    meters: dict[Name, Count] = Field(
        default_factory=dict, description="Per meter: units per the meter's limit period."
    )

    def to_quotas(self) -> Quotas:
        return Quotas(seats=self.seats, instances=self.instances, meters=dict(self.meters))


class TenantCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: TenantKey = Field(
        description="Unique per customer: lowercase letters, digits and -_. , at most 64."
    )
    quotas: TenantQuotas = Field(default_factory=TenantQuotas)


class TenantUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    quotas: TenantQuotas = Field(description="Replaces the tenant's quotas as a whole.")


class TenantRead(BaseModel):
    key: str
    customer: str
    quotas: TenantQuotas
    revision: int
    created_at: datetime
    updated_at: datetime
