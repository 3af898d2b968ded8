"""Identifiers: sortable ULIDs with a readable prefix per kind (`key_…`, `dec_…`).

A ULID is 48 bits of Unix milliseconds then 80 random bits, written as 26 Crockford base32
characters (lowercase here), so ids sort by creation time. The encoder is hand-rolled
because /v1/check mints one per decision: ~2 µs against python-ulid's ~8 µs (measured side
by side). The randomness need not be cryptographic (ids are not secrets): `getrandbits`.
"""

from __future__ import annotations

import random
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
_PAIRS = tuple(a + b for a in _ALPHABET for b in _ALPHABET)  # 10 bits → 2 characters
_SHIFTS = tuple(range(115, 4, -10))  # twelve pairs below the top 3 bits


def encode(value: int) -> str:
    """A 128-bit integer as 26 Crockford base32 characters."""
    pairs = _PAIRS
    return (
        _ALPHABET[value >> 125]
        + "".join([pairs[(value >> shift) & 0x3FF] for shift in _SHIFTS])
        + _ALPHABET[value & 0x1F]
    )


def ulid() -> str:
    return encode((time.time_ns() // 1_000_000) << 80 | random.getrandbits(80))


def new_id(prefix: str) -> str:
    return f"{prefix}_{ulid()}"


def new_ids(prefix: str, count: int) -> list[str]:
    """`count` ids at once, for a batch's decisions: one ULID whose last 10 bits (its last
    two characters) count up from zero, so they are distinct, sort in the order given and
    cost one encode. Past 1,024 each is minted alone."""
    if count > 1024:
        return [new_id(prefix) for _ in range(count)]
    value = (time.time_ns() // 1_000_000) << 80 | random.getrandbits(70) << 10
    head = f"{prefix}_{encode(value)[:-2]}"
    return [head + _PAIRS[i] for i in range(count)]
