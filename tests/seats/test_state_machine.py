"""A Hypothesis state machine: random allocation steps against the services and a plain model.

Each example gets two fresh customers on the demo catalog and a simulated clock:

    named     `team`, 3 seats + a burst of 1 for 1h, 5 guests, instance weight 5
              (vm 1, container 1, cluster 4; lease 10m); tenant `blue` may hold 1 member
              seat and instance weight 2
    floating  `floating`, 2 concurrent seats (session TTL 30m); tenant `blue` may hold 1

and runs up to `stateful_step_count` random steps: assign / release seats, open / heartbeat /
close sessions, register / heartbeat / deregister instances, amend the contracts, advance
the clock, run the reaper. Every step is one committed transaction through the service with
`now=` the simulated clock; its answer (allowed or refused, and why) must be the model's, and
after every step each allocation table must hold exactly the rows the model says, and no
pool may hold more than its limit allows.

The state machine runs on an event loop and an engine of its own (the `app` fixture's are
bound to pytest-asyncio's loop), so the test itself is a plain function.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
from collections.abc import Awaitable, Callable
from dataclasses import astuple, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import httpx
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from allotment.contracts import amend as amendments
from allotment.contracts import pools
from allotment.contracts import service as contracts
from allotment.contracts.schemas import ContractAmend, ContractCreate
from allotment.customers import service as customers
from allotment.customers.schemas import CustomerCreate
from allotment.db import create_engine, create_sessionmaker, session_scope
from allotment.errors import AllotmentError, NotFound, ValidationFailed
from allotment.instances import service as instances
from allotment.instances.schemas import InstanceRegister
from allotment.kit.clock import isoformat
from allotment.seats import direct, sessions
from allotment.seats import service as seats
from allotment.tenants import service as tenants
from allotment.tenants.schemas import TenantCreate
from allotment.worker import run_once
from tests.factories.policies_for_contracts import demo_document, publish_policy

T = TypeVar("T")

ACTOR = "test:state-machine"
CONTRACT_START = datetime(2020, 1, 1, tzinfo=UTC)  # open-ended: in force at every step
START = datetime(2030, 6, 3, 9, 0, tzinfo=UTC)

SUBJECTS = ("ann", "bob", "cy", "dee", "eve", "fay", "gus")
FINGERPRINTS = ("fp-1", "fp-2", "fp-3", "fp-4")
MOSTLY_NO_TENANT = (None, None, None, "blue")
KINDS = {"vm": 1, "container": 1, "cluster": 4}  # the team plan's
WINDOWS = {"30m": timedelta(minutes=30), "1h": timedelta(hours=1), "1d": timedelta(days=1)}
GUESTS = 5
SESSION_TTL = timedelta(minutes=30)
LEASE_TTL = timedelta(minutes=10)
BLUE_SEATS, BLUE_INSTANCES = 1, 2  # the tenant quotas of both customers

# Exact lease lengths and window lengths come up often, so expiries are hit on the dot.
ADVANCES = st.one_of(
    st.sampled_from(
        [
            timedelta(seconds=1),
            timedelta(minutes=5),
            timedelta(minutes=10),
            timedelta(minutes=30),
            timedelta(hours=1),
            timedelta(days=1),
        ]
    ),
    st.integers(min_value=1, max_value=2 * 86_400).map(lambda s: timedelta(seconds=s)),
)

SETTINGS = settings(
    max_examples=50,
    stateful_step_count=30,
    deadline=None,
    database=None,
    report_multiple_bugs=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

_examples = itertools.count(1)

# Each allocation table of one customer, in the field order of the model's rows.
TABLES = {
    "seats": (
        "SELECT id, subject, type, tenant, over_limit, assigned_at, released_at "
        "FROM seats WHERE customer_id = :c",
        "named",
    ),
    "bursts": (
        'SELECT "limit", extra, started_at, window_ends_at, ended_at '
        "FROM seat_bursts WHERE customer_id = :c",
        "named",
    ),
    "sessions": (
        "SELECT id, subject, tenant, opened_at, expires_at, make_interval(secs => ttl_s), "
        "NULL, 1, ended_at, end_reason FROM seat_sessions WHERE customer_id = :c",
        "floating",
    ),
    "instances": (
        "SELECT id, fingerprint, tenant, registered_at, lease_expires_at, "
        "make_interval(secs => ttl_s), kind, weight, ended_at, end_reason "
        "FROM instances WHERE customer_id = :c",
        "named",
    ),
}
LIVE = text(
    "SELECT (SELECT count(*) FROM seats WHERE customer_id = :n AND type = 'member' "
    "AND released_at IS NULL) AS members, "
    "(SELECT count(*) FROM seats WHERE customer_id = :n AND type = 'guest' "
    "AND released_at IS NULL) AS guests, "
    "(SELECT count(*) FROM seat_sessions WHERE customer_id = :f AND ended_at IS NULL "
    "AND expires_at > :now) AS sessions, "
    "(SELECT coalesce(sum(weight), 0) FROM instances WHERE customer_id = :n "
    "AND ended_at IS NULL AND lease_expires_at > :now) AS instances, "
    # What the assignment reads under the pool lock (seat_counts, kept by a trigger).
    "(SELECT coalesce(max(members), 0) FROM seat_counts WHERE customer_id = :n) "
    "AS counted_members, "
    "(SELECT coalesce(max(guests), 0) FROM seat_counts WHERE customer_id = :n) "
    "AS counted_guests"
)


# -- the model -------------------------------------------------------------------------------


@dataclass
class SeatRow:
    id: str
    subject: str
    type: str
    tenant: str | None
    over_limit: bool
    assigned_at: datetime
    released_at: datetime | None = None


@dataclass
class Episode:
    limit: int
    extra: int
    started_at: datetime
    window_ends_at: datetime
    ended_at: datetime | None = None


@dataclass
class Lease:
    """A session (key: its subject) or an instance (key: its fingerprint; kind, weight)."""

    id: str
    key: str
    tenant: str | None
    started_at: datetime
    expires_at: datetime
    ttl: timedelta
    kind: str | None = None
    weight: int = 1
    ended_at: datetime | None = None
    end_reason: str | None = None

    def live(self, now: datetime) -> bool:
        return self.ended_at is None and self.expires_at > now


@dataclass
class Model:
    clock: datetime = START
    # named: seats, bursts, instances
    seat_limit: int = 3
    burst_extra: int = 1
    burst_window: timedelta = timedelta(hours=1)
    instance_limit: int = 5
    seats: list[SeatRow] = field(default_factory=list)
    episodes: list[Episode] = field(default_factory=list)
    instances: list[Lease] = field(default_factory=list)
    # floating: sessions
    session_limit: int = 2
    sessions: list[Lease] = field(default_factory=list)

    def held(self, subject: str) -> SeatRow | None:
        return next((s for s in self.seats if s.subject == subject and s.released_at is None), None)

    def live_seats(self, type: str) -> list[SeatRow]:
        return [s for s in self.seats if s.type == type and s.released_at is None]

    def episode(self) -> Episode | None:
        return next((e for e in self.episodes if e.ended_at is None), None)

    def end_episode(self) -> None:
        if (open_ := self.episode()) is not None:
            open_.ended_at = self.clock

    @property
    def ceiling(self) -> int:
        return self.seat_limit + self.burst_extra


def _soonest(leases: list[Lease]) -> str | None:
    return isoformat(min(lease.expires_at for lease in leases)) if leases else None


def _gone(lease: Lease) -> tuple[str, datetime]:
    """The 410 reason and `ended_at` the service gives for a lease that is no longer live."""
    if lease.ended_at is None or lease.end_reason == "expired":
        return "lease_expired", lease.ended_at or lease.expires_at
    assert lease.end_reason is not None
    return lease.end_reason, lease.ended_at


# -- the machine -----------------------------------------------------------------------------


@dataclass
class Harness:
    loop: asyncio.AbstractEventLoop
    maker: async_sessionmaker[AsyncSession]


class Outcome:
    """What a step did: `value` when it committed, `error` when the service refused."""

    def __init__(self, value: Any = None, error: AllotmentError | None = None) -> None:
        self.value, self.error = value, error

    def ok(self) -> Any:
        assert self.error is None, (
            f"refused, the model allows it: {self.error!r} {self.error.extra}"
        )
        return self.value

    def refused(self, kind: type[AllotmentError], **extra: Any) -> AllotmentError:
        assert self.error is not None, f"allowed, the model expects {kind.__name__}: {self.value}"
        assert isinstance(self.error, kind), f"expected {kind.__name__}, got {self.error!r}"
        got = {key: self.error.extra.get(key, "<absent>") for key in extra}
        assert got == extra, f"{self.error!r}: extra {self.error.extra}, expected {extra}"
        return self.error


class AllocationMachine(RuleBasedStateMachine):
    def __init__(self, harness: Harness) -> None:
        super().__init__()
        self.h = harness
        self.m = Model()
        n = next(_examples)
        self.named, self.floating = f"fsm-{n}-named", f"fsm-{n}-floating"
        self.ids: dict[str, int] = {}
        self.contracts: dict[str, tuple[str, int]] = {}  # customer key -> (id, revision)
        self._run(self._setup())
        # Allocations a lowered limit left in place; they only ever shrink (see invariants).
        self.grandfathered = {"members": 0, "sessions": 0, "instances": 0}
        self.unbursted = 0  # members over the seat limit with no episode open
        self.amendments = 0

    # -- plumbing ------------------------------------------------------------------------

    def _run(self, work: Awaitable[T]) -> T:
        return self.h.loop.run_until_complete(work)

    def _step(self, work: Callable[[AsyncSession], Awaitable[Any]]) -> Outcome:
        async def transaction() -> Any:
            async with session_scope(self.h.maker) as session:
                return await work(session)

        try:
            return Outcome(value=self._run(transaction()))
        except AllotmentError as error:
            return Outcome(error=error)

    async def _setup(self) -> None:
        plans = {
            self.named: {
                "plan": "team",
                "seats": {"limit": 3, "burst": {"extra": 1, "window": "1h"}},
                "instances": {"limit": 5},
            },
            self.floating: {"plan": "floating", "seats": {"limit": 2}},
        }
        for key, terms in plans.items():
            async with session_scope(self.h.maker) as session:
                created = await customers.create(
                    session, data=CustomerCreate(key=key, name=key), actor=ACTOR
                )
                self.ids[key] = created.id
            async with session_scope(self.h.maker) as session:
                data = ContractCreate.model_validate({**terms, "starts_at": CONTRACT_START})
                view = await contracts.create(session, customer_key=key, data=data, actor=ACTOR)
                self.contracts[key] = (view.contract.id, view.contract.revision)
            quotas = {"seats": BLUE_SEATS}
            if key == self.named:
                quotas["instances"] = BLUE_INSTANCES
            async with session_scope(self.h.maker) as session:
                await tenants.create(
                    session,
                    customer_key=key,
                    data=TenantCreate.model_validate({"key": "blue", "quotas": quotas}),
                    actor=ACTOR,
                )

    def teardown(self) -> None:
        """Drop this example's allocations, so the next example's reaper counts only its own."""

        async def drop() -> None:
            async with session_scope(self.h.maker) as session:
                for table in ("seats", "seat_bursts", "seat_sessions", "instances"):
                    await session.execute(
                        text(f"DELETE FROM {table} WHERE customer_id = ANY(:ids)"),
                        {"ids": list(self.ids.values())},
                    )

        if self.ids:
            self._run(drop())

    # -- named seats ---------------------------------------------------------------------

    @initialize(members=st.sampled_from([4, 3, 0, 2]))
    def fill(self, members: int) -> None:
        """Start most examples at or over the seat limit: the burst needs 4 members."""
        for subject in SUBJECTS[:members]:
            self._assign(subject, "member", None)

    @rule(subject=st.sampled_from(SUBJECTS), tenant=st.sampled_from(MOSTLY_NO_TENANT))
    def assign_member(self, subject: str, tenant: str | None) -> None:
        self._assign(subject, "member", tenant)

    @rule(subject=st.sampled_from(SUBJECTS))
    def assign_member_without_tenant(self, subject: str) -> None:
        self._assign(subject, "member", None)

    @rule(subject=st.sampled_from(SUBJECTS), tenant=st.sampled_from(MOSTLY_NO_TENANT))
    def assign_guest(self, subject: str, tenant: str | None) -> None:
        self._assign(subject, "guest", tenant)

    def _assign(self, subject: str, type: str, tenant: str | None) -> None:
        m, now = self.m, self.m.clock
        got = self._step(  # as the API assigns: one round trip once the limits are known
            lambda s: direct.assign_any(
                s,
                customer_key=self.named,
                subject=subject,
                type=type,  # type: ignore[arg-type]
                tenant=tenant,
                actor=ACTOR,
                now=now,
            )
        )
        held = m.held(subject)
        if held is not None:
            if (held.type, held.tenant) != (type, tenant):
                got.refused(seats.SeatHeldDifferently)
                return
            assignment = got.ok()
            assert not assignment.created and assignment.seat.id == held.id
            assert assignment.burst is None
            return
        members, guests = m.live_seats("member"), m.live_seats("guest")
        if type == "member" and tenant is not None:
            in_tenant = sum(1 for s in members if s.tenant == tenant)
            if in_tenant + 1 > BLUE_SEATS:
                got.refused(
                    pools.PoolFull,
                    reason="tenant_quota_reached",
                    pool="seats",
                    limit=BLUE_SEATS,
                    held=in_tenant,
                    frees_at=None,
                    tenant=tenant,
                )
                return
        burst: tuple[datetime, int] | None = None  # (window end, extra left) when over
        if type == "guest":
            if len(guests) >= GUESTS:
                got.refused(
                    pools.PoolFull,
                    reason="seat_limit_reached",
                    pool="guests",
                    limit=GUESTS,
                    held=len(guests),
                    frees_at=None,
                )
                return
        elif len(members) < m.seat_limit:
            m.end_episode()  # a no-op unless a raised limit left one open
        else:
            episode = m.episode()
            refusal = {
                "reason": "seat_limit_reached",
                "pool": "seats",
                "limit": m.seat_limit,
                "held": len(members),
                "frees_at": None,
            }
            window = None if episode is None else {"ends_at": isoformat(episode.window_ends_at)}
            if m.burst_extra == 0:
                got.refused(pools.PoolFull, **refusal, burst="<absent>")
                return
            if len(members) >= m.ceiling:
                got.refused(pools.PoolFull, **refusal, burst=window)
                return
            if episode is None:
                episode = Episode(m.seat_limit, m.burst_extra, now, now + m.burst_window)
                m.episodes.append(episode)
            elif now >= episode.window_ends_at:
                got.refused(pools.PoolFull, **refusal, burst=window)
                return
            burst = (episode.window_ends_at, m.ceiling - len(members) - 1)
        assignment = got.ok()
        assert assignment.created
        row = assignment.seat
        assert (row.subject, row.type, row.tenant) == (subject, type, tenant)
        assert row.over_limit == (burst is not None) and row.assigned_at == now
        if burst is None:
            assert assignment.burst is None
        else:
            assert (assignment.burst.ends_at, assignment.burst.extra_left) == burst
        m.seats.append(SeatRow(row.id, subject, type, tenant, burst is not None, now))

    @rule(subject=st.sampled_from(SUBJECTS))
    def release(self, subject: str) -> None:
        m, now = self.m, self.m.clock
        got = self._step(
            lambda s: seats.release(
                s, customer_key=self.named, subject=subject, actor=ACTOR, now=now
            )
        )
        held = m.held(subject)
        if held is None:
            got.refused(seats.SeatNotFound)
            return
        row = got.ok()
        assert row.id == held.id and row.released_at == now
        held.released_at = now
        if held.type == "member" and len(m.live_seats("member")) < m.seat_limit:
            m.end_episode()

    # -- sessions ------------------------------------------------------------------------

    @rule(subject=st.sampled_from(SUBJECTS), tenant=st.sampled_from(MOSTLY_NO_TENANT))
    def open_session(self, subject: str, tenant: str | None) -> None:
        m, now = self.m, self.m.clock
        got = self._step(
            lambda s: sessions.open_session(
                s, customer_key=self.floating, subject=subject, tenant=tenant, actor=ACTOR, now=now
            )
        )
        live = [x for x in m.sessions if x.live(now)]
        if tenant is not None:
            in_tenant = [x for x in live if x.tenant == tenant]
            if len(in_tenant) + 1 > BLUE_SEATS:
                got.refused(
                    pools.PoolFull,
                    reason="tenant_quota_reached",
                    pool="seats",
                    limit=BLUE_SEATS,
                    held=len(in_tenant),
                    frees_at=_soonest(in_tenant),
                    tenant=tenant,
                )
                return
        if len(live) >= m.session_limit:
            got.refused(
                pools.PoolFull,
                reason="seat_limit_reached",
                pool="seats",
                limit=m.session_limit,
                held=len(live),
                frees_at=_soonest(live),
            )
            return
        row = got.ok()
        assert (row.subject, row.tenant, row.opened_at) == (subject, tenant, now)
        assert row.expires_at == now + SESSION_TTL and row.ended_at is None
        m.sessions.append(Lease(row.id, subject, tenant, now, now + SESSION_TTL, SESSION_TTL))

    def _renew(self, lease: Lease, got: Outcome, expiry: str) -> None:
        now = self.m.clock
        if lease.live(now):
            row, _customer = got.ok()
            lease.expires_at = now + lease.ttl
            assert (row.id, getattr(row, expiry)) == (lease.id, lease.expires_at)
            return
        reason, ended_at = _gone(lease)
        got.refused(pools.LeaseGone, reason=reason, ended_at=isoformat(ended_at))

    def _end(self, lease: Lease, got: Outcome, by_caller: str) -> None:
        now = self.m.clock
        if lease.ended_at is None and lease.expires_at > now:
            row, _customer = got.ok()
            lease.ended_at, lease.end_reason = now, by_caller
            assert (row.id, row.ended_at, row.end_reason) == (
                lease.id,
                lease.ended_at,
                lease.end_reason,
            )
            return
        reason, ended_at = _gone(lease)
        got.refused(pools.LeaseGone, reason=reason, ended_at=isoformat(ended_at))

    @precondition(lambda self: self.m.sessions)
    @rule(pick=st.integers(min_value=0, max_value=1_000))
    def heartbeat_session(self, pick: int) -> None:
        lease = self.m.sessions[pick % len(self.m.sessions)]
        now = self.m.clock
        got = self._step(lambda s: sessions.heartbeat(s, session_id=lease.id, now=now))
        self._renew(lease, got, "expires_at")

    @precondition(lambda self: self.m.sessions)
    @rule(pick=st.integers(min_value=0, max_value=1_000))
    def close_session(self, pick: int) -> None:
        lease = self.m.sessions[pick % len(self.m.sessions)]
        now = self.m.clock
        got = self._step(lambda s: sessions.close(s, session_id=lease.id, actor=ACTOR, now=now))
        self._end(lease, got, "closed")

    # -- instances -----------------------------------------------------------------------

    @rule(
        fingerprint=st.sampled_from(FINGERPRINTS),
        kind=st.sampled_from(["vm", "vm", "container", "cluster", "gpu"]),
        tenant=st.sampled_from(MOSTLY_NO_TENANT),
    )
    def register(self, fingerprint: str, kind: str, tenant: str | None) -> None:
        m, now = self.m, self.m.clock
        data = InstanceRegister(fingerprint=fingerprint, kind=kind, tenant=tenant)
        got = self._step(
            lambda s: instances.register(
                s, customer_key=self.named, data=data, actor=ACTOR, now=now
            )
        )
        weight = KINDS.get(kind)
        if weight is None:
            got.refused(ValidationFailed)
            return
        current = next(
            (i for i in m.instances if i.key == fingerprint and i.ended_at is None), None
        )
        if current is not None and current.expires_at > now:
            if (current.kind, current.tenant) != (kind, tenant):
                got.refused(instances.InstanceChanged)
                return
            registration = got.ok()
            current.expires_at = now + current.ttl
            assert not registration.created and registration.instance.id == current.id
            assert registration.instance.lease_expires_at == current.expires_at
            return
        # A lapsed `current` is ended only if the registration goes through: a refusal rolls
        # the whole transaction back.
        live = [i for i in m.instances if i.live(now)]
        if tenant is not None:
            in_tenant = [i for i in live if i.tenant == tenant]
            used_by_tenant = sum(i.weight for i in in_tenant)
            if used_by_tenant + weight > BLUE_INSTANCES:
                got.refused(
                    pools.PoolFull,
                    reason="tenant_quota_reached",
                    pool="instances",
                    limit=BLUE_INSTANCES,
                    held=used_by_tenant,
                    frees_at=_soonest(in_tenant),
                    tenant=tenant,
                )
                return
        used = sum(i.weight for i in live)
        if used + weight > m.instance_limit:
            got.refused(
                pools.PoolFull,
                reason="instance_limit_reached",
                pool="instances",
                limit=m.instance_limit,
                held=used,
                frees_at=_soonest(live),
                weight=weight,
            )
            return
        registration = got.ok()
        assert registration.created
        row = registration.instance
        if current is not None:  # it had lapsed: ended at its expiry, a new row starts
            current.ended_at, current.end_reason = current.expires_at, "expired"
        assert (row.fingerprint, row.kind, row.weight, row.tenant) == (
            fingerprint,
            kind,
            weight,
            tenant,
        )
        assert row.registered_at == now and row.lease_expires_at == now + LEASE_TTL
        m.instances.append(
            Lease(row.id, fingerprint, tenant, now, now + LEASE_TTL, LEASE_TTL, kind, weight)
        )

    @precondition(lambda self: self.m.instances)
    @rule(pick=st.integers(min_value=0, max_value=1_000))
    def heartbeat_instance(self, pick: int) -> None:
        lease = self.m.instances[pick % len(self.m.instances)]
        now = self.m.clock
        got = self._step(lambda s: instances.heartbeat(s, instance_id=lease.id, now=now))
        self._renew(lease, got, "lease_expires_at")

    @precondition(lambda self: self.m.instances)
    @rule(pick=st.integers(min_value=0, max_value=1_000))
    def deregister(self, pick: int) -> None:
        lease = self.m.instances[pick % len(self.m.instances)]
        now = self.m.clock
        got = self._step(
            lambda s: instances.deregister(s, instance_id=lease.id, actor=ACTOR, now=now)
        )
        self._end(lease, got, "deregistered")

    @initialize()
    def misdirected(self) -> None:
        """Unknown lease ids are 404s; a named seat on floating seats and back, 409s."""
        now = self.m.clock
        for work in (
            lambda s: sessions.heartbeat(s, session_id="ses_unknown", now=now),
            lambda s: sessions.close(s, session_id="ses_unknown", actor=ACTOR, now=now),
            lambda s: instances.heartbeat(s, instance_id="ins_unknown", now=now),
            lambda s: instances.deregister(s, instance_id="ins_unknown", actor=ACTOR, now=now),
        ):
            self._step(work).refused(NotFound)
        self._step(
            lambda s: direct.assign(
                s,
                customer_key=self.floating,
                subject="ann",
                type="member",
                tenant=None,
                actor=ACTOR,
                now=now,
            )
        ).refused(seats.WrongSeatModel)
        self._step(
            lambda s: sessions.open_session(
                s, customer_key=self.named, subject="ann", tenant=None, actor=ACTOR, now=now
            )
        ).refused(seats.WrongSeatModel)

    # -- contracts, clock, reaper --------------------------------------------------------

    def _amend(self, key: str, body: dict[str, Any]) -> None:
        contract_id, revision = self.contracts[key]
        data = ContractAmend.model_validate({**body, "effective_at": self.m.clock})
        view = self._step(
            lambda s: amendments.amend(
                s, contract_id=contract_id, data=data, if_match=revision, actor=ACTOR
            )
        ).ok()
        self.contracts[key] = (contract_id, view.contract.revision)

    @precondition(lambda self: self.amendments < 2)
    @rule(
        limit=st.integers(min_value=1, max_value=4),
        extra=st.integers(min_value=0, max_value=2),
        window=st.sampled_from(sorted(WINDOWS)),
        instance_limit=st.sampled_from([2, 4, 5, 6]),
        session_limit=st.integers(min_value=1, max_value=3),
    )
    def amend(
        self, limit: int, extra: int, window: str, instance_limit: int, session_limit: int
    ) -> None:
        """Both contracts get new limits from the current moment on; nothing held is freed."""
        m = self.m
        self._amend(
            self.named,
            {
                "seats": {"limit": limit, "burst": {"extra": extra, "window": window}},
                "instances": {"limit": instance_limit},
            },
        )
        self._amend(self.floating, {"seats": {"limit": session_limit}})
        m.seat_limit, m.burst_extra, m.burst_window = limit, extra, WINDOWS[window]
        m.instance_limit, m.session_limit = instance_limit, session_limit
        self.amendments += 1
        self._grandfather()

    @rule(by=ADVANCES)
    def advance(self, by: timedelta) -> None:
        self.m.clock += by

    def _lapsed(self) -> bool:
        leases = self.m.sessions + self.m.instances
        return any(x.ended_at is None and x.expires_at <= self.m.clock for x in leases)

    @precondition(_lapsed)  # a reaper with nothing to do is rarely worth a step
    @rule()
    def reap(self) -> None:
        m = self.m
        done = self._run(run_once(self.h.maker, now=m.clock))
        expected = {"sessions_expired": 0, "instances_expired": 0}
        for name, leases in (("sessions_expired", m.sessions), ("instances_expired", m.instances)):
            for lease in leases:
                if lease.ended_at is None and lease.expires_at <= m.clock:
                    lease.ended_at, lease.end_reason = lease.expires_at, "expired"
                    expected[name] += 1
        assert {k: done[k] for k in expected} == expected

    # -- invariants ----------------------------------------------------------------------

    def _counts(self) -> dict[str, int]:
        now = self.m.clock
        return {
            "members": len(self.m.live_seats("member")),
            "sessions": sum(1 for x in self.m.sessions if x.live(now)),
            "instances": sum(i.weight for i in self.m.instances if i.live(now)),
        }

    def _limits(self) -> dict[str, int]:
        m = self.m
        return {"members": m.ceiling, "sessions": m.session_limit, "instances": m.instance_limit}

    def _grandfather(self) -> None:
        """After an amendment: what is held over the new limits stays held."""
        counts, limits = self._counts(), self._limits()
        for pool in self.grandfathered:
            self.grandfathered[pool] = max(self.grandfathered[pool], counts[pool] - limits[pool])
        if self.m.episode() is None:
            self.unbursted = max(self.unbursted, counts["members"] - self.m.seat_limit)

    @invariant()
    def database_matches_the_model(self) -> None:
        """Every allocation row (live or ended) is the model's, field for field; the live
        counts at the simulated clock are the model's; and no pool holds more than its limit
        allows (the burst ceiling for members), save what a lowered limit left in place."""
        m, counts, limits = self.m, self._counts(), self._limits()
        named, floating = self.ids[self.named], self.ids[self.floating]
        ids = {"named": named, "floating": floating}

        async def read() -> tuple[dict[str, list[tuple[Any, ...]]], dict[str, int]]:
            async with session_scope(self.h.maker) as session:
                tables = {
                    name: sorted(
                        map(tuple, await session.execute(text(sql), {"c": ids[of]})), key=repr
                    )
                    for name, (sql, of) in TABLES.items()
                }
                params = {"n": named, "f": floating, "now": m.clock}
                live = (await session.execute(LIVE, params)).one()._asdict()
                return tables, live

        tables, live = self._run(read())
        for name, rows in (
            ("seats", m.seats),
            ("bursts", m.episodes),
            ("sessions", m.sessions),
            ("instances", m.instances),
        ):
            assert tables[name] == sorted(map(astuple, rows), key=repr), name
        guests = len(m.live_seats("guest"))
        counted = (live.pop("counted_members"), live.pop("counted_guests"))
        assert live == {**counts, "guests": guests}
        assert counted == (counts["members"], guests), "seat_counts drifted from the seats"

        for pool, held in counts.items():
            over = held - limits[pool]
            assert over <= self.grandfathered[pool], (pool, held, limits[pool])
            self.grandfathered[pool] = max(0, min(self.grandfathered[pool], over))
        assert len(m.live_seats("guest")) <= GUESTS
        assert sum(1 for e in m.episodes if e.ended_at is None) <= 1
        # Members over the limit only ever come from an open episode (or a lowered limit).
        if m.episode() is None:
            over = counts["members"] - m.seat_limit
            assert over <= self.unbursted, (counts["members"], m.seat_limit)
            self.unbursted = max(0, min(self.unbursted, over))


# -- the test --------------------------------------------------------------------------------


@pytest.fixture
async def published(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    """An empty database with the demo policy published (each example adds its customers)."""
    await publish_policy(client, admin, demo_document())


def test_allocations_never_diverge_from_the_model(published: None, stores: Any) -> None:
    loop = asyncio.new_event_loop()
    engine = create_engine(stores.database_url, stores.settings())
    harness = Harness(loop, create_sessionmaker(engine))
    try:
        machine = functools.partial(AllocationMachine, harness)
        run_state_machine_as_test(machine, settings=SETTINGS)  # type: ignore[arg-type]
    finally:
        loop.run_until_complete(engine.dispose())
        loop.close()
