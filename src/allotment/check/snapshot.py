"""Per-customer snapshots: built, cached and invalidated here and nowhere else.

    level  what                                       used
    L1     this process: bounded LRU of Snapshots     every check; valid while no
                                                      invalidation is heard, (bus down) a
                                                      short TTL, and `now` < valid_until
    L2     Redis: each customer's last loaded rows,   shared by every worker: when
           serialized, with the policy version and    PostgreSQL is down and L1 holds
           digest they were built with                nothing, served flagged stale
    L3     PostgreSQL: one select, then compiled      every L1 miss: the source of truth
                                                      (or its read replica, when it holds
                                                      every change heard: replica.py)

An L1 miss reads the customer's versions, the active policy's digest and the contract rows
in one select (`_LOAD`, autocommit: no BEGIN/ROLLBACK round trips), takes an already
compiled catalog from process memory when it can, and writes the rows to L2 off the request
path. PostgreSQL is read rather than L2 because the one select already answers everything
an L2 read could, and it is the only place the current versions live; L2 earns its place in
outages, where it lets a worker that never saw a customer (a restart, a new replica) still
answer from what any worker loaded. Writes bump versions in the same transaction and
broadcast after commit (`allotment.invalidation`): this worker drops the entry at once,
others when Redis delivers, and each deletes the customer's L2 entry. A load that raced an
invalidation is not cached (generation check), so an entry never outlives a change it
missed. While Redis is down, every entry (also one stored before the bus went down) lives
at most `ttl_bus_down_s` from its load; when the bus reconnects, L1 is cleared.

When PostgreSQL is down, an L1 or L2 entry up to `stale_max_s` old is served, marked stale.
L2 payloads carry no format version: `build` (check/payload.py) reads them tolerantly, so
one written by an older release still serves (fields added since, such as the customer's
`name` or an instance's kind, environment and metadata, read as None: check/holdings.py).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import structlog
from redis.asyncio import Redis, RedisCluster
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from allotment.check import holdings
from allotment.check.metrics import INVALIDATION_LAG, SNAPSHOT_CACHE
from allotment.check.payload import build, customer_payload, instant, pick_rows
from allotment.check.values import (
    Snapshot,
)
from allotment.config import Settings
from allotment.contracts.terms import Terms
from allotment.invalidation import CUSTOMER_TOPIC, POLICY_TOPIC, keyspace
from allotment.kit.bus import Bus
from allotment.kit.keyspace import Keyspace
from allotment.policy import catalog_cache
from allotment.policy.catalog import Catalog
from allotment.policy.catalog_cache import load_catalog
from allotment.replica import REPLICA_ERRORS, Replica

log = structlog.get_logger("allotment.snapshot")

L2_TTL_S = 3600
STORE_RETRY_S = 0.5  # while PostgreSQL is down, a miss retries it at most this often

_VERSIONS = text(
    "SELECT c.id, c.attributes, c.state_version, s.active_version, s.global_version "
    "FROM customers c LEFT JOIN policy_state s ON s.id = 1 WHERE c.key = :key"
)

# One round trip for an L1 miss: the customer's versions, the active policy's digest, and
# every contract with every revision (one row per revision; the customer's columns repeat,
# and a customer without contracts is one row of NULLs on the right). `pinned_digest` is the
# digest of the version a revision pins, so a catalog already compiled in this process
# needs no further select.
_LOAD = text(
    "SELECT c.id, c.name, c.attributes, c.state_version, s.active_version, s.global_version, "
    "av.digest AS active_digest, "
    "k.id AS contract_id, k.starts_at, k.ends_at, "
    "r.revision, r.effective_at, r.terms, pv.digest AS pinned_digest "
    "FROM customers c "
    "LEFT JOIN policy_state s ON s.id = 1 "
    "LEFT JOIN policy_versions av ON av.version = s.active_version "
    "LEFT JOIN contracts k ON k.customer_id = c.id "
    "LEFT JOIN contract_revisions r ON r.contract_id = k.id "
    "LEFT JOIN policy_versions pv ON pv.version = (r.terms ->> 'policy_version')::int "
    "WHERE c.key = :key "
    "ORDER BY k.id, r.revision"
)


class StoreUnavailable(Exception):
    """PostgreSQL could not be read and nothing usable was cached."""


@dataclass(slots=True)
class _Entry:
    snapshot: Snapshot
    loaded_at: float  # monotonic
    fresh_until: float  # monotonic
    valid_until: datetime | None  # the next instant the contract or revision in force changes


class SnapshotCache:
    def __init__(
        self,
        *,
        maker: async_sessionmaker[AsyncSession],
        redis: Redis | RedisCluster,
        bus: Bus,
        keys: Keyspace,
        max_entries: int = 100_000,
        ttl_s: float = 300.0,
        ttl_bus_down_s: float = 5.0,
        stale_max_s: float = 300.0,
        replica: Replica | None = None,
    ) -> None:
        self.maker = maker
        self.replica = replica
        self.redis = redis
        self.bus = bus
        self.keys = keys
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self.ttl_bus_down_s = ttl_bus_down_s
        self.stale_max_s = stale_max_s
        self._l1: OrderedDict[str, _Entry] = OrderedDict()
        self._generation = 0
        self._l1_hits = SNAPSHOT_CACHE.labels("l1", "hit")  # resolved once: the warm path
        self._l2_writes: set[asyncio.Task[None]] = set()  # strong references until done
        self._l2_dropping: set[str] = set()  # customers whose L2 entry a task will delete
        self._l2_dropper: asyncio.Task[None] | None = None
        # When the last load failed (monotonic): answers are then flagged stale, and loads
        # are retried at most every STORE_RETRY_S instead of on every miss.
        self.store_down_at: float | None = None
        bus.subscribe(CUSTOMER_TOPIC, self._on_customer)
        bus.subscribe(POLICY_TOPIC, self._on_policy)
        bus.on_reconnect(self.clear)

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        maker: async_sessionmaker[AsyncSession],
        redis: Redis | RedisCluster,
        bus: Bus,
        replica: Replica | None = None,
    ) -> SnapshotCache:
        """An API worker's cache, or an aggregator's (usage/aggregator.py)."""
        return cls(
            maker=maker,
            redis=redis,
            bus=bus,
            keys=keyspace(settings),
            max_entries=settings.snapshot_cache_entries,
            ttl_s=settings.snapshot_ttl_s,
            ttl_bus_down_s=settings.snapshot_ttl_bus_down_s,
            stale_max_s=settings.snapshot_stale_max_s,
            replica=replica,
        )

    # -- invalidation ----------------------------------------------------------------------

    def _lag(self, payload: str) -> str:
        key, _, committed = payload.partition(" ")
        if committed:
            INVALIDATION_LAG.observe(max(0.0, time.time() - float(committed)))
        return key

    def _on_customer(self, payload: str) -> None:
        key = self._lag(payload)
        self._generation += 1
        self._l1.pop(key, None)
        self._l2_dropping.add(key)
        if self._l2_dropper is None or self._l2_dropper.done():
            self._l2_dropper = self._soon(self._l2_delete())

    def _on_policy(self, payload: str) -> None:
        self._lag(payload)
        self.clear()

    def clear(self) -> None:
        self._generation += 1
        self._l1.clear()

    # -- reads -----------------------------------------------------------------------------

    def peek(self, customer: str, now: datetime) -> Snapshot | None:
        """The L1 snapshot when it is fresh: the synchronous fast path of a warm check."""
        entry = self._l1.get(customer)
        if entry is None:
            return None
        clock = time.monotonic()
        if (
            clock < entry.fresh_until
            # An entry stored while the bus was up counted on hearing invalidations; once
            # the bus is down it may miss them, so it too lives only the short TTL.
            and (self.bus.connected or clock < entry.loaded_at + self.ttl_bus_down_s)
            and (entry.valid_until is None or now < entry.valid_until)
            # While PostgreSQL is marked down, entries are served (flagged stale) only until
            # the next retry is due: then a miss tries PostgreSQL, and a load that succeeds
            # clears the mark, so answers stop being flagged stale once it is back.
            and (
                self.store_down_at is None
                or (
                    clock - entry.loaded_at <= self.stale_max_s
                    and clock - self.store_down_at < STORE_RETRY_S
                )
            )
        ):
            self._l1_hits.inc()
            return entry.snapshot
        return None

    async def get(self, customer: str, now: datetime) -> tuple[Snapshot, bool]:
        """(snapshot, stale). Raises StoreUnavailable when PostgreSQL is down and nothing
        cached is young enough to serve."""
        snapshot = self.peek(customer, now)
        if snapshot is not None:
            return snapshot, False
        SNAPSHOT_CACHE.labels("l1", "miss").inc()
        generation = self._generation
        clock = time.monotonic()
        try:
            if self.store_down_at is not None and clock - self.store_down_at < STORE_RETRY_S:
                raise StoreUnavailable("PostgreSQL was unreachable moments ago")
            snapshot, valid_until = await self._load(customer, now)
        except (DBAPIError, OSError, TimeoutError, StoreUnavailable) as exc:
            if not isinstance(exc, StoreUnavailable):
                self.store_down_at = clock
            entry = self._l1.get(customer)
            if entry is not None and clock - entry.loaded_at <= self.stale_max_s:
                SNAPSHOT_CACHE.labels("l1", "stale").inc()
                return entry.snapshot, True
            shared = await self._l2_stale(customer, now)
            if shared is not None:
                return shared, True
            raise StoreUnavailable(str(exc)) from exc
        self.store_down_at = None
        if generation == self._generation:  # nothing changed while this load ran
            self._store(customer, snapshot, valid_until)
        return snapshot, False

    def _store(self, customer: str, snapshot: Snapshot, valid_until: datetime | None) -> None:
        now = time.monotonic()
        ttl = self.ttl_s if self.bus.connected else self.ttl_bus_down_s
        self._l1[customer] = _Entry(snapshot, now, now + ttl, valid_until)
        self._l1.move_to_end(customer)
        while len(self._l1) > self.max_entries:
            self._l1.popitem(last=False)

    async def _load(self, customer: str, now: datetime) -> tuple[Snapshot, datetime | None]:
        """The customer's snapshot from the replica when it may serve it and what it holds
        is as new as every change this process heard of (replica.py), else the primary's."""
        replica = self.replica
        if replica is not None and replica.may_serve(customer, versioned=True):
            try:
                loaded = await self._read(replica.maker, customer, now)
            except REPLICA_ERRORS as exc:
                replica.failed(exc)
            else:
                snapshot = loaded[0]
                if replica.accepts(customer, snapshot.state_version if snapshot.known else None):
                    return self._keep(customer, *loaded)
        return self._keep(customer, *await self._read(self.maker, customer, now))

    def _keep(
        self,
        customer: str,
        snapshot: Snapshot,
        valid_until: datetime | None,
        shared: dict[str, Any] | None,
    ) -> tuple[Snapshot, datetime | None]:
        if shared is not None:
            self._l2_set_soon(customer, shared)
        return snapshot, valid_until

    async def _read(
        self, maker: async_sessionmaker[AsyncSession], customer: str, now: datetime
    ) -> tuple[Snapshot, datetime | None, dict[str, Any] | None]:
        """(snapshot, valid until, the payload for L2: None for an unknown customer)."""
        async with maker() as session:
            # Autocommit: one statement (plus, rarely, catalog selects of immutable rows)
            # needs no transaction, which saves the BEGIN and ROLLBACK round trips.
            connection = await session.connection(
                execution_options={"isolation_level": "AUTOCOMMIT"}
            )
            rows = (await connection.execute(_LOAD, {"key": customer})).all()
            if not rows:
                active = await _active_catalog(session)
                unknown: dict[str, Any] = {"customer": customer, "known": False}
                snapshot = build(unknown, active[1] if active else None, active and active[0])
                return snapshot, None, None
            row = rows[0]
            SNAPSHOT_CACHE.labels("l3", "load").inc()
            contract, valid_until, pinned_digest = pick_rows(rows, now)
            held = (
                await connection.execute(
                    holdings.LOAD,
                    {"c": row.id, "now": now, "recent": now - holdings.RECENT_INSTANCES},
                )
            ).all()
            held_payload, lapse = holdings.payload(held, now)
            if lapse is not None and (valid_until is None or lapse < valid_until):
                valid_until = lapse
            payload = customer_payload(
                customer=customer,
                attributes=row.attributes,
                state_version=row.state_version,
                contract=contract,
                valid_until=valid_until,
            )
            payload["holdings"] = held_payload
            payload["customer_id"] = row.id
            payload["name"] = row.name  # absent from payloads cached before: read as None
            valid_until = instant(payload.get("valid_until"))
            pinned = Terms.from_json(contract["terms"]).policy_version if contract else None
            version = pinned or row.active_version
            digest = pinned_digest if pinned else row.active_digest
            shared = {
                **payload,
                "policy_version": version,
                "policy_digest": digest,
                "at": time.time(),
            }
            catalog: Catalog | None = None
            if version is not None:
                catalog = catalog_cache.compiled(version, digest) if digest is not None else None
                if catalog is None:  # not compiled here yet (or the version is missing)
                    version, catalog = await load_catalog(session, version=version)
            return build(payload, catalog, version), valid_until, shared

    def _l2_key(self, customer: str) -> str:
        return self.keys.snapshot(customer)

    def _l2_set_soon(self, customer: str, payload: dict[str, Any]) -> None:
        self._soon(self._l2_set(customer, payload))

    def _soon(self, work: Any) -> asyncio.Task[None] | None:
        """Run Redis work off the request path, keeping a reference until it is done."""
        try:
            task = asyncio.get_running_loop().create_task(work)
        except RuntimeError:
            work.close()
            return None
        self._l2_writes.add(task)
        task.add_done_callback(self._l2_writes.discard)
        return task

    async def _l2_set(self, customer: str, payload: dict[str, Any]) -> None:
        try:
            await self.redis.set(self._l2_key(customer), orjson.dumps(payload), ex=L2_TTL_S)
        except Exception:  # Redis is a cache: a failed write is a later miss
            log.debug("l2_set_failed")

    async def _l2_delete(self) -> None:
        """Delete the L2 entries of every customer changed since this was scheduled: one
        command for all the writes of a busy moment."""
        await asyncio.sleep(0)  # let the other changes of this moment join
        customers, self._l2_dropping = self._l2_dropping, set()
        try:
            await self.redis.delete(*(self._l2_key(customer) for customer in customers))
        except Exception:
            log.debug("l2_delete_failed")

    async def _l2_stale(self, customer: str, now: datetime) -> Snapshot | None:
        """During a PostgreSQL outage: the customer's last loaded rows from Redis, when they
        are young enough and this process has compiled the catalog they were built with."""
        try:
            raw = await asyncio.wait_for(self.redis.get(self._l2_key(customer)), timeout=0.5)
        except Exception:
            return None
        if raw is None:
            SNAPSHOT_CACHE.labels("l2", "miss").inc()
            return None
        payload: dict[str, Any] = orjson.loads(raw)
        valid_until = instant(payload.get("valid_until"))
        if time.time() - payload["at"] > self.stale_max_s or (
            valid_until is not None and now >= valid_until
        ):
            return None
        version: int | None = payload.get("policy_version")
        digest: str = payload.get("policy_digest") or ""
        catalog = catalog_cache.compiled(version, digest) if version is not None else None
        if version is not None and catalog is None:
            return None  # built with a catalog this process cannot compile without PostgreSQL
        SNAPSHOT_CACHE.labels("l2", "stale").inc()
        return build(payload, catalog, version)


async def _active_catalog(session: AsyncSession) -> tuple[int, Catalog] | None:
    from allotment.policy.catalog_cache import NoPublishedPolicy

    try:
        return await load_catalog(session)
    except NoPublishedPolicy:
        return None
