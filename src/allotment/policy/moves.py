"""Moving the active policy pointer: publish and rollback (the pointer moves only here).

    publish(session, version=, actor=, force=False, summary=None, require_approval=False)
                                                       → the version, now active
    rollback(session, to_version=, actor=, force=False, summary=None)
                                                       → the version, active again
    PointerMove, PointerMoveHook                       what the pointer-move hooks see

Publish and rollback lock the single `policy_state` row (SELECT … FOR UPDATE, service.py
`lock_state`), so they run one at a time and the pointer always names the version of
whichever committed last; each bumps the global policy version, audited in the same
transaction, and announces it after commit (allotment.invalidation). Both refuse a version
that would orphan live unpinned contracts (`contracts.orphans.find_orphans`: 409
`policy-orphans-contracts`, naming each contract and what it would lose) unless `force`; a
forced move audits what it orphaned (docs/policy.md#orphaned-contracts).

With `require_approval` (ALLOTMENT_POLICY_REQUIRE_APPROVAL) a publish first uses a second
key's approval (policy/approvals.py). Before the pointer moves, while it still names the
previous version, every `wiring.pointer_move_hooks()` hook sees the move (`PointerMove`):
the release notes are written there (docs/release-notes.md).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import text, update
from sqlalchemy.ext.asyncio import AsyncSession

from allotment import invalidation, wiring
from allotment.audit import service as audit
from allotment.contracts import entitlements
from allotment.contracts.orphans import Orphan, find_orphans
from allotment.errors import Conflict
from allotment.kit.clock import utcnow
from allotment.policy.approvals import use_approval
from allotment.policy.catalog_cache import PolicyNotPublished, load_catalog
from allotment.policy.models import DRAFT, PUBLISHED, PolicyState, PolicyVersion
from allotment.policy.service import STATE_ID, PolicyPointer, get, lock_state
from allotment.usage import lifecycle

__all__ = [
    "MAX_ORPHANS_LISTED",
    "PointerMove",
    "PointerMoveHook",
    "PolicyAlreadyActive",
    "PolicyOrphansContracts",
    "publish",
    "rollback",
]


class PolicyOrphansContracts(Conflict):
    type = "policy-orphans-contracts"
    title = "The version would orphan live contracts"


# At most this many orphaned contracts are named in a 409 or an audit record (with the total).
MAX_ORPHANS_LISTED = 1_000


class PolicyAlreadyActive(Conflict):
    type = "policy-already-active"
    title = "Policy version already active"


@dataclass(frozen=True)
class PointerMove:
    """A publish or rollback about to move the active pointer from `previous` to `version`
    (in the move's transaction, the pointer not yet moved)."""

    action: Literal["publish", "rollback"]
    version: int
    previous: int | None
    actor: str
    at: datetime
    summary: str | None = None
    approved_by: str | None = None  # the key whose approval the publish used


# What a hook does runs in the move's transaction: raising refuses the move.
PointerMoveHook = Callable[[AsyncSession, PointerMove], Awaitable[None]]


async def publish(
    session: AsyncSession,
    *,
    version: int,
    actor: str,
    force: bool = False,
    summary: str | None = None,
    require_approval: bool = False,
) -> PolicyVersion:
    """Publish `version` (freezing it) and make it active.

    Publishing a version that is already published makes it active again; the global
    version is bumped either way, so every worker rebuilds from the pointer it now names.
    Refused (409 policy-already-active) for the version already active, as rollback is.
    Refused (409) when it would orphan live contracts, unless `force`; with
    `require_approval`, refused (409/403) without another key's unused approval.
    """
    state = await lock_state(session)
    row = await get(session, version, for_update=True)
    if state.active_version == version:
        # As rollback refuses it: the move would change nothing, so it must not use an
        # approval or replace the notes that explain the version.
        raise PolicyAlreadyActive(
            f"Policy version {version} is already the active version: nothing to publish."
        )
    orphaned = await _orphan_guard(session, state=state, to=version, force=force, verb="Publishing")
    approved_by = (
        await use_approval(session, version=version, actor=actor) if require_approval else None
    )
    now = utcnow()
    if row.status == DRAFT:
        row.status = PUBLISHED
        row.published_at = now
        row.published_by = actor
        # Flushed before the pointer moves: the policy_state trigger refuses a draft.
        await session.flush()
    move = PointerMove(
        action="publish",
        version=version,
        previous=state.active_version,
        actor=actor,
        at=now,
        summary=summary,
        approved_by=approved_by,
    )
    await _run_hooks(session, move)
    await _move_pointer(
        session,
        state=state,
        to=row,
        action="policy.published",
        actor=actor,
        orphaned=orphaned,
        approved_by=approved_by,
    )
    return row


async def rollback(
    session: AsyncSession,
    *,
    to_version: int,
    actor: str,
    force: bool = False,
    summary: str | None = None,
) -> PolicyVersion:
    """Point the active pointer back at `to_version`, a published version that is not active."""
    state = await lock_state(session)
    row = await get(session, to_version)
    if row.status != PUBLISHED:
        raise PolicyNotPublished(
            f"Policy version {to_version} is a draft: roll back only to a published version "
            f"(publish a draft with `POST /v1/policies/{to_version}/publish`)."
        )
    if state.active_version == to_version:
        raise PolicyAlreadyActive(f"Policy version {to_version} is already the active version.")
    orphaned = await _orphan_guard(
        session, state=state, to=to_version, force=force, verb="Rolling back to"
    )
    move = PointerMove(
        action="rollback",
        version=to_version,
        previous=state.active_version,
        actor=actor,
        at=utcnow(),
        summary=summary,
    )
    await _run_hooks(session, move)
    await _move_pointer(
        session, state=state, to=row, action="policy.rolled_back", actor=actor, orphaned=orphaned
    )
    return row


async def _run_hooks(session: AsyncSession, move: PointerMove) -> None:
    for hook in wiring.pointer_move_hooks():
        await hook(session, move)


async def _orphan_guard(
    session: AsyncSession, *, state: PolicyPointer, to: int, force: bool, verb: str
) -> list[Orphan] | None:
    """The contracts moving the pointer to `to` would orphan; 409 naming them unless `force`.

    None when nothing is orphaned (or nothing is active yet: no contract can exist)."""
    if state.active_version is None or state.active_version == to:
        return None
    current = await load_catalog(session, version=state.active_version)
    proposed = await load_catalog(session, version=to)
    orphaned = await find_orphans(session, current=current, proposed=proposed, now=utcnow())
    if not orphaned:
        return None
    if not force:
        listed = ", ".join(o.contract for o in orphaned[:3]) + (", …" if len(orphaned) > 3 else "")
        raise PolicyOrphansContracts(
            f"{verb} policy version {to} would orphan {len(orphaned)} live "
            f"contract{'s' if len(orphaned) != 1 else ''} ({listed}): see `orphaned` for what "
            "each would lose. Amend or pin them first, or repeat the request with ?force=true.",
            extra=_orphans_json(orphaned),
        )
    return orphaned


def _orphans_json(orphaned: list[Orphan]) -> dict[str, Any]:
    return {
        "orphaned": [o.to_json() for o in orphaned[:MAX_ORPHANS_LISTED]],
        "orphaned_total": len(orphaned),
    }


# -- the pointer -----------------------------------------------------------------------------


async def _move_pointer(
    session: AsyncSession,
    *,
    state: PolicyPointer,
    to: PolicyVersion,
    action: str,
    actor: str,
    orphaned: list[Orphan] | None = None,
    approved_by: str | None = None,
) -> int:
    """Point the active version at `to` (the caller locked the row), bump the global version,
    audit the move and announce it after commit; returns the new global version.

    `orphaned`: the move was forced over these contracts; the audit record says so.
    `approved_by`: the key whose approval the publish used; the audit record names it."""
    bumped: Any = (
        await session.execute(
            update(PolicyState)
            .where(PolicyState.id == STATE_ID)
            .values(
                active_version=to.version,
                global_version=PolicyState.global_version + 1,
                updated_at=utcnow(),
            )
            .returning(PolicyState.global_version)
        )
    ).scalar_one()
    global_version = int(bumped)
    audit.record(
        session,
        actor=actor,
        action=action,
        target_type="policy",
        target_key=str(to.version),
        before={"active_version": state.active_version, "global_version": state.global_version},
        after={
            "active_version": to.version,
            "global_version": global_version,
            "digest": to.digest,
            **({} if approved_by is None else {"approved_by": approved_by}),
            **(
                {}
                if not orphaned
                else {"forced": True, "forced_by": actor, **_orphans_json(orphaned)}
            ),
        },
    )
    await session.execute(
        text("INSERT INTO policy_activations (version, at, action) VALUES (:v, :at, :a)"),
        {"v": to.version, "at": utcnow(), "a": action},
    )
    lifecycle.emit(
        session,
        type=action,
        customer_id=None,
        data={"version": to.version, "digest": to.digest, "previous": state.active_version},
    )
    invalidation.announce_policy(
        session,
        global_version=global_version,
        version=to.version,
        rollback=action == "policy.rolled_back",
    )
    await _announce(session, state=state, to=to, action=action)
    return global_version


async def _announce(
    session: AsyncSession, *, state: PolicyPointer, to: PolicyVersion, action: str
) -> None:
    """entitlements.changed for each contract in force the move changes (docs/webhooks.md);
    policy.published goes out from a pointer-move hook, with the release notes."""
    previous = None if state.active_version is None else await get(session, state.active_version)
    if previous is None or previous.version == to.version:
        return
    await entitlements.announce_activation(
        session,
        current=await load_catalog(session, version=previous.version),
        proposed=await load_catalog(session, version=to.version),
        cause="publish" if action == "policy.published" else "rollback",
        now=utcnow(),
    )
