"""Policy versions: store drafts, read them and the active pointer, compare them.

    create_draft(session, text=, media_type=, actor=)  → (version, created), deduplicated
    get(session, version), get_active(session)         → a version (404 when there is none)
    list_versions(session, limit=, cursor=)            → a page, newest first
    pointer(session)                                   → (active_version, global_version)
    activations(session, as_of=)                       → (version, at) of each activation
    averaged_event_types(session)                      → what published `average` meters read
    diff(session, version=, against=)                  → added / removed / changed, by path
    load_catalog(session, version=None)                → (version, Catalog); see catalog_cache.py
    lock_state(session)                                → the pointer, its row locked until commit

The active pointer moves only in policy/moves.py (publish, rollback). Draft creation takes
the pointer's lock (`lock_state`) as they do, so versions are numbered 1, 2, 3… without
gaps and two posts of one document make one draft.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from allotment.audit import service as audit
from allotment.errors import NotFound, UnsupportedMediaType, ValidationFailed
from allotment.kit.clock import utcnow
from allotment.kit.jsonx import canonical
from allotment.kit.pagination import Page, paginate
from allotment.policy.catalog_cache import (
    NoPublishedPolicy,
    PolicyNotFound,
    PolicyNotPublished,
    load_catalog,
)
from allotment.policy.compiler import digest as policy_digest
from allotment.policy.diff import PolicyDiff
from allotment.policy.diff import diff as diff_documents
from allotment.policy.document import canonical_form
from allotment.policy.models import DRAFT, PolicyState, PolicyVersion
from allotment.policy.validation import UnsupportedPolicyMediaType, load

__all__ = [
    "NoActivePolicy",
    "NoPublishedPolicy",
    "PolicyNotFound",
    "PolicyNotPublished",
    "PolicyPointer",
    "create_draft",
    "diff",
    "get",
    "get_active",
    "list_versions",
    "lock_state",
    "load_catalog",
    "pointer",
]

STATE_ID = 1


class NoActivePolicy(NotFound):
    type = "no-active-policy"


@dataclass(frozen=True)
class PolicyPointer:
    active_version: int | None
    global_version: int


# -- reads -----------------------------------------------------------------------------------


async def pointer(session: AsyncSession) -> PolicyPointer:
    row = (
        await session.execute(
            select(PolicyState.active_version, PolicyState.global_version).where(
                PolicyState.id == STATE_ID
            )
        )
    ).one_or_none()
    if row is None:
        return PolicyPointer(active_version=None, global_version=0)
    return PolicyPointer(active_version=row.active_version, global_version=row.global_version)


_ACTIVATIONS = text("SELECT version, at FROM policy_activations WHERE at <= :as_of ORDER BY at, id")


async def activations(session: AsyncSession, *, as_of: datetime) -> Sequence[Any]:
    """(version, at) of every activation recorded by `as_of`, in order: which version was
    active when (billing prices each interval under the version active then)."""
    return (await session.execute(_ACTIVATIONS, {"as_of": as_of})).all()


_AVERAGED = text(
    "SELECT DISTINCT m.value ->> 'event_type' FROM policy_versions v "
    "CROSS JOIN LATERAL jsonb_each(v.document -> 'meters') m "
    "WHERE v.status = 'published' AND m.value ->> 'aggregation' = 'average'"
)


async def averaged_event_types(session: AsyncSession) -> list[str]:
    """The event types an `average` meter of any published version reads: its readings
    in a period are read one by one (usage/gauges.py), so the retention keeps them."""
    return sorted((await session.execute(_AVERAGED)).scalars().all())


async def get(session: AsyncSession, version: int, *, for_update: bool = False) -> PolicyVersion:
    query = select(PolicyVersion).where(PolicyVersion.version == version)
    if for_update:
        query = query.with_for_update().execution_options(populate_existing=True)
    row = (await session.execute(query)).scalar_one_or_none()
    if row is None:
        raise PolicyNotFound(f"Policy version {version} does not exist.")
    return row


async def get_active(session: AsyncSession) -> PolicyVersion:
    active = (await pointer(session)).active_version
    if active is None:
        raise NoActivePolicy(
            "No policy version is active: none has been published yet. "
            "Publish one with `POST /v1/policies/{version}/publish` or "
            "`allotment policy publish FILE`."
        )
    return await get(session, active)


async def list_versions(
    session: AsyncSession, *, limit: int, cursor: str | None
) -> Page[PolicyVersion]:
    """Newest first."""
    return await paginate(
        session,
        select(PolicyVersion),
        PolicyVersion.version,
        limit=limit,
        cursor=cursor,
        descending=True,
    )


async def diff(session: AsyncSession, *, version: int, against: int) -> PolicyDiff:
    """What `version` adds, removes and changes relative to `against` (the old side)."""
    new = await get(session, version)
    old = await get(session, against)
    return diff_documents(old.document, new.document)


# -- writes ----------------------------------------------------------------------------------


async def create_draft(
    session: AsyncSession, *, text: str | bytes, media_type: str, actor: str
) -> tuple[PolicyVersion, bool]:
    """Validate and store a draft; `created` is False when the same content already exists.

    "The same content" is the same digest of the canonical form, so the JSON and the YAML
    spelling of one document, or one with its defaults written out, are one version.
    """
    try:
        result = load(text, media_type)
    except UnsupportedPolicyMediaType as exc:
        raise UnsupportedMediaType(str(exc)) from None
    if result.document is None:
        raise ValidationFailed(
            f"The policy is not valid: {len(result.errors)} "
            f"error{'s' if len(result.errors) != 1 else ''}; see `errors` for each, by path.",
            errors=[dict(error) for error in result.errors],
        )
    form = canonical_form(result.document)
    if "\\u0000" in canonical(form):
        # PostgreSQL's jsonb cannot hold a NUL character; say so rather than fail with a 500.
        raise ValidationFailed(
            "The policy is not valid: it contains a NUL character (\\u0000).",
            errors=[{"path": "$", "message": "a string contains a NUL character (\\u0000)"}],
        )
    digest = policy_digest(result.document)
    existing = await _by_digest(session, digest)
    if existing is not None:
        return existing, False
    await lock_state(session)
    # Again under the lock: a concurrent post of the same document may have just committed.
    existing = await _by_digest(session, digest)
    if existing is not None:
        return existing, False
    number = (
        await session.execute(select(func.coalesce(func.max(PolicyVersion.version), 0) + 1))
    ).scalar_one()
    row = PolicyVersion(
        version=number,
        status=DRAFT,
        digest=digest,
        document=form,
        source=text.decode("utf-8-sig") if isinstance(text, bytes) else text,
        media_type=media_type.split(";", 1)[0].strip().lower(),
        created_at=utcnow(),
        created_by=actor,
    )
    session.add(row)
    await session.flush()
    audit.record(
        session,
        actor=actor,
        action="policy.created",
        target_type="policy",
        target_key=str(number),
        after={"version": number, "status": DRAFT, "digest": digest},
    )
    return row, True


async def _by_digest(session: AsyncSession, digest: str) -> PolicyVersion | None:
    return (
        await session.execute(select(PolicyVersion).where(PolicyVersion.digest == digest))
    ).scalar_one_or_none()


# -- the pointer -----------------------------------------------------------------------------


async def lock_state(session: AsyncSession) -> PolicyPointer:
    """Lock the policy_state row until commit; every publish, rollback and draft waits here.

    Without the lock two publishes could each read the pointer, each bump the global version
    from the same value, and leave a pointer that matches neither audit record's `after`.
    """
    # The migration inserts the row; recreating it keeps an emptied table (a test that
    # truncates, a partial restore) working instead of failing every publish.
    await session.execute(
        insert(PolicyState)
        .values(id=STATE_ID, active_version=None, global_version=0)
        .on_conflict_do_nothing(index_elements=["id"])
    )
    row = (
        await session.execute(
            select(PolicyState.active_version, PolicyState.global_version)
            .where(PolicyState.id == STATE_ID)
            .with_for_update()
        )
    ).one()
    return PolicyPointer(active_version=row.active_version, global_version=row.global_version)
