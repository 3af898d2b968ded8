"""Signing keys: made on first use, rotated, retired, published; every change audited.

    ensure(session, sealer=, actor=)        one `active` and one `next` key exist (first use)
    rotate(session, sealer=, actor=)        next → active, active → retired, a new next
    retire(session, kid=, sealer=, actor=)  retire one key; an active one hands over to next
    list_keys(session)                      every key, oldest first
    published(session, now=)                the keys of the JWKS: next, active, and retired
                                            ones whose last artifact is still valid
    extend(pg, kid=, until=)                raise a key's `signed_until` (issuing an artifact)

Every change takes one transaction-scoped advisory lock, so concurrent first uses, rotations
and retirements run one after the other (the unique partial indexes of migration 0015 hold
"one active, one next" even against a writer that skipped it). Before a key is made in a
table that has keys, or made active, the secret must open the key that will sign: a wrong
secret is refused with `SigningSecretMismatch` instead of leaving keys nobody can use.
After commit the change is announced on the bus (`invalidation.announce_signing_keys`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from allotment import invalidation
from allotment.audit import service as audit
from allotment.errors import Conflict, NotFound
from allotment.kit.clock import isoformat, utcnow
from allotment.kit.ids import new_id
from allotment.signing import jose
from allotment.signing.models import SigningKey
from allotment.signing.secret import Sealer

_LOCK = text("SELECT pg_advisory_xact_lock(7478015)")  # 0015: the signing keys' one lock
_EXTEND = (
    "UPDATE signing_keys SET signed_until = greatest(signed_until, %(until)s) "
    "WHERE kid = %(kid)s AND state = 'active' RETURNING state"
)


class KeyRetired(Conflict):
    type = "signing-key-retired"
    title = "Signing key already retired"


def view(key: SigningKey) -> dict[str, Any]:
    """A key as the audit log and `allotment keys list` show it (never its private half)."""
    return {
        "kid": key.kid,
        "state": key.state,
        "created_at": isoformat(key.created_at),
        "activated_at": None if key.activated_at is None else isoformat(key.activated_at),
        "retired_at": None if key.retired_at is None else isoformat(key.retired_at),
        "signed_until": None if key.signed_until is None else isoformat(key.signed_until),
    }


async def list_keys(session: AsyncSession) -> Sequence[SigningKey]:
    found = await session.execute(select(SigningKey).order_by(SigningKey.created_at))
    return found.scalars().all()


async def published(session: AsyncSession, *, now: datetime) -> Sequence[SigningKey]:
    """Next, active, and retired keys that signed an artifact still valid (or in grace) at
    `now`, oldest first."""
    query = (
        select(SigningKey)
        .where(
            (SigningKey.state != "retired")
            | (SigningKey.signed_until.is_not(None) & (SigningKey.signed_until > now))
        )
        .order_by(SigningKey.created_at, SigningKey.kid)  # a first active and next share a time
    )
    return (await session.execute(query)).scalars().all()


async def extend(pg: Any, *, kid: str, until: datetime) -> str | None:
    """Raise the active key `kid`'s `signed_until` to `until` (never lower it), on the
    psycopg connection `pg`: `active`, or None when `kid` is not (or no longer) the active
    key, and then nothing changes. A rotation committed before this statement is seen here,
    so the caller signs only when this answers `active`; and since it raises `signed_until`
    before the artifact exists, a key is never published for less than its artifacts'
    validity. On an autocommit connection (the issuer's way: artifacts/service.py) the row
    is locked for this one statement only, so artifacts signed at once do not queue on it."""
    cursor = await pg.execute(_EXTEND, {"kid": kid, "until": until})
    row = await cursor.fetchone()
    return None if row is None else str(row[0])


async def _new_key(
    session: AsyncSession, *, state: str, sealer: Sealer, actor: str, now: datetime
) -> SigningKey:
    kid = new_id("sig")
    public, private = jose.generate(kid)
    key = SigningKey(
        kid=kid,
        state=state,
        public_jwk=public,
        private_sealed=sealer.seal(private, kid=kid),
        created_at=now,
        activated_at=now if state == "active" else None,
    )
    session.add(key)
    await session.flush()
    audit.record(
        session,
        actor=actor,
        action="signing_key.created",
        target_type="signing_key",
        target_key=kid,
        after=view(key),
    )
    return key


def _opens(sealer: Sealer, key: SigningKey) -> None:
    """Raises SigningSecretMismatch unless `sealer` opens `key`'s private half."""
    sealer.open(key.private_sealed, kid=key.kid)


async def _locked_keys(session: AsyncSession) -> dict[str, SigningKey]:
    """Take the lock; the unretired keys by state."""
    await session.execute(_LOCK)
    query = select(SigningKey).where(SigningKey.state != "retired").with_for_update()
    return {key.state: key for key in (await session.execute(query)).scalars()}


async def _any_key(session: AsyncSession) -> SigningKey | None:
    query = select(SigningKey).order_by(SigningKey.created_at.desc()).limit(1)
    return (await session.execute(query)).scalar_one_or_none()


async def ensure(
    session: AsyncSession, *, sealer: Sealer, actor: str, now: datetime | None = None
) -> bool:
    """Make the missing keys of the pair (both, on first use). True when it made any."""
    have = {row[0] for row in await session.execute(text("SELECT state FROM signing_keys"))}
    if {"active", "next"} <= have:
        return False
    now = now or utcnow()
    keys = await _locked_keys(session)
    if "active" in keys and "next" in keys:
        return False  # another process made them while this one waited for the lock
    existing = keys.get("next") or keys.get("active") or await _any_key(session)
    if existing is not None:
        _opens(sealer, existing)  # never add keys under a secret the others were not made with
    if "active" not in keys:
        if "next" in keys:
            await _activate(session, keys.pop("next"), actor=actor, now=now)
        else:
            await _new_key(session, state="active", sealer=sealer, actor=actor, now=now)
    await _new_key(session, state="next", sealer=sealer, actor=actor, now=now)
    invalidation.announce_signing_keys(session)
    return True


async def _activate(session: AsyncSession, key: SigningKey, *, actor: str, now: datetime) -> None:
    before = view(key)
    key.state = "active"
    key.activated_at = now
    await session.flush()
    audit.record(
        session,
        actor=actor,
        action="signing_key.activated",
        target_type="signing_key",
        target_key=key.kid,
        before=before,
        after=view(key),
    )


async def _retire(
    session: AsyncSession, key: SigningKey, *, actor: str, now: datetime, withdraw: bool = False
) -> None:
    before = view(key)
    key.state = "retired"
    key.retired_at = now
    if withdraw:
        key.signed_until = now
    await session.flush()  # before a next key is promoted: one active key at every moment
    audit.record(
        session,
        actor=actor,
        action="signing_key.retired",
        target_type="signing_key",
        target_key=key.kid,
        before=before,
        after=view(key),
    )


async def rotate(
    session: AsyncSession, *, sealer: Sealer, actor: str, now: datetime | None = None
) -> dict[str, SigningKey]:
    """next → active, active → retired, a new next. Returns the keys by their new role:
    `active`, `next`, `retired`."""
    now = now or utcnow()
    await ensure(session, sealer=sealer, actor=actor, now=now)
    keys = await _locked_keys(session)
    active, following = keys["active"], keys["next"]
    _opens(sealer, following)  # the key about to sign must open under this secret
    await _retire(session, active, actor=actor, now=now)
    await _activate(session, following, actor=actor, now=now)
    fresh = await _new_key(session, state="next", sealer=sealer, actor=actor, now=now)
    invalidation.announce_signing_keys(session)
    return {"active": following, "next": fresh, "retired": active}


async def retire(
    session: AsyncSession,
    *,
    kid: str,
    sealer: Sealer,
    actor: str,
    now: datetime | None = None,
    withdraw: bool = False,
) -> dict[str, SigningKey]:
    """Retire `kid`. An active key hands over to the next key, and a new next is made; a
    retired next key is replaced. Returns the keys by role, as `rotate` does.

    `withdraw` (a compromised key): its `signed_until` becomes now, so the key set drops it
    at once and every artifact it signed stops verifying wherever the set is refetched."""
    now = now or utcnow()
    await ensure(session, sealer=sealer, actor=actor, now=now)
    keys = await _locked_keys(session)
    key = await session.get(SigningKey, kid)
    if key is None:
        raise NotFound(f"No signing key {kid!r}.")
    if key.state == "retired":
        raise KeyRetired(f"Signing key {kid} was retired at {isoformat(key.retired_at or now)}.")
    was_active = key.state == "active"
    signs_next = keys["next"] if was_active else keys["active"]
    _opens(sealer, signs_next)  # the key that signs afterwards must open under this secret
    await _retire(session, key, actor=actor, now=now, withdraw=withdraw)
    if was_active:
        await _activate(session, signs_next, actor=actor, now=now)
    fresh = await _new_key(session, state="next", sealer=sealer, actor=actor, now=now)
    invalidation.announce_signing_keys(session)
    return {"active": signs_next, "next": fresh, "retired": key}
