"""The read replica: a streaming copy of PostgreSQL that serves the reads allowed to go there.

With `ALLOTMENT_DATABASE_REPLICA_URL` set, the app's lifespan makes a `Replica` (a second
engine and sessionmaker, `app.state.replica`); unset, it is None and every read is the
primary's. Reads that may go to the replica:

    snapshot loads      check/snapshot.py: served by the replica when its state version is
                        not older than the newest this process has heard of
    read_session(...)   a read-only transaction for a route (ReadSessionDep in deps.py:
                        usage reads, invoice previews): the replica unless a change this
                        process heard of may not be on it yet, or it holds an older state
                        version of the customer than the client asked for (`wanted`, the
                        Allotment-State-Version header)

The replica serves only while all of these hold; otherwise the read goes to the primary:

    up          its last lag measurement succeeded and no read has failed since; a
                measurement succeeds only when the replica is a copy of this primary: a
                standby in recovery, with the primary's `system_identifier` (the same
                cluster) and the same `current_database()`. Anything else (a standby of
                another deployment, another database on the right standby, the primary's own
                URL) would answer from the wrong data: the replica is then down, with the
                check that failed logged and counted (allotment_replica_unusable_total)
    lag         it is known to hold every commit older than `replica_max_lag_s`: once every
                `replica_check_s` the primary's WAL position (pg_current_wal_lsn()) is
                sampled, then the replica's replay position (pg_last_wal_replay_lsn()); the
                replica holds every commit made before the newest sample it has replayed
                (`caught_up_at`), and `now - caught_up_at` bounds its lag from above
    the change  a change to the customer (or, for a read that names none, to any customer;
                a policy publish or rollback, to every one) heard on the bus after
                `caught_up_at`: its own process hears a write's broadcast right after
                commit, others when Redis delivers it. A heard change with a state version
                lets a snapshot load read the replica and keep it when its state version
                is at least that; a change without one (the named-seat fast path, a
                customer deleted, usage recorded) sends reads to the primary until the
                replica has caught up past it

A read that fails on the replica marks it down until the next measurement succeeds, and is
answered by the primary: a replica that is down or unreachable never makes a request fail
(but for a read_session whose replica connection breaks in the middle of its queries: that
request answers 503, as it would on the primary).
docs/scale-out.md, "Read replica", states what is guaranteed and what is not.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import psycopg
import structlog
from prometheus_client import Counter, Gauge
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from starlette.requests import Request

from allotment.config import Settings
from allotment.db import async_url, create_engine, create_sessionmaker, guarded, transaction
from allotment.errors import ServiceUnavailable
from allotment.invalidation import CUSTOMER_TOPIC, POLICY_TOPIC
from allotment.kit.background import cancel
from allotment.kit.bus import Bus

log = structlog.get_logger("allotment.replica")

# What a read that the replica cannot answer raises: it is then the primary's.
REPLICA_ERRORS = (SQLAlchemyError, psycopg.Error, OSError, TimeoutError)

REPLICA_LAG = Gauge(
    "allotment_replica_lag_seconds",
    "Upper bound of the read replica's lag at its last measurement: the time since the "
    "newest sample of the primary's WAL position the replica had replayed (-1: unknown: "
    "not measured yet, or the replica is down or unusable)",
)
REPLICA_UP = Gauge("allotment_replica_up", "1 while the read replica answers its measurements")
REPLICA_UNUSABLE = Counter(
    "allotment_replica_unusable_total",
    "Lag measurements that found the replica unusable (reads went to the primary), by why: "
    "unreachable (the replica did not answer), primary_unreachable (the primary's WAL "
    "position could not be read), not_standby (not in recovery: a primary, a promoted "
    "standby, or the primary's own URL), other_cluster (its system_identifier is not the "
    "primary's: a copy of another cluster), other_database (another database than the "
    "primary's)",
    ["reason"],
)
UNUSABLE_REASONS = (
    "unreachable",
    "primary_unreachable",
    "not_standby",
    "other_cluster",
    "other_database",
)
# Reasons that mean the configuration names the wrong data, logged as errors.
WRONG_DATA = ("other_cluster", "other_database")
REPLICA_READS = Counter(
    "allotment_replica_reads_total",
    "Reads that could go to the replica, by the store that served them and why: "
    "replica/served, or primary/down, lagging, changed (a change heard that the replica may "
    "not hold yet), behind (the replica's state version was older) or failed (a replica "
    "read failed)",
    ["store", "reason"],
)

# The WAL positions, with what tells a copy of the primary from another server or database.
_IDENTITY = "(SELECT system_identifier FROM pg_control_system())::text, current_database()"
_PRIMARY_STATE = text(f"SELECT pg_current_wal_lsn()::text, {_IDENTITY}")
_REPLICA_STATE = text(f"SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text, {_IDENTITY}")
_CUSTOMER_VERSION = text("SELECT state_version FROM customers WHERE key = :key")
MAX_SAMPLES = 3600  # unreplayed samples kept: an hour at one a second
MAX_PENDING = 100_000  # customers with a change the replica may not hold yet


class ReplicaUnusable(Exception):
    """A measurement found the replica unusable: `reason` is one of UNUSABLE_REASONS."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _first_line(exc: BaseException) -> str:
    """What a driver error says, without SQLAlchemy's statement and link."""
    said = str(getattr(exc, "orig", None) or exc).strip()
    return said.splitlines()[0] if said else type(exc).__name__


def lsn(position: str) -> int:
    """A WAL position ('16/B374D848') as a number."""
    high, _, low = position.partition("/")
    return (int(high, 16) << 32) + int(low, 16)


class Replica:
    def __init__(
        self,
        *,
        engine: AsyncEngine,
        primary: AsyncEngine,
        max_lag_s: float,
        check_s: float,
        max_pending: int = MAX_PENDING,
        same_url_as_primary: bool = False,
    ) -> None:
        self.engine = engine
        self.maker = create_sessionmaker(engine)
        self.primary = primary
        self.max_lag_s = max_lag_s
        self.check_s = check_s
        self.max_pending = max_pending
        self.same_url_as_primary = same_url_as_primary
        self.up = False
        # Why the last measurement found it unusable (None: up, or not measured yet): a
        # reason is logged when it changes, not at every measurement.
        self.down_reason: str | None = None
        # Monotonic: the replica holds every commit made before this (None: not yet known).
        self.caught_up_at: float | None = None
        self.lag_s: float | None = None  # at the last measurement
        self._samples: deque[tuple[float, int]] = deque(maxlen=MAX_SAMPLES)
        # Customer → (state version heard, or None: unknown; when it was heard, monotonic).
        self._pending: OrderedDict[str, tuple[int | None, float]] = OrderedDict()
        self._any_at: float | None = None  # the last change heard, to any customer
        self._all_at: float | None = None  # the last change to every customer (policy)
        self._task: asyncio.Task[None] | None = None
        self._reads = {
            reason: REPLICA_READS.labels("primary", reason)
            for reason in ("down", "lagging", "changed", "behind", "failed")
        }
        self._served = REPLICA_READS.labels("replica", "served")
        self._unusable = {reason: REPLICA_UNUSABLE.labels(reason) for reason in UNUSABLE_REASONS}
        REPLICA_LAG.set(-1)  # unknown until a measurement succeeds

    @classmethod
    def create(cls, url: str, settings: Settings, *, primary_url: str) -> Replica:
        # A replica that does not answer is given up on quickly: the primary is there.
        engine = create_engine(url, settings, connect_timeout_s=2)
        # The primary's WAL position is read on a connection of its own, so a measurement
        # never queues behind requests for the primary's pool.
        one = settings.model_copy(update={"db_pool_size": 1, "db_max_overflow": 0})
        return cls(
            engine=engine,
            primary=create_engine(primary_url, one, connect_timeout_s=2),
            max_lag_s=settings.replica_max_lag_s,
            check_s=settings.replica_check_s,
            same_url_as_primary=async_url(url) == async_url(primary_url),
        )

    # -- changes heard -----------------------------------------------------------------------

    def watch(self, bus: Bus) -> None:
        bus.subscribe_data(CUSTOMER_TOPIC, self._on_customer)
        bus.subscribe(POLICY_TOPIC, self._on_policy)
        # Messages may have been lost while Redis was down: as if everything changed.
        bus.on_reconnect(self._on_reconnect)

    def _on_customer(self, payload: str, data: Mapping[str, Any] | None) -> None:
        customer = (data or {}).get("customer") or payload.partition(" ")[0]
        version = (data or {}).get("state_version")
        self.note(customer, version if isinstance(version, int) else None)

    def _on_policy(self, payload: str) -> None:
        self._all_at = time.monotonic()

    def _on_reconnect(self) -> None:
        self._all_at = time.monotonic()

    def note(self, customer: str, version: int | None = None) -> None:
        """A change to `customer` committed (to state `version`, when known) before now."""
        now = time.monotonic()
        self._any_at = now
        held = self._pending.pop(customer, None)
        if held is not None and held[1] >= (self.caught_up_at or 0.0):
            # Both may be missing from the replica: the higher version, and an unknown one
            # stays unknown (its change may be newer than a version heard after it).
            version = None if version is None or held[0] is None else max(version, held[0])
        self._pending[customer] = (version, now)
        while len(self._pending) > self.max_pending:
            _, (_, heard_at) = self._pending.popitem(last=False)
            self._all_at = max(self._all_at or heard_at, heard_at)

    # -- routing -----------------------------------------------------------------------------

    def may_serve(self, customer: str | None = None, *, versioned: bool = False) -> bool:
        """Whether a read of `customer` (None: of any customer) may go to the replica. With
        `versioned`, the caller compares the state version it reads (`accepts`), so a
        change heard with a version does not keep it from the replica."""
        reason = self._refusal(customer, versioned=versioned)
        if reason is None:
            return True
        self._reads[reason].inc()
        return False

    def _refusal(self, customer: str | None, *, versioned: bool) -> str | None:
        caught = self.caught_up_at
        if not self.up:
            return "down"
        if caught is None or time.monotonic() - caught > self.max_lag_s:
            return "lagging"
        if self._all_at is not None and self._all_at >= caught:
            return "changed"
        if customer is None:
            return "changed" if self._any_at is not None and self._any_at >= caught else None
        held = self._held(customer)
        if held is not None and (held[0] is None or not versioned):
            return "changed"
        return None

    def _held(self, customer: str) -> tuple[int | None, float] | None:
        """The change to `customer` the replica may not hold yet."""
        held = self._pending.get(customer)
        if held is None:
            return None
        if self.caught_up_at is not None and held[1] < self.caught_up_at:
            del self._pending[customer]  # the replica holds it now
            return None
        return held

    def accepts(
        self, customer: str, state_version: int | None, *, wanted: int | None = None
    ) -> bool:
        """Whether what the replica returned for `customer` (at `state_version`; None: no
        such customer) is at least as new as every change heard, and as `wanted` (a state
        version the client asked for); counts the read."""
        held = self._held(customer)
        floors = [v for v in (held[0] if held else None, wanted) if v is not None]
        if (held is not None and held[0] is None) or (
            floors and (state_version is None or state_version < max(floors))
        ):
            self._reads["behind"].inc()
            return False
        self._served.inc()
        return True

    def served(self) -> None:
        self._served.inc()

    def failed(self, exc: BaseException) -> None:
        """A read failed on the replica: it is down until a measurement succeeds."""
        if self.up:
            log.warning("replica_read_failed", error=str(exc))
        self.up = False
        REPLICA_UP.set(0)
        REPLICA_LAG.set(-1)
        self._reads["failed"].inc()

    # -- measuring ---------------------------------------------------------------------------

    async def measure(self) -> None:
        """One lag measurement: the primary's WAL position, then the replica's replay, each
        with the identity the replica must share with the primary; `ReplicaUnusable` says
        why it cannot serve."""
        at = time.monotonic()
        try:
            async with self.primary.connect() as connection:
                position, cluster, database = (await connection.execute(_PRIMARY_STATE)).one()
        except REPLICA_ERRORS as exc:
            raise ReplicaUnusable(
                "primary_unreachable",
                f"the primary's WAL position could not be read ({_first_line(exc)}): the "
                "replica's lag is unknown, so it serves nothing",
            ) from exc
        self._samples.append((at, lsn(position)))
        try:
            async with self.engine.connect() as connection:
                standby, replayed, its_cluster, its_database = (
                    await connection.execute(_REPLICA_STATE)
                ).one()
        except REPLICA_ERRORS as exc:
            raise ReplicaUnusable("unreachable", _first_line(exc)) from exc
        self._identify(standby, replayed, (cluster, database), (its_cluster, its_database))
        newest = None
        while self._samples and self._samples[0][1] <= lsn(replayed):
            newest = self._samples.popleft()[0]
        if newest is not None:
            self.caught_up_at = max(newest, self.caught_up_at or newest)
        if not self.up:
            log.info("replica_up")
        self.up = True
        self.down_reason = None
        self.lag_s = at - self.caught_up_at if self.caught_up_at is not None else None
        REPLICA_UP.set(1)
        REPLICA_LAG.set(self.lag_s if self.lag_s is not None else -1)
        while self._pending:  # forget the changes the replica holds now
            customer, (_, heard_at) = next(iter(self._pending.items()))
            if self.caught_up_at is None or heard_at >= self.caught_up_at:
                break
            del self._pending[customer]

    def _identify(
        self,
        standby: bool,
        replayed: str | None,
        primary: tuple[str, str],
        replica: tuple[str, str],
    ) -> None:
        """Refuse a replica that is not a copy of this primary's database, in recovery: it
        would answer from other data (docs/scale-out.md, "Read replica")."""
        if replica[0] != primary[0]:
            raise ReplicaUnusable(
                "other_cluster",
                f"the replica is not a copy of the primary: its system_identifier is "
                f"{replica[0]}, the primary's {primary[0]} (ALLOTMENT_DATABASE_REPLICA_URL "
                "must name a standby streaming from ALLOTMENT_DATABASE_URL's server)",
            )
        if replica[1] != primary[1]:
            raise ReplicaUnusable(
                "other_database",
                f"the replica URL names database '{replica[1]}', the primary's is "
                f"'{primary[1]}': ALLOTMENT_DATABASE_REPLICA_URL must name the same database",
            )
        if not standby or replayed is None:
            said = (
                "ALLOTMENT_DATABASE_REPLICA_URL is the primary's own URL"
                if self.same_url_as_primary
                else "it is not a standby in recovery (pg_is_in_recovery() is false: a "
                "primary, or a promoted standby)"
                if not standby
                else "it has replayed no WAL yet"
            )
            raise ReplicaUnusable("not_standby", f"the replica cannot serve reads: {said}")

    def _down(self, reason: str, message: str) -> None:
        """A measurement found the replica unusable: reads go to the primary. Logged when
        the reason changes (at start too), counted every time."""
        self._unusable[reason].inc()
        if reason != self.down_reason or self.up:
            report = log.error if reason in WRONG_DATA else log.warning
            report("replica_down", reason=reason, error=message)
        self.up = False
        self.down_reason = reason
        self.lag_s = None
        REPLICA_UP.set(0)
        REPLICA_LAG.set(-1)

    async def _measure_forever(self) -> None:
        timeout = max(2.0, self.check_s)
        while True:
            try:
                await asyncio.wait_for(self.measure(), timeout=timeout)
            except asyncio.CancelledError:
                raise
            except ReplicaUnusable as exc:
                self._down(exc.reason, str(exc))
            except TimeoutError:
                self._down("unreachable", f"a lag measurement took longer than {timeout:g} s")
            except Exception as exc:  # promoted mid-way, a bug: reads go to the primary
                self._down("unreachable", _first_line(exc))
            await asyncio.sleep(self.check_s)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(
            self._measure_forever(), name="allotment-replica"
        )

    async def stop(self) -> None:
        await cancel(self._task)
        self._task = None
        await self.engine.dispose()
        await self.primary.dispose()


async def _fresh_enough(
    replica: Replica, session: AsyncSession, customer: str | None, wanted: int | None
) -> bool:
    """Whether the replica answers and, asked for a state version, holds it (counted)."""
    try:
        if customer is None or wanted is None:
            await session.connection()
            replica.served()
            return True
        found = (await session.execute(_CUSTOMER_VERSION, {"key": customer})).scalar()
    except REPLICA_ERRORS as exc:
        replica.failed(exc)
        return False
    return replica.accepts(customer, found, wanted=wanted)


@asynccontextmanager
async def read_session(
    request: Request, *, customer: str | None = None, wanted: int | None = None
) -> AsyncIterator[AsyncSession]:
    """A transaction for reads only, on the replica when it may serve a read of `customer`
    (None: a read that names no customer, or several) and, with `wanted` (a state version
    of `customer` the client asked for: the Allotment-State-Version header), holds at least
    that version; else on the primary."""
    state = request.app.state
    info = {
        "request_id": getattr(request.state, "request_id", None),
        "bus": getattr(state, "bus", None),
    }
    replica: Replica | None = getattr(state, "replica", None)
    if replica is not None and replica.may_serve(customer):
        async with replica.maker() as session:
            if await _fresh_enough(replica, session, customer, wanted):
                try:
                    async with guarded(session, **info):
                        yield session
                except ServiceUnavailable as exc:  # it went away during the read
                    replica.failed(exc)
                    raise
                return
    async with transaction(state.sessionmaker, **info) as session:
        yield session
