"""API keys: minting (secret shown once), listing, revoking, and authenticating a bearer."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence

from sqlalchemy import any_, literal, select
from sqlalchemy.ext.asyncio import AsyncSession

from allotment.audit import service as audit
from allotment.auth.models import ApiKey
from allotment.auth.principal import Principal
from allotment.errors import NotFound
from allotment.kit.clock import utcnow
from allotment.kit.ids import new_id
from allotment.kit.pagination import Page, paginate

KEY_PREFIX = "alm_"


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _public(key: ApiKey) -> dict[str, object]:
    return {"id": key.id, "name": key.name, "prefix": key.prefix, "scopes": list(key.scopes)}


async def create(
    session: AsyncSession, *, name: str, scopes: Sequence[str], actor: str
) -> tuple[ApiKey, str]:
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(
        id=new_id("key"),
        name=name,
        prefix=secret[:12],
        secret_hash=hash_secret(secret),
        scopes=sorted(set(scopes)),
        created_by=actor,
        created_at=utcnow(),
    )
    session.add(key)
    await session.flush()
    audit.record(
        session,
        actor=actor,
        action="api_key.created",
        target_type="api_key",
        target_key=key.id,
        after=_public(key),
    )
    return key, secret


async def list_keys(session: AsyncSession, *, limit: int, cursor: str | None) -> Page[ApiKey]:
    return await paginate(session, select(ApiKey), ApiKey.id, limit=limit, cursor=cursor)


async def revoke(session: AsyncSession, *, key_id: str, actor: str) -> ApiKey:
    key = await session.get(ApiKey, key_id, with_for_update=True)
    if key is None:
        raise NotFound(f"API key {key_id!r} does not exist.")
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        await session.flush()
        audit.record(
            session,
            actor=actor,
            action="api_key.revoked",
            target_type="api_key",
            target_key=key.id,
            before=_public(key),
            after={**_public(key), "revoked": True},
        )
    return key


async def authenticate(session: AsyncSession, secret: str) -> Principal | None:
    if not secret.startswith(KEY_PREFIX):
        return None
    digest = hash_secret(secret)
    row = (
        await session.execute(
            select(ApiKey.id, ApiKey.name, ApiKey.scopes, ApiKey.secret_hash).where(
                ApiKey.secret_hash == digest, ApiKey.revoked_at.is_(None)
            )
        )
    ).first()
    # The lookup is by hash of a 256-bit secret; the constant-time compare guards the last step.
    if row is None or not hmac.compare_digest(row.secret_hash, digest):
        return None
    return Principal(key_id=row.id, name=row.name, scopes=frozenset(row.scopes))


FIRST_ADMIN_NAME = "first-admin"


async def first_admin(session: AsyncSession, *, actor: str) -> str | None:
    """An admin key for a fresh install: created (and its secret returned) only when no
    unrevoked key with the `admin` scope exists; None otherwise."""
    exists = (
        await session.execute(
            select(ApiKey.id)
            .where(ApiKey.revoked_at.is_(None), literal("admin") == any_(ApiKey.scopes))
            .limit(1)
        )
    ).first()
    if exists:
        return None
    _, secret = await create(session, name=FIRST_ADMIN_NAME, scopes=["admin"], actor=actor)
    return secret


async def unusable_actors(session: AsyncSession, actors: Sequence[str]) -> set[str]:
    """Of `actors` (`api_key:<id>`), those whose key is revoked or does not exist: what such a
    key did earlier (a policy approval) no longer speaks for anyone. Other actors are kept."""
    ids = {a.removeprefix("api_key:") for a in actors if a.startswith("api_key:")}
    if not ids:
        return set()
    live = set(
        (
            await session.execute(
                select(ApiKey.id).where(ApiKey.id.in_(ids), ApiKey.revoked_at.is_(None))
            )
        ).scalars()
    )
    return {f"api_key:{key_id}" for key_id in ids - live}
