"""One pass of the background jobs `allotment worker` runs in a loop.

    reap_sessions / reap_instances   end lapsed leases at their expiry, in batches
    purge_expired                    drop idempotency keys past their TTL
    webhooks                         drop settled webhook messages past their retention,
                                     close attempts a dead worker left open, drop previous
                                     secrets past their overlap (webhooks/sweep.py; the
                                     delivery loop itself runs beside this, cli.py)
    portal purge                     drop ended or expired portal sessions and links
    partitions                       this month's and the next two months' usage partitions
    retention                        the decision log and raw usage events past their
                                     retention (privacy/retention.py)
    contract alerts                  trials ending, renewals upcoming, terms and overrides
                                     that ended (contracts/deadlines.py), each fired once

Each job is a short transaction of its own, safe to run in any number of replicas at once
(the reapers skip rows another replica holds, and a row already ended no longer matches).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from allotment.config import Settings, get_settings
from allotment.contracts import deadlines
from allotment.db import session_scope
from allotment.instances.tasks import reap_instances
from allotment.kit.bus import Bus
from allotment.kit.clock import utcnow
from allotment.kit.idempotency import purge_expired
from allotment.portal import tasks as portal
from allotment.privacy import retention
from allotment.seats.tasks import reap_sessions
from allotment.usage import partitions
from allotment.webhooks import outbox, sweep

BATCH = 500
PARTITIONS_AHEAD = 2


async def run_once(
    maker: async_sessionmaker[AsyncSession],
    *,
    now: datetime | None = None,
    bus: Bus | None = None,
    settings: Settings | None = None,
) -> dict[str, int]:
    """Run every job once (each reaper and purge until it finds fewer than a batch); what
    each did. `settings` (default: the environment's) give the retentions."""
    settings = settings or get_settings()
    done = {
        "sessions_expired": 0,
        "instances_expired": 0,
        "idempotency_keys_purged": 0,
        "partitions_created": 0,
        "alerts_fired": 0,
        "webhook_messages_purged": 0,
        "webhook_attempts_interrupted": 0,
        "webhook_secrets_expired": 0,
        "portal_rows_purged": 0,
    }
    engine = maker.kw["bind"]
    done["partitions_created"] = await partitions.ensure_months(
        engine, partitions.months_ahead(now or utcnow(), PARTITIONS_AHEAD)
    )
    for name, reap in (("sessions_expired", reap_sessions), ("instances_expired", reap_instances)):
        while True:
            async with session_scope(maker, actor="system:reaper", bus=bus) as session:
                ended = await reap(session, now=now or utcnow(), batch=BATCH)
            done[name] += ended
            if ended < BATCH:
                break
    async with session_scope(maker) as session:
        done["idempotency_keys_purged"] = await purge_expired(session)
    done.update(await retention.purge(maker, settings, now=now or utcnow(), batch=BATCH))
    async with session_scope(maker, actor="system:alerts", bus=bus) as session:
        done["alerts_fired"] = await deadlines.run(session, now=now or utcnow())
    before = (now or utcnow()) - settings.webhooks_retention
    while True:
        async with session_scope(maker) as session:
            purged = await outbox.purge(session, before=before, batch=BATCH)
        done["webhook_messages_purged"] += purged
        if purged < BATCH:
            break
    for name, tidy in (
        ("webhook_attempts_interrupted", sweep.close_interrupted),
        ("webhook_secrets_expired", sweep.expire_previous_secrets),
    ):
        while True:
            async with session_scope(maker) as session:
                tidied = await tidy(session, now=now or utcnow(), batch=BATCH)
            done[name] += tidied
            if tidied < BATCH:
                break
    async with session_scope(maker) as session:
        done["portal_rows_purged"] = await portal.purge(session, now=now or utcnow())
    return done
