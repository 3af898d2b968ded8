from __future__ import annotations

import time

from hypothesis import given
from hypothesis import strategies as st
from ulid import ULID

from allotment.kit import ids


def test_ulid_decodes_to_now_with_python_ulid() -> None:
    value = ids.ulid()
    assert len(value) == 26
    decoded = ULID.from_str(value.upper())
    assert abs(decoded.milliseconds - time.time_ns() // 1_000_000) < 1000


@given(st.integers(min_value=0, max_value=2**48 - 1), st.integers(min_value=0, max_value=2**80 - 1))
def test_encoding_matches_python_ulid(millis: int, randomness: int) -> None:
    value = millis << 80 | randomness
    expected = str(ULID.from_int(value)).lower()
    assert ids.encode(value) == expected


def test_ids_sort_by_creation_time() -> None:
    first = ids.new_id("dec")
    time.sleep(0.002)
    assert ids.new_id("dec") > first
