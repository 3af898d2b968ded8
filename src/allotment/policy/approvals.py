"""Sign-off of policy versions: a second admin key approves a version before it is published.

    approve(session, version=, actor=, comment=)  → the approval (audited `policy.approved`)
    list_approvals(session, version=)             → every approval of the version, oldest first
    use_approval(session, version=, actor=)       → the approving actor, the approval now used

With `ALLOTMENT_POLICY_REQUIRE_APPROVAL=true` a publish needs an unused approval of the
version by a key other than the one asking to publish (docs/release-notes.md#sign-off):
none at all is a 409 `approval-required`; approvals only by the publishing key are a 403
`self-approval`. Each approval serves one publish. A rollback needs none: it returns to a
version that was published before, and it is the way out of a bad publish.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from allotment.audit import service as audit
from allotment.errors import Conflict, Forbidden
from allotment.kit.clock import utcnow
from allotment.kit.ids import new_id
from allotment.policy.catalog_cache import PolicyNotFound
from allotment.policy.models import PolicyApproval, PolicyVersion

__all__ = ["ApprovalRequired", "SelfApproval", "approve", "list_approvals", "use_approval"]


class ApprovalRequired(Conflict):
    type = "approval-required"
    title = "The version needs an approval"


class SelfApproval(Forbidden):
    type = "self-approval"
    title = "A key cannot approve its own publish"


async def approve(
    session: AsyncSession, *, version: int, actor: str, comment: str | None = None
) -> PolicyApproval:
    exists = (
        await session.execute(select(PolicyVersion.version).where(PolicyVersion.version == version))
    ).scalar_one_or_none()
    if exists is None:
        raise PolicyNotFound(f"Policy version {version} does not exist.")
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
    if not unused:
        raise ApprovalRequired(
            f"Publishing policy version {version} needs an approval from a second admin key "
            f"(ALLOTMENT_POLICY_REQUIRE_APPROVAL is on): have another admin "
            f"`POST /v1/policies/{version}/approvals`, then publish again."
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
