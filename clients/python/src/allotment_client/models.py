"""What the API answers, as typed values: a check's `Decision`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Decision:
    """A check's answer (docs/check.md). `local` is true when it was decided in this process
    from a verified artifact (then `decision_id` is None: the service logged nothing)."""

    allowed: bool
    reason: str
    feature: str
    customer: str
    detail: str | None = None
    missing: tuple[str, ...] = ()
    rule_reason: str | None = None
    limit: Mapping[str, Any] | None = None
    warnings: tuple[str, ...] = ()
    policy_version: int | None = None
    contract_revision: int | None = None
    decision_id: str | None = None
    stale: bool = False
    cache_ttl_s: float | None = None
    local: bool = False
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __bool__(self) -> bool:
        return self.allowed

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Decision:
        return cls(
            allowed=bool(data["allowed"]),
            reason=str(data["reason"]),
            feature=str(data.get("feature", "")),
            customer=str(data.get("customer", "")),
            detail=data.get("detail"),
            missing=tuple(data.get("missing") or ()),
            rule_reason=data.get("rule_reason"),
            limit=data.get("limit"),
            warnings=tuple(data.get("warnings") or ()),
            policy_version=data.get("policy_version"),
            contract_revision=data.get("contract_revision"),
            decision_id=data.get("decision_id"),
            stale=bool(data.get("stale", False)),
            cache_ttl_s=data.get("cache_ttl_s"),
            raw=data,
        )
