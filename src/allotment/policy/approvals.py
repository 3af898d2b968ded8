"""Sign-off of policy versions: a second admin key approves a version before it is published.

    approve(session, version=, actor=, comment=)  → the approval (audited `policy.approved`)
    list_approvals(session, version=)             → every approval of the version, oldest first
    use_approval(session, version=, actor=)       → the approving actor, the approval now used

With `ALLOTMENT_POLICY_REQUIRE_APPROVAL=true` a publish needs an unused approval of the
version by a key other than the one asking to publish (docs/release-notes.md#sign-off):
none at all is a 409 `approval-required`; approvals only by the publishing key are a 403
`self-approval`. Each approval serves one publish, and a key holds at most one unused
approval of a version (a second is a 409 `already-approved`), so no approvals are stocked for
later re-activations. An approval by a key revoked since then no longer counts. A rollback
needs none: it returns to a version that was published before, and it is the way out of a
bad publish.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from allotment.audit import service as audit
from allotment.auth import service as api_keys
from allotment.errors import Conflict, Forbidden
from allotment.kit.clock import utcnow
from allotment.kit.ids import new_id
from allotment.policy.catalog_cache import PolicyNotFound
from allotment.policy.models import PolicyApproval, PolicyVersion

__all__ = [
    "AlreadyApproved",
    "ApprovalRequired",
    "SelfApproval",
    "approve",
    "list_approvals",
    "use_approval",
]


class ApprovalRequired(Conflict):
    type = "approval-required"
    title = "The version needs an approval"


class AlreadyApproved(Conflict):
    type = "already-approved"
    title = "The key already approved the version"


class SelfApproval(Forbidden):
    type = "self-approval"
    title = "A key cannot approve its own publish"


async def approve(
    session: AsyncSession, *, version: int, actor: str, comment: str | None = None
) -> PolicyApproval:
    # The version's row lock makes two approvals of it (and a publish) take turns, so two
    # concurrent approvals by one key cannot both find none unused.
    exists = (
        await session.execute(
            select(PolicyVersion.version).where(PolicyVersion.version == version).with_for_update()
        )
    ).scalar_one_or_none()
    if exists is None:
        raise PolicyNotFound(f"Policy version {version} does not exist.")
    held = (
        await session.execute(
            select(PolicyApproval.id).where(
                PolicyApproval.version == version,
                PolicyApproval.approved_by == actor,
                PolicyApproval.used_at.is_(None),
            )
        )
    ).scalar_one_or_none()
    if held is not None:
        raise AlreadyApproved(
            f"This key already approved policy version {version} ({held}) and that approval "
            "is not used yet: a key approves a version once per publish. Approve again after "
            "the publish that uses it, if the version is to be published again."
        )
    row = PolicyApproval(
        id=new_id("apr"),
        version=version,
        approved_by=actor,
        comment=comment,
        created_at=utcnow(),
    )
    session.add(row)
    await session.flush()
    audit.record(
        session,
        actor=actor,
        action="policy.approved",
        target_type="policy",
        target_key=str(version),
        after={"approval": row.id, "version": version, "comment": comment},
    )
    return row


async def list_approvals(session: AsyncSession, *, version: int) -> Sequence[PolicyApproval]:
    return (
        (
            await session.execute(
                select(PolicyApproval)
                .where(PolicyApproval.version == version)
                .order_by(PolicyApproval.created_at, PolicyApproval.id)
            )
        )
        .scalars()
        .all()
    )


async def use_approval(session: AsyncSession, *, version: int, actor: str) -> str:
    """Mark the oldest unused approval of `version` by another key as used by `actor`'s
    publish; returns who approved. The caller holds the policy_state lock, so two publishes
    cannot use one approval; the row lock keeps that true for any other caller too."""
    unused = (
        (
            await session.execute(
                select(PolicyApproval)
                .where(PolicyApproval.version == version, PolicyApproval.used_at.is_(None))
                .order_by(PolicyApproval.created_at, PolicyApproval.id)
                .with_for_update()
            )
        )
        .scalars()
        .all()
    )
    revoked = await api_keys.unusable_actors(session, [row.approved_by for row in unused])
    unused = [row for row in unused if row.approved_by not in revoked]
    if not unused:
        raise ApprovalRequired(
            f"Publishing policy version {version} needs an approval from a second admin key "
            f"(ALLOTMENT_POLICY_REQUIRE_APPROVAL is on): have another admin "
            f"`POST /v1/policies/{version}/approvals`, then publish again"
            + (" (an approval by a key revoked since does not count)." if revoked else ".")
        )
    usable = next((row for row in unused if row.approved_by != actor), None)
    if usable is None:
        raise SelfApproval(
            f"Policy version {version} is approved only by the key asking to publish it "
            f"({actor}); a second admin key must approve it."
        )
    usable.used_at = utcnow()
    usable.used_by = actor
    await session.flush()
    return usable.approved_by
