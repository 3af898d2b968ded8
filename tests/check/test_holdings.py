"""check/holdings.py: which instance rows a snapshot holds. A device ended with its holder's
seat (a release or an erasure: end reason `seat_released`) is gone at once, as a
deregistered one is; a lapsed one is kept, as ended, so a check names `lease_expired`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

from allotment.check import holdings

NOW = datetime(2026, 12, 3, 12, tzinfo=UTC)


def _row(name: str, detail: str, until: datetime) -> SimpleNamespace:
    return SimpleNamespace(
        k="i", name=name, detail=detail, tenant=None, until=until, weight=1, extra='["vm", "", {}]'
    )


def test_only_live_and_lapsed_instances_are_held() -> None:
    ahead = NOW + timedelta(minutes=10)
    rows = [
        _row("live", "live", ahead),
        _row("lapsed", "expired", NOW - timedelta(minutes=1)),
        _row("gone", "deregistered", ahead),
        _row("device", "seat_released", ahead),  # its lease was still ahead when it ended
    ]
    found, earliest = holdings.payload(rows, NOW)
    held = holdings.from_payload(found)
    assert sorted(held.instances) == ["lapsed", "live"]
    assert held.instances["lapsed"].ended and not held.instances["live"].ended
    assert held.instance_weight(NOW) == (1, 1)
    assert earliest == ahead
