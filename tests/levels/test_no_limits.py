"""A level (an average, a percentile) is never limited, whatever was stored before the meter
became one: a contract's override on it is ignored by checks."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from allotment.contracts.limits import effective_limits
from allotment.contracts.terms import Override, Terms
from allotment.policy import compile_policy, validate
from tests.policy.documents import base

T0 = datetime(2026, 11, 3, tzinfo=UTC)


def catalog_with_level() -> Any:
    raw = base()
    raw["meters"]["hosts"] = {
        "event_type": "host.seen",
        "aggregation": "max",
        "property": "n",
        "percentile": 95,
    }
    result = validate(raw)
    assert result.document is not None, result.errors
    return compile_policy(result.document)


def test_an_override_on_a_level_limits_nothing() -> None:
    catalog = catalog_with_level()
    terms = Terms(
        plan="team",
        kind="standard",
        starts_at=T0,
        ends_at=None,
        overrides=(
            Override(reason="old", meter="hosts", limit=5),
            Override(reason="cap", meter="exports", limit=7),
        ),
    )
    limits = effective_limits(terms, catalog, at=T0).meters
    assert "hosts" not in limits
    assert limits["exports"].limit == 7 and limits["api_calls"].limit == 100_000
    assert catalog.meters["hosts"].percentile == Decimal(95)
