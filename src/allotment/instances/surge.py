"""instances.surge: a registration that takes the customer's live instances past the
policy's `alerts.instance_surge` (docs/webhooks.md, "Event types").

With `{factor, window, min}` set, each new registration counts, in one statement and under
the pool lock it already holds, the live instances now (its own included) and those live
one `window` ago (a row was live at t when registered by t and neither ended nor lapsed by
t). It fires when this registration made the rise true: live > factor × baseline and
live − baseline ≥ min, which one fewer instance did not satisfy. An alert goes out at most
once per fixed window (alerts/crossing.window_start). Without `instance_surge` nothing is
read.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from allotment.alerts import service as alerts
from allotment.alerts.crossing import number, window_start
from allotment.kit.clock import isoformat
from allotment.policy.catalog import Surge
from allotment.policy.durations import format_duration

_LIVE = text(
    "SELECT count(*) FILTER (WHERE ended_at IS NULL AND lease_expires_at > :now) AS live, "
    "count(*) FILTER (WHERE registered_at <= :then) AS baseline FROM instances "
    "WHERE customer_id = :c AND registered_at <= :now "
    "AND coalesce(ended_at, lease_expires_at) > :then"
)


async def on_registered(
    session: AsyncSession,
    *,
    surge: Surge | None,
    customer_id: int,
    customer_key: str,
    now: datetime,
) -> None:
    if surge is None:
        return
    then = now - surge.window
    row = (await session.execute(_LIVE, {"c": customer_id, "now": now, "then": then})).one()
    live, baseline = int(row.live), int(row.baseline)
    if not surge.surged(now=live, then=baseline) or surge.surged(now=live - 1, then=baseline):
        return
    start = window_start(now, surge.window)
    await alerts.fire(
        session,
        "instances.surge",
        {
            "customer": customer_key,
            "live": live,
            "baseline": baseline,
            "window": format_duration(surge.window),
            "factor": number(surge.factor),
            "min": surge.min,
        },
        customer_id=customer_id,
        customer_key=customer_key,
        subject="instances",
        threshold="",
        period=isoformat(start),
        at=now,
    )
