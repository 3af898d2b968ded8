"""The one module through which committed changes invalidate cached entitlement state.

    bump_customer(session, customer_id=…, customer_key=…)   a contract, override, tenant,
                                                            allocation or usage change
    customer_changed(session, customer_key=…)               a customer created or deleted
    customer_committed(bus, customer_key)                   a seat assignment committed
                                                            outside a session (fast path)
    announce_policy(session, global_version=…, version=…,   publish or rollback (the caller
                    rollback=…)                             bumped policy_state.global_version)
    announce_signing_keys(session)                          keys made, rotated or retired
                                                            (signing/service.py)

Each change moves a version in PostgreSQL inside the caller's transaction (so the cache key
of a snapshot built afterwards differs) and, after commit, broadcasts on the bus so every
worker drops what it holds. Same worker: at once. Other workers: as soon as Redis delivers.

The bus journals these two topics (`make_bus`): the change stream (GET /v1/stream) reads
them from the journal with the `data` each broadcast carries beside its payload —
{"customer", "state_version"} (the version this commit moved the customer to; null where
the publisher does not know it: the seat assignment's one SQL statement bumps it without
returning it, and a customer deleted has none) or {"version", "rollback"}.
"""

from __future__ import annotations

import time
from typing import Any

from redis.asyncio import Redis, RedisCluster
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from allotment.config import Settings
from allotment.db import after_commit
from allotment.kit.bus import Bus, Journal
from allotment.kit.keyspace import Keyspace

CUSTOMER_TOPIC = "customer_state"
POLICY_TOPIC = "policy_version"
SIGNING_TOPIC = "signing_keys"


def keyspace(settings: Settings) -> Keyspace:
    """The names of the service's Redis keys: hash-tagged on a Redis Cluster."""
    return Keyspace(settings.redis_namespace, tagged=bool(settings.redis_cluster_seeds))


def make_bus(redis: Redis | RedisCluster, settings: Settings) -> Bus:
    """The bus of every process that writes (API workers, the CLI): the invalidation channel,
    and the journal of customer and policy changes the change stream reads."""
    keys = keyspace(settings)
    journal = Journal(
        key=keys.journal,
        epoch_key=keys.journal_epoch,
        topics=frozenset({CUSTOMER_TOPIC, POLICY_TOPIC}),
        maxlen=settings.stream_journal_max,
    )
    return Bus(redis, channel=keys.channel, journal=journal)


def _broadcast(
    session: AsyncSession, topic: str, payload: str, data: dict[str, Any] | None = None
) -> None:
    bus = session.info.get("bus")
    if bus is not None:  # none: a script's session; workers then rely on their cache TTL
        after_commit(session, lambda: _publish(bus, topic, payload, data))


async def _publish(bus: Bus, topic: str, payload: str, data: dict[str, Any] | None) -> None:
    # The commit time rides along so receivers can measure the invalidation lag.
    await bus.publish(topic, f"{payload} {time.time():.6f}", data=data)


def _customer(key: str, state_version: int | None) -> dict[str, Any]:
    return {"customer": key, "state_version": state_version}


async def customer_committed(bus: Bus, customer_key: str) -> None:
    """What `bump_customer` broadcasts after commit, for a write committed outside a session
    (the seat fast path's one autocommit statement bumped the version itself, and does not
    return it: the state version goes out as null)."""
    await _publish(bus, CUSTOMER_TOPIC, customer_key, _customer(customer_key, None))


def customer_changed(
    session: AsyncSession, *, customer_key: str, state_version: int | None = None
) -> None:
    """A customer appeared or went away (drop any cached "unknown customer" answer), or its
    state moved in a statement that did not say to which version."""
    _broadcast(session, CUSTOMER_TOPIC, customer_key, _customer(customer_key, state_version))


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
    _broadcast(session, CUSTOMER_TOPIC, customer_key, _customer(customer_key, int(version)))
    return int(version)


def announce_policy(
    session: AsyncSession, *, global_version: int, version: int, rollback: bool
) -> None:
    """After commit, tell every worker the global policy version is now `global_version`:
    policy `version` became active (by a rollback, or by a publish)."""
    _broadcast(
        session,
        POLICY_TOPIC,
        str(global_version),
        {"version": version, "rollback": rollback},
    )


def announce_signing_keys(session: AsyncSession) -> None:
    """After commit, tell every worker to reread the signing keys (signing/keyring.py)."""
    _broadcast(session, SIGNING_TOPIC, "changed")
