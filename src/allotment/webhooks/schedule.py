"""When a failed delivery is tried again; pure (docs/webhooks.md, "Retries").

Exponential back-off with full jitter: after the n-th failed attempt the next waits a
uniformly random time in [0, min(cap, base * 2^(n-1))], so many endpoints failing together
do not retry in step. Retries stop once the retry window has passed since the message was
written (or since its last manual retry): the delivery is then `failed`.

A 429, 502 or 504 answer slows the endpoint: none of its deliveries is sent before
`Retry-After` (seconds or an HTTP date, at most `MAX_RETRY_AFTER_S`), or the configured pause
when the answer names none.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

SLOWING = frozenset({429, 502, 504})
GONE = 410
MAX_RETRY_AFTER_S = 3600.0


def backoff_s(
    attempts: int, *, base_s: float, cap_s: float, rng: random.Random | None = None
) -> float:
    """The delay after `attempts` failed attempts (1 or more)."""
    ceiling = min(cap_s, base_s * 2.0 ** min(max(attempts - 1, 0), 60))
    return (rng or random).uniform(0.0, ceiling)


def retry_after_s(value: str | None, *, now: datetime) -> float | None:
    """A Retry-After header in seconds (delta-seconds or an HTTP date), within
    [0, MAX_RETRY_AFTER_S]; None when absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(int(value))
    except ValueError:
        try:
            moment = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        seconds = (moment - now).total_seconds()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


def next_attempt(
    *,
    now: datetime,
    attempts: int,
    window_start: datetime,
    base_s: float,
    cap_s: float,
    window_s: float,
    not_before: datetime | None = None,
) -> datetime | None:
    """When to try again, or None when the retry window is spent."""
    due = now + timedelta(seconds=backoff_s(attempts, base_s=base_s, cap_s=cap_s))
    if not_before is not None and not_before > due:
        due = not_before
    if due > window_start + timedelta(seconds=window_s):
        return None
    return due
