"""Per-customer snapshots: built, cached and invalidated here and nowhere else.

    level  what                                       valid while
    L1     this process: bounded LRU of Snapshots     no invalidation heard, and (bus down)
                                                      a short TTL, and `now` < valid_until
    L2     Redis: the loaded rows, serialized         keyed by the customer's state version
                                                      and the global policy version
    L3     PostgreSQL: Core selects, then compiled    the source of truth

An L1 miss reads the customer's versions (one indexed select), then L2 under the key those
versions make, then the contract rows. Writes bump versions in the same transaction and
broadcast after commit (`allotment.invalidation`): this worker drops the entry at once,
others when Redis delivers. A load that raced an invalidation is not cached (generation
check), so an entry never outlives a change it missed. While Redis is down, every entry
(also one stored before the bus went down) lives at most `ttl_bus_down_s` from its load;
when the bus reconnects, L1 is cleared (missed messages).

When PostgreSQL is down, an entry up to `stale_max_s` old is served and marked stale.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import structlog
from redis.asyncio import Redis
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from allotment.check.metrics import INVALIDATION_LAG, SNAPSHOT_CACHE
from allotment.check.model import ContractView, FeatureOverride, LimitOverride, Snapshot
from allotment.contracts.models import Contract, ContractRevision
from allotment.contracts.terms import Terms
from allotment.invalidation import CUSTOMER_TOPIC, POLICY_TOPIC
from allotment.kit.bus import Bus
from allotment.kit.clock import isoformat
from allotment.policy.catalog import Catalog
from allotment.policy.catalogs import load_catalog

log = structlog.get_logger("allotment.snapshot")

L2_TTL_S = 3600
STORE_RETRY_S = 0.5  # while PostgreSQL is down, a miss retries it at most this often

_VERSIONS = text(
    "SELECT c.id, c.attributes, c.state_version, s.active_version, s.global_version "
    "FROM customers c LEFT JOIN policy_state s ON s.id = 1 WHERE c.key = :key"
)


class StoreUnavailable(Exception):
    """PostgreSQL could not be read and nothing usable was cached."""


@dataclass(slots=True)
class _Entry:
    snapshot: Snapshot
    loaded_at: float  # monotonic
    fresh_until: float  # monotonic
    valid_until: datetime | None  # the next instant the contract or revision in force changes


def _dt(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def pick_contract(rows: list[Any], now: datetime) -> Any | None:
    """The contract in force at `now`, else the next to start, else the last to end."""
    in_force = [r for r in rows if r.starts_at <= now and (r.ends_at is None or now < r.ends_at)]
    if in_force:
        return max(in_force, key=lambda r: r.starts_at)
    upcoming = [r for r in rows if r.starts_at > now]
    if upcoming:
        return min(upcoming, key=lambda r: r.starts_at)
    return max(rows, key=lambda r: r.ends_at) if rows else None


def build(
    payload: Mapping[str, Any], catalog: Catalog | None, policy_version: int | None
) -> Snapshot:
    """A Snapshot from the loaded rows (as cached in L2) and the catalog they follow."""
    contract_row = payload.get("contract")
    if contract_row is None:
        return Snapshot(
            customer=payload["customer"],
            known=payload["known"],
            state_version=payload.get("state_version", 0),
            policy_version=policy_version,
            catalog=catalog,
            contract=None,
            plan=None,
            customer_attributes=payload.get("attributes") or {},
        )
    terms = Terms.from_json(contract_row["terms"])
    plan = catalog.plans.get(terms.plan) if catalog else None
    base = set(plan.features) if plan else set()
    for addon in terms.addons:
        spec = catalog.addons.get(addon) if catalog else None
        if spec is not None:
            base |= spec.features
    contract = ContractView(
        id=contract_row["id"],
        revision=contract_row["revision"],
        plan=terms.plan,
        kind=terms.kind,
        starts_at=_dt(contract_row["starts_at"]),  # type: ignore[arg-type]
        ends_at=_dt(contract_row["ends_at"]),
        attributes=dict(terms.attributes),
        addons=frozenset(terms.addons),
        feature_overrides=tuple(
            FeatureOverride(o.feature, o.action, o.expires_at, o.reason)  # type: ignore[arg-type]
            for o in terms.overrides
            if o.feature is not None
        ),
        limit_overrides=tuple(
            LimitOverride(o.meter, o.limit, o.expires_at, o.reason)  # type: ignore[arg-type]
            for o in terms.overrides
            if o.meter is not None
        ),
        seat_limit=terms.seats.limit
        if terms.seats
        else (plan.seats.limit if plan and plan.seats else None),
        instance_limit=terms.instances.limit
        if terms.instances
        else (plan.instances.limit if plan and plan.instances else None),
    )
    return Snapshot(
        customer=payload["customer"],
        known=True,
        state_version=payload["state_version"],
        policy_version=policy_version,
        catalog=catalog,
        contract=contract,
        plan=plan,
        customer_attributes=payload.get("attributes") or {},
        base_features=frozenset(base),
    )


def contract_payload(contract: Any, revision: Any) -> dict[str, Any]:
    """The `contract` part of a snapshot payload (as cached in L2), from a contracts row
    (`id`, `starts_at`, `ends_at`) and the revision in force (`revision`, `terms`)."""
    return {
        "id": contract.id,
        "revision": revision.revision,
        "starts_at": isoformat(contract.starts_at),
        "ends_at": None if contract.ends_at is None else isoformat(contract.ends_at),
        "terms": revision.terms,
    }


def customer_payload(
    *,
    customer: str,
    attributes: dict[str, Any] | None,
    state_version: int,
    contract: dict[str, Any] | None,
    valid_until: datetime | None,
) -> dict[str, Any]:
    """A known customer's snapshot payload, the form `build()` reads and L2 stores."""
    return {
        "customer": customer,
        "known": True,
        "attributes": attributes,
        "state_version": state_version,
        "contract": contract,
        "valid_until": None if valid_until is None else isoformat(valid_until),
    }


async def _load_rows(
    session: AsyncSession, *, customer_id: int, now: datetime
) -> tuple[dict[str, Any] | None, datetime | None]:
    contracts = (
        await session.execute(
            select(
                Contract.id, Contract.starts_at, Contract.ends_at, Contract.policy_version
            ).where(Contract.customer_id == customer_id)
        )
    ).all()
    chosen = pick_contract(list(contracts), now)
    boundaries = [
        moment
        for row in contracts
        for moment in (row.starts_at, row.ends_at)
        if moment is not None and moment > now
    ]
    if chosen is None:
        return None, min(boundaries, default=None)
    revisions = (
        await session.execute(
            select(ContractRevision.revision, ContractRevision.effective_at, ContractRevision.terms)
            .where(ContractRevision.contract_id == chosen.id)
            .order_by(ContractRevision.revision)
        )
    ).all()
    in_force = revisions[0]
    for revision in revisions:
        if revision.effective_at <= now:
            in_force = revision
        else:
            boundaries.append(revision.effective_at)
    return contract_payload(chosen, in_force), min(boundaries, default=None)


class SnapshotCache:
    def __init__(
        self,
        *,
        maker: async_sessionmaker[AsyncSession],
        redis: Redis,
        bus: Bus,
        namespace: str,
        max_entries: int = 100_000,
        ttl_s: float = 300.0,
        ttl_bus_down_s: float = 5.0,
        stale_max_s: float = 300.0,
    ) -> None:
        self.maker = maker
        self.redis = redis
        self.bus = bus
        self.namespace = namespace
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self.ttl_bus_down_s = ttl_bus_down_s
        self.stale_max_s = stale_max_s
        self._l1: OrderedDict[str, _Entry] = OrderedDict()
        self._generation = 0
        self._l1_hits = SNAPSHOT_CACHE.labels("l1", "hit")  # resolved once: the warm path
        # When the last load failed (monotonic): answers are then flagged stale, and loads
        # are retried at most every STORE_RETRY_S instead of on every miss.
        self.store_down_at: float | None = None
        bus.subscribe(CUSTOMER_TOPIC, self._on_customer)
        bus.subscribe(POLICY_TOPIC, self._on_policy)
        bus.on_reconnect(self.clear)

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
            and (self.store_down_at is None or clock - entry.loaded_at <= self.stale_max_s)
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
        async with self.maker() as session:
            row = (await session.execute(_VERSIONS, {"key": customer})).one_or_none()
            if row is None:
                catalog = await _active_catalog(session)
                version = catalog[0] if catalog else None
                payload = {"customer": customer, "known": False}
                return build(payload, catalog[1] if catalog else None, version), None
            l2_key = f"{self.namespace}:snap:{customer}:{row.state_version}:{row.global_version}"
            payload = await self._l2_get(l2_key, now)
            if payload is None:
                SNAPSHOT_CACHE.labels("l2", "miss").inc()
                contract, valid_until = await _load_rows(session, customer_id=row.id, now=now)
                payload = customer_payload(
                    customer=customer,
                    attributes=row.attributes,
                    state_version=row.state_version,
                    contract=contract,
                    valid_until=valid_until,
                )
                await self._l2_set(l2_key, payload)
            else:
                SNAPSHOT_CACHE.labels("l2", "hit").inc()
            valid_until = _dt(payload.get("valid_until"))
            contract = payload.get("contract")
            pinned = Terms.from_json(contract["terms"]).policy_version if contract else None
            version = pinned or row.active_version
            catalog = None
            if version is not None:
                version, catalog = await load_catalog(session, version=version)
            return build(payload, catalog, version), valid_until

    async def _l2_get(self, key: str, now: datetime) -> dict[str, Any] | None:
        try:
            raw = await self.redis.get(key)
        except Exception:  # Redis is a cache: down means "miss"
            return None
        if raw is None:
            return None
        payload: dict[str, Any] = orjson.loads(raw)
        valid_until = _dt(payload.get("valid_until"))
        if valid_until is not None and now >= valid_until:
            return None  # the contract or revision in force has changed since it was stored
        return payload

    async def _l2_set(self, key: str, payload: dict[str, Any]) -> None:
        try:
            await self.redis.set(key, orjson.dumps(payload), ex=L2_TTL_S)
        except Exception:
            log.debug("l2_set_failed")


async def _active_catalog(session: AsyncSession) -> tuple[int, Catalog] | None:
    from allotment.policy.catalogs import NoPublishedPolicy

    try:
        return await load_catalog(session)
    except NoPublishedPolicy:
        return None
