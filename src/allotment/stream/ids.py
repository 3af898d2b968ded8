"""Event ids of the change stream (pure): `<epoch>:<journal position>`.

A journal position is a Redis stream id, `<ms>-<seq>`: global across workers, increasing.
The epoch names one life of the journal (hub.py): an id from another one means nothing in
this one. `12af09c3e0d1b2a4:1764742321123-0` is the first entry of millisecond
1764742321123 in epoch `12af09c3e0d1b2a4`.
"""

from __future__ import annotations

import re

Position = tuple[int, int]  # (milliseconds, sequence) of a Redis stream id

ORIGIN: Position = (0, 0)  # before every entry
_ID = re.compile(r"([0-9a-f]{1,64}):([0-9]{1,20})-([0-9]{1,20})")
_MAX = 2**64 - 1


def position(raw: bytes | str) -> Position:
    """The position of a Redis stream id as Redis returns it (`b"1764742321123-0"`)."""
    text = raw.decode() if isinstance(raw, bytes) else raw
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def redis_id(at: Position) -> str:
    return f"{at[0]}-{at[1]}"


def event_id(epoch: str, at: Position) -> str:
    return f"{epoch}:{at[0]}-{at[1]}"


def parse(text: str) -> tuple[str, Position] | None:
    """(epoch, position) of an event id, or None for anything this service never sent."""
    found = _ID.fullmatch(text.strip())
    if found is None:
        return None
    ms, seq = int(found.group(2)), int(found.group(3))
    if ms > _MAX or seq > _MAX:
        return None
    return found.group(1), (ms, seq)
