"""The change stream's wire format (pure): Server-Sent Events, UTF-8, one JSON `data:` line.

The opening block, `retry: 1000` and (unless the client resumed) `id: <where it starts>`,
carries no data: EventSource records both and dispatches nothing. Then, per change:

    id: 12af09c3e0d1b2a4:1764742321456-0
    event: customer.changed
    data: {"customer":"acme","state_version":7,"committed_at":"2025-12-03T06:12:01.456000Z"}

and a `: heartbeat` comment whenever the stream was quiet for the heartbeat interval.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from allotment.kit.clock import isoformat

CUSTOMER_CHANGED = "customer.changed"
POLICY_PUBLISHED = "policy.published"
RESYNC = "resync"

HEARTBEAT = b": heartbeat\n\n"


def frame(event: str, data: dict[str, Any], event_id: str | None) -> bytes:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\n".encode() + b"data: " + orjson.dumps(data) + b"\n\n"


def opening(retry_ms: int, event_id: str | None) -> bytes:
    """The first block: the reconnection delay, and where a fresh stream starts."""
    head = f"retry: {retry_ms}\n"
    if event_id is not None:
        head += f"id: {event_id}\n"
    return (head + "\n").encode()


def heartbeat(event_id: str | None) -> bytes:
    """A comment; with `id:` when the journal moved past the last id this client got (events
    for other customers went by), so that it resumes from there, not from an id that may be
    trimmed by the time it reconnects."""
    if event_id is None:
        return HEARTBEAT
    return f": heartbeat\nid: {event_id}\n\n".encode()


def committed_at(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return isoformat(datetime.fromtimestamp(seconds, UTC))
