"""Instances: register under a lease, renew by heartbeat, deregister, list.

The pool counts the sum of the kind weights of live instances (not ended, lease ahead);
a kind the plan does not list is a 422. An instance registered with a `subject` is that seat
holder's device (instances/devices.py); releasing the seat ends it. Registering a
fingerprint that is live renews its lease (same row, 200); one whose lease lapsed is ended
at its expiry and registered afresh (a new row, a new interval). Registration takes the pool
lock (`contracts.pools.lock`), so weights are summed and the new row inserted as one step
for every racing request; renewals and deregistrations are single conditional UPDATEs
(`kit/leases.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, select, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession

from allotment import invalidation
from allotment.contracts import pools
from allotment.db import after_commit
from allotment.errors import Conflict, ValidationFailed
from allotment.instances import devices, surge
from allotment.instances.models import Instance
from allotment.instances.schemas import InstanceRead, InstanceRegister
from allotment.kit import leases
from allotment.kit.clock import isoformat, utcnow
from allotment.kit.ids import new_id
from allotment.kit.metrics import ALLOCATIONS
from allotment.kit.pagination import Page, paginate
from allotment.kit.reads import from_row
from allotment.privacy import pseudonyms
from allotment.usage import lifecycle

COLUMNS = (
    "id, customer_id, fingerprint, kind, weight, environment, tenant, subject, metadata, ttl_s, "
    "registered_at, lease_expires_at, ended_at, end_reason"
)
TABLE = leases.LeaseTable(
    table="instances", expiry="lease_expires_at", ended_by_caller="deregistered", columns=COLUMNS
)
_CURRENT = text(
    f"SELECT {COLUMNS} FROM instances WHERE customer_id = :c AND fingerprint = :f "
    "AND ended_at IS NULL"
)
_RENEW = text(
    "UPDATE instances SET lease_expires_at = :expires, environment = :env, metadata = :meta "
    f"WHERE id = :id RETURNING {COLUMNS}"
).bindparams(bindparam("meta", type_=JSONB))
_LAPSE = text(
    "UPDATE instances SET ended_at = lease_expires_at, end_reason = 'expired' WHERE id = :id"
)
_USED = text(
    "SELECT coalesce(sum(weight), 0) AS used, min(lease_expires_at) AS frees_at, "
    "coalesce(sum(weight) FILTER (WHERE tenant = :tenant), 0) AS in_tenant, "
    "min(lease_expires_at) FILTER (WHERE tenant = :tenant) AS tenant_frees_at "
    "FROM instances WHERE customer_id = :c AND ended_at IS NULL AND lease_expires_at > :now"
)
_INSERT = text(
    "INSERT INTO instances (id, customer_id, fingerprint, kind, weight, environment, tenant, "
    "subject, metadata, ttl_s, registered_at, lease_expires_at) VALUES (:id, :c, :f, :kind, "
    f":weight, :env, :tenant, :subject, :meta, :ttl, :now, :expires) RETURNING {COLUMNS}"
).bindparams(bindparam("meta", type_=JSONB))
_END_DEVICES = text(
    "UPDATE instances SET ended_at = :now, end_reason = 'seat_released' WHERE customer_id = :c "
    f"AND subject = :s AND ended_at IS NULL AND lease_expires_at > :now RETURNING {COLUMNS}"
)


class InstanceChanged(Conflict):
    type = "instance-changed"
    title = "Instance registered differently"


@dataclass(frozen=True)
class Registration:
    instance: Any
    customer: str
    created: bool

    def read(self) -> InstanceRead:
        return read(self.instance, self.customer)


def read(row: Any, customer: str) -> InstanceRead:
    return from_row(InstanceRead, row, customer=customer)


def audit_view(row: Any, subject_ref: str | None) -> dict[str, Any]:
    """The instance as its audit record and lifecycle event show it: a device's holder by
    pseudonym (docs/privacy.md)."""
    return {
        "id": row.id,
        "fingerprint": row.fingerprint,
        "kind": row.kind,
        "weight": row.weight,
        "environment": row.environment,
        "tenant": row.tenant,
        "subject": subject_ref,
        "registered_at": isoformat(row.registered_at),
        "lease_expires_at": isoformat(row.lease_expires_at),
        "ended_at": None if row.ended_at is None else isoformat(row.ended_at),
        "end_reason": row.end_reason,
    }


async def register(
    session: AsyncSession,
    *,
    customer_key: str,
    data: InstanceRegister,
    actor: str,
    now: datetime | None = None,
) -> Registration:
    found = await pools.lock(session, customer_key=customer_key, at=now)
    now = found.at
    pool = found.instances()
    weight = pool.weight(data.kind)
    if weight is None:
        kinds = ", ".join(sorted(pool.kinds))
        message = f"kind '{data.kind}' is not one the plan allows ({kinds})"
        raise ValidationFailed(
            f"The instance's {message}.", errors=[{"path": "kind", "message": message}]
        )
    c = found.customer_id
    ttl = pool.lease_ttl
    params = {"meta": data.metadata, "env": data.environment}
    current = (await session.execute(_CURRENT, {"c": c, "f": data.fingerprint})).one_or_none()
    if current is not None and current.lease_expires_at > now:
        if (current.kind, current.tenant, current.subject) != (
            data.kind,
            data.tenant,
            data.subject,
        ):
            raise InstanceChanged(
                f"Fingerprint {data.fingerprint!r} is live as kind '{current.kind}'"
                + (f" in tenant '{current.tenant}'" if current.tenant else "")
                + (f" for subject {current.subject!r}" if current.subject else "")
                + "; deregister it before registering it differently."
            )
        row = (
            await session.execute(
                _RENEW,
                {**params, "id": current.id, "expires": now + timedelta(seconds=current.ttl_s)},
            )
        ).one()
        if current.environment != data.environment or current.metadata != data.metadata:
            # Rules read them (docs/policy.md, "Rules and CEL"): reload the snapshot. A
            # renewal that changes neither invalidates nothing (the lease is read at `now`).
            await invalidation.bump_customer(session, customer_id=c, customer_key=customer_key)
        return Registration(row, customer_key, created=False)
    if current is not None:  # lapsed, not reaped yet: its interval ends at its expiry
        await session.execute(_LAPSE, {"id": current.id})
        lifecycle.record(
            session,
            customer_id=c,
            actor=actor,
            action="instance.expired",
            target_type="instance",
            target_key=f"{customer_key}/{current.id}",
            after=audit_view(current, _ref(session, customer_key, current)),
        )
    if data.subject is not None:  # a device: its holder's seat and device limit
        await devices.admit(session, pools=found, subject=data.subject, now=now)
    used = (await session.execute(_USED, {"c": c, "tenant": data.tenant, "now": now})).one()
    if data.tenant is not None:
        quotas = await pools.tenant_quotas(session, customer_id=c, tenant=data.tenant)
        if quotas.instances is not None:
            pools.refuse_tenant(
                tenant=data.tenant,
                pool="instances",
                quota=quotas.instances,
                held=used.in_tenant,
                wanted=weight,
                frees_at=used.tenant_frees_at,
            )
    if used.used + weight > pool.limit:
        raise pools.PoolFull(
            f"Live instances weigh {used.used} of the limit of {pool.limit}; a '{data.kind}' "
            f"weighs {weight}.",
            reason="instance_limit_reached",
            pool="instances",
            limit=pool.limit,
            held=used.used,
            frees_at=used.frees_at,
            weight=weight,
        )
    row = (
        await session.execute(
            _INSERT,
            {
                **params,
                "id": new_id("ins"),
                "c": c,
                "f": data.fingerprint,
                "kind": data.kind,
                "weight": weight,
                "tenant": data.tenant,
                "subject": data.subject,
                "ttl": int(ttl.total_seconds()),
                "now": now,
                "expires": now + ttl,
            },
        )
    ).one()
    lifecycle.record(
        session,
        customer_id=c,
        actor=actor,
        action="instance.registered",
        target_type="instance",
        target_key=f"{customer_key}/{row.id}",
        after=audit_view(row, _ref(session, customer_key, row)),
    )
    await invalidation.bump_customer(session, customer_id=c, customer_key=customer_key)
    after_commit(session, ALLOCATIONS.labels("instances", "granted").inc)
    await surge.on_registered(
        session,
        surge=found.alerts.instance_surge,
        customer_id=c,
        customer_key=customer_key,
        now=now,
    )
    return Registration(row, customer_key, created=True)


def _ref(session: AsyncSession, customer_key: str, row: Any) -> str | None:
    return pseudonyms.of_session(session).ref(customer_key, row.subject)


async def end_devices(
    session: AsyncSession,
    *,
    customer_id: int,
    customer_key: str,
    subject: str,
    actor: str,
    now: datetime,
) -> int:
    """End `subject`'s live devices at `now` (`instance.seat_released`, audited): its seat was
    released, under the pool lock. Lapsed ones are left to the reaper, which ends them at
    their expiry. The caller invalidates. Returns how many were ended."""
    rows = (await session.execute(_END_DEVICES, {"c": customer_id, "s": subject, "now": now})).all()
    for row in sorted(rows, key=lambda r: r.id):
        lifecycle.record(
            session,
            customer_id=customer_id,
            actor=actor,
            action="instance.seat_released",
            target_type="instance",
            target_key=f"{customer_key}/{row.id}",
            after=audit_view(row, _ref(session, customer_key, row)),
        )
    return len(rows)


async def heartbeat(
    session: AsyncSession, *, instance_id: str, now: datetime | None = None
) -> tuple[Any, str]:
    """Renew a live instance's lease (`contracts.pools.renew_lease`)."""
    return await pools.renew_lease(session, TABLE, instance_id, "instance", now or utcnow())


async def deregister(
    session: AsyncSession, *, instance_id: str, actor: str, now: datetime | None = None
) -> tuple[Any, str]:
    return await pools.end_lease(
        session, TABLE, instance_id, "instance", actor=actor, view=audit_view, now=now or utcnow()
    )


async def list_instances(
    session: AsyncSession,
    *,
    customer_key: str,
    limit: int,
    cursor: str | None,
    now: datetime | None = None,
) -> Page[Any]:
    """The live instances (lease ahead), by id."""
    c = await pools.customer_id(session, customer_key=customer_key)
    table = Instance.__table__
    query = select(*table.c).where(
        table.c.customer_id == c,
        table.c.ended_at.is_(None),
        table.c.lease_expires_at > (now or utcnow()),
    )
    return await paginate(session, query, Instance.id, limit=limit, cursor=cursor, scalars=False)


_ERASE = text(
    "UPDATE instances SET subject = :ref WHERE customer_id = :c AND subject = :s "
    "AND subject <> :ref"
)


async def erase_subject(
    session: AsyncSession,
    *,
    customer_id: int,
    customer_key: str,
    subject: str,
    ref: str,
    actor: str,
    now: datetime,
) -> tuple[int, int]:
    """An erasure (privacy/service.py): end `subject`'s live devices (as a seat's release
    does), then keep its pseudonym `ref` on every device row instead. Returns the devices
    ended and the rows rewritten."""
    ended = await end_devices(
        session,
        customer_id=customer_id,
        customer_key=customer_key,
        subject=subject,
        actor=actor,
        now=now,
    )
    result = await session.execute(_ERASE, {"c": customer_id, "s": subject, "ref": ref})
    return ended, int(result.rowcount or 0)  # type: ignore[attr-defined]
