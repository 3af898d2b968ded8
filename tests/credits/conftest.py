"""Previews here are taken a second after the writes before them.

A preview's default `as_of` is now truncated to the second, and only what was recorded at or
before it counts (docs/billing.md, "Taken at an instant"): a preview asked for in the same
second as the contract, seat or event it should show would leave them out. A person never
notices; a test is that fast. So the preview and wallet routes' clocks run one second ahead here.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest

from allotment.billing import endpoints
from allotment.credits import endpoints as credit_endpoints
from allotment.kit.clock import utcnow


def a_second_later() -> datetime:
    return utcnow() + timedelta(seconds=1)


@pytest.fixture(autouse=True)
def previews_a_second_later(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(endpoints, "utcnow", a_second_later)
    monkeypatch.setattr(credit_endpoints, "utcnow", a_second_later)
    yield
