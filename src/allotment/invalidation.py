"""The one module through which committed changes invalidate cached entitlement state.

    bump_customer(session, customer_id=…, customer_key=…)   a contract, override, tenant,
                                                            allocation or usage change
    announce_policy(session, version=…)                      publish or rollback (the caller
                                                            bumped policy_state.global_version)
    announce_signing_keys(session)                           keys made, rotated or retired
                                                            (signing/service.py)

Each change moves a version in PostgreSQL inside the caller's transaction (so the cache key
of a snapshot built afterwards differs) and, after commit, broadcasts on the bus so every
worker drops what it holds. Same worker: at once. Other workers: as soon as Redis delivers.
"""

from __future__ import annotations

import time

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from allotment.db import after_commit
from allotment.kit.bus import Bus

CUSTOMER_TOPIC = "customer_state"
POLICY_TOPIC = "policy_version"
SIGNING_TOPIC = "signing_keys"


def _broadcast(session: AsyncSession, topic: str, payload: str) -> None:
    bus = session.info.get("bus")
    if bus is not None:  # none: a script's session; workers then rely on their cache TTL
        after_commit(session, lambda: _publish(bus, topic, payload))


async def _publish(bus: Bus, topic: str, payload: str) -> None:
    # The commit time rides along so receivers can measure the invalidation lag.
    await bus.publish(topic, f"{payload} {time.time():.6f}")


async def customer_committed(bus: Bus, customer_key: str) -> None:
    """What `bump_customer` broadcasts after commit, for a write committed outside a session
    (the seat fast path's one autocommit statement bumped the version itself)."""
    await _publish(bus, CUSTOMER_TOPIC, customer_key)


def customer_changed(session: AsyncSession, *, customer_key: str) -> None:
    """A customer appeared or went away: drop any cached "unknown customer" answer."""
    _broadcast(session, CUSTOMER_TOPIC, customer_key)


async def bump_customer(session: AsyncSession, *, customer_id: int, customer_key: str) -> int:
    version = (
        await session.execute(
            text(
                "UPDATE customers SET state_version = state_version + 1 "
                "WHERE id = :id RETURNING state_version"
            ),
            {"id": customer_id},
        )
    ).scalar_one()
    _broadcast(session, CUSTOMER_TOPIC, customer_key)
    return int(version)


def announce_policy(session: AsyncSession, *, version: int) -> None:
    """After commit, tell every worker the global policy version is now `version`."""
    _broadcast(session, POLICY_TOPIC, str(version))


def announce_signing_keys(session: AsyncSession) -> None:
    """After commit, tell every worker to reread the signing keys (signing/keyring.py)."""
    _broadcast(session, SIGNING_TOPIC, "changed")
