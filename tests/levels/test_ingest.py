"""A meter's filter and multiplier at ingest (usage/meters.py): what an event must carry, and
the counter deltas it makes, exact, with other meters on the same type unaffected."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from allotment.policy.catalog import Meter
from allotment.policy.meter_filter import compile_filter
from allotment.usage.events import Event
from allotment.usage.meters import Reading, by_type, data_problems, deltas, exact_sum
from allotment.usage.readings import reading

AT = datetime(2026, 11, 3, 19, 10, tzinfo=UTC)
WINDOWS = Meter(
    "windows_kb",
    "transfer",
    "sum",
    "bytes",
    filter=compile_filter("data.os == 'windows'"),
    multiplier=Decimal("0.001"),
)
ALL = Meter("all_kb", "transfer", "sum", "bytes", multiplier=Decimal("0.001"))
CALLS = Meter("calls", "transfer", "count", None, multiplier=Decimal(3))
GAUGE = Meter("storage", "storage.gauge", "average", "gb", multiplier=Decimal("0.5"))


def sent(data: Any, *, type: str = "transfer", n: int = 0) -> Reading:
    event = Event("tests", f"e{n}", type, "acme", AT, data, None, {})
    return Reading(customer_id=1, tenant=None, event=event)


def test_an_event_the_filter_leaves_out_need_not_carry_the_property() -> None:
    event = sent({"os": "linux"}).event
    assert data_problems(event, [WINDOWS]) == []
    # ...but a meter on the same type without a filter still needs it.
    assert [p["path"] for p in data_problems(event, [WINDOWS, ALL])] == ["data.bytes"]
    assert [p["path"] for p in data_problems(sent({"os": "windows"}).event, [WINDOWS])] == [
        "data.bytes"
    ]


def test_filter_and_multiplier_make_the_deltas() -> None:
    readings = [
        sent({"os": "windows", "bytes": 1500}, n=1),
        sent({"os": "linux", "bytes": 2500}, n=2),
        sent({"os": "windows", "bytes": 1000}, n=3),
    ]
    counters, _ = deltas(readings, by_type([WINDOWS, ALL, CALLS]))
    found = {key[2]: (delta.value, delta.events) for key, delta in counters.items()}
    assert found == {
        "windows_kb": (Decimal("2.5"), 2),
        "all_kb": (Decimal("5"), 3),
        "calls": (Decimal(9), 3),
    }


def test_an_average_meter_keeps_the_hours_greatest_reading_scaled() -> None:
    readings = [sent({"gb": 10}, type="storage.gauge", n=1), sent({"gb": 4}, type="storage.gauge")]
    counters, _ = deltas(readings, by_type([GAUGE]))
    (delta,) = counters.values()
    assert delta.is_max and delta.value == 5 and delta.events == 2


def test_reading_back_applies_the_same_filter_and_multiplier() -> None:
    assert reading(WINDOWS, AT, "", {"os": "linux", "bytes": 10}) is None
    found = reading(WINDOWS, AT, "", {"os": "windows", "bytes": 10})
    assert found is not None and found.value == Decimal("0.010")
    counted = reading(CALLS, AT, "", {})
    assert counted is not None and counted.value == 3


@settings(max_examples=200, deadline=None)
@given(
    amounts=st.lists(
        st.one_of(
            st.integers(min_value=0, max_value=10**15),
            st.decimals(min_value=0, max_value=10**12, places=3, allow_nan=False),
        ),
        min_size=1,
        max_size=20,
    ),
    multiplier=st.decimals(min_value=Decimal("1E-12"), max_value=10**9, places=12),
)
def test_scaling_is_exact_and_the_same_at_ingest_and_read_back(
    amounts: list[Any], multiplier: Decimal
) -> None:
    meter = Meter("m", "transfer", "sum", "bytes", multiplier=multiplier)
    data = [{"bytes": int(a) if isinstance(a, int) else float(a)} for a in amounts]
    counters, _ = deltas([sent(d, n=i) for i, d in enumerate(data)], by_type([meter]))
    (delta,) = counters.values()
    back = [reading(meter, AT, "", d) for d in data]
    assert delta.value == exact_sum(r.value for r in back if r is not None)
    expected = Fraction(multiplier) * sum(Fraction(str(d["bytes"])) for d in data)
    assert Fraction(delta.value) == expected  # nothing rounded on the way
