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


def test_ids_minted_together_are_distinct_ulids_in_order() -> None:
    minted = ids.new_ids("dec", 1024)
    assert len(set(minted)) == 1024
    assert minted == sorted(minted)
    values = [ULID.from_str(m.removeprefix("dec_").upper()) for m in minted]
    assert abs(values[0].milliseconds - time.time_ns() // 1_000_000) < 1000
    assert [int(v) & 0x3FF for v in values] == list(range(1024))
    assert len({int(v) >> 10 for v in values}) == 1  # one ULID, counted up in its last bits


def test_more_ids_than_the_count_holds_are_minted_one_by_one() -> None:
    minted = ids.new_ids("dec", 1500)
    assert len(set(minted)) == 1500
    assert ids.new_ids("dec", 0) == []
