"""Compiled catalogs of stored policy versions, compiled once per version per process.

    load_catalog(session)              → (active version, its Catalog)
    load_catalog(session, version=3)   → (3, the Catalog of version 3), e.g. a pinned contract

This is how every other domain reads the policy (contracts validate plans and add-ons
against it, checks and billing evaluate it). A version's document never changes once
stored — drafts are never edited and published rows are frozen by a trigger — so a
catalog cached under (version, digest) can never go stale; the digest in the key also keeps
a test database that restarts its numbering from reusing another document's catalog.
"""

from __future__ import annotations

from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from allotment.errors import AllotmentError, Conflict, NotFound
from allotment.policy.catalog import Catalog
from allotment.policy.compiler import compile_policy
from allotment.policy.models import PUBLISHED, PolicyState, PolicyVersion
from allotment.policy.validation import validate

log = structlog.get_logger("allotment.policy")

# Unbounded on purpose: a deployment publishes a few versions a week, each catalog is small,
# and evicting one that contracts still pin would only mean compiling it again.
_compiled: dict[tuple[int, str], Catalog] = {}


class NoPublishedPolicy(Conflict):
    """Nothing has been published yet, so there is no active catalog to work with."""

    type = "no-published-policy"
    title = "No published policy"

    def __init__(self, message: str | None = None, **kw: Any) -> None:
        super().__init__(
            message
            or "No policy version is published yet. Publish one first: "
            "`POST /v1/policies` then `POST /v1/policies/{version}/publish`, "
            "or `allotment policy publish FILE`.",
            **kw,
        )


class PolicyNotPublished(Conflict):
    type = "policy-not-published"
    title = "Policy version not published"


class PolicyNotFound(NotFound):
    type = "policy-not-found"


class PolicyUnloadable(AllotmentError):
    """A stored document no longer validates (a corrupted row, or a stricter release)."""

    status, type, title = 500, "policy-unloadable", "Policy cannot be loaded"


async def load_catalog(
    session: AsyncSession, *, version: int | None = None, published_only: bool = False
) -> tuple[int, Catalog]:
    """The compiled catalog of `version`, or of the active version when it is None.

    Raises NoPublishedPolicy (409) when `version` is None and nothing is active,
    PolicyNotFound (404) for a version that does not exist, and — with `published_only`,
    for callers that must not build on a draft, such as a contract pinning a version —
    PolicyNotPublished (409) for a draft.
    """
    if version is None:
        found = (
            await session.execute(
                select(PolicyVersion.version, PolicyVersion.digest, PolicyVersion.status)
                .join(PolicyState, PolicyState.active_version == PolicyVersion.version)
                .where(PolicyState.id == 1)
            )
        ).one_or_none()
        if found is None:
            raise NoPublishedPolicy()
    else:
        found = (
            await session.execute(
                select(PolicyVersion.version, PolicyVersion.digest, PolicyVersion.status).where(
                    PolicyVersion.version == version
                )
            )
        ).one_or_none()
        if found is None:
            raise PolicyNotFound(f"Policy version {version} does not exist.")
    number, digest, status = found
    if published_only and status != PUBLISHED:
        raise PolicyNotPublished(
            f"Policy version {number} is a draft; only a published version can be used here."
        )
    key = (number, digest)
    catalog = _compiled.get(key)
    if catalog is None:
        # Fetched only on a miss: the document is the one large column.
        document = (
            await session.execute(
                select(PolicyVersion.document).where(PolicyVersion.version == number)
            )
        ).scalar_one()
        catalog = _compile_stored(number, document)
        _compiled[key] = catalog
    return number, catalog


def _compile_stored(number: int, document: dict[str, Any]) -> Catalog:
    # The stored canonical form validates back to the same document (a property the policy
    # tests hold); this is the one pydantic pass per version per process.
    result = validate(document, stored=True)
    if result.document is None:
        log.error("policy_unloadable", version=number, errors=result.errors[:10])
        first = result.errors[0]
        raise PolicyUnloadable(
            f"Stored policy version {number} no longer validates "
            f"({first['path']}: {first['message']}); publish a corrected version."
        )
    return compile_policy(result.document)


def compiled(version: int, digest: str) -> Catalog | None:
    """The catalog of (version, digest) if this process compiled it already, else None (the
    snapshot cache then loads it with `load_catalog`, or treats its entry as unusable)."""
    return _compiled.get((version, digest))


def cached_versions() -> list[tuple[int, str]]:
    """The (version, digest) pairs compiled in this process, for tests and diagnostics."""
    return list(_compiled)
