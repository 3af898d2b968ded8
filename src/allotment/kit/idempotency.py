"""`Idempotency-Key` for mutating POSTs (docs/design.md, "The API"), stored in PostgreSQL
with the effect.

    first request          lock the key (transaction advisory lock), run, store the response
                           in the same transaction as the effect
    retry, same body       the stored response, replayed byte for byte (`Idempotent-Replayed`)
    retry, other body      422
    retry while in flight  409 (the first still holds the lock)
    after an erasure       a stored response naming the erased subject becomes a tombstone:
                           the retry gets 409 `idempotency-key-erased`, not the old answer
                           and not a new effect (docs/privacy.md)
    after 24 h             the key is forgotten (`allotment worker` purges it)

A request that fails stores nothing, so its retry runs again. Keys are scoped to the API
key that sent them, so two callers can never collide.

An endpoint takes `idempotency: IdempotencyDep` after its principal and session, and returns
`await idempotency.respond(model, status=201)`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Annotated, Any

import orjson
import psycopg
from fastapi import Depends, Request
from pydantic import BaseModel
from sqlalchemy import DateTime, LargeBinary, SmallInteger, Text, delete, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column
from starlette.responses import Response

from allotment.db import Base, driver, request_session
from allotment.errors import (
    PROBLEM_MEDIA_TYPE,
    PROBLEM_TYPE_BASE,
    AllotmentError,
    BadRequest,
    Conflict,
    ValidationFailed,
)
from allotment.kit.jsonx import dumps

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255


class IdempotencyRecord(Base):
    __tablename__ = "idempotency_keys"

    principal: Mapped[str] = mapped_column(Text, primary_key=True)
    key: Mapped[str] = mapped_column(Text, primary_key=True)
    request_hash: Mapped[str] = mapped_column(Text)
    status: Mapped[int] = mapped_column(SmallInteger)
    body: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[Any] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[Any] = mapped_column(DateTime(timezone=True), index=True)


class IdempotentReplay(AllotmentError):
    """Not an error: carries a stored response out of the dependency to be sent as is."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__("replay", status=status)
        self.body = body


@dataclass
class Idempotency:
    session: AsyncSession
    principal: str | None
    key: str | None
    request_hash: str | None
    ttl_s: int

    async def respond(self, model: BaseModel | Any, *, status: int = 200) -> Response:
        payload = model.model_dump(mode="json") if isinstance(model, BaseModel) else model
        body = dumps(payload)
        if self.key is not None:
            # An expired row with the same key may still be there; it is replaced.
            pg = await driver(self.session)
            await pg.execute(
                _STORE, (self.principal, self.key, self.request_hash, status, body, self.ttl_s)
            )
        return Response(body, status_code=status, media_type="application/json")


async def _idempotency(
    request: Request, session: Annotated[AsyncSession, Depends(request_session, scope="function")]
) -> Idempotency:
    ttl = request.app.state.settings.idempotency_ttl_s
    key = request.headers.get(HEADER)
    principal = getattr(request.state, "principal", None)
    if key is None or principal is None:
        return Idempotency(session, None, None, None, ttl)
    if not usable_key(key):
        raise BadRequest(f"{HEADER} must be 1 to {MAX_KEY_LENGTH} characters.")
    owner = principal.key_id
    # A CloudEvent in binary mode carries its attributes in `ce-*` headers: part of what a
    # retry must repeat.
    attributes = sorted(f"{k}:{v}" for k, v in request.headers.items() if k.startswith("ce-"))
    body = await request.body()
    if attributes:
        body = "\n".join(attributes).encode() + b"\n\n" + body
    request_hash = fingerprint(request.method, request.url.path, body)
    # Held until this transaction ends: a concurrent retry of the same key cannot take it.
    # The lock's key is defined once, in SQL (migration 0014), for the seat fast path too.
    locked = (
        await session.execute(
            text("SELECT allotment_idempotency_lock(:p, :k)"), {"p": owner, "k": key}
        )
    ).scalar_one()
    if not locked:
        raise in_flight()
    stored = (
        await session.execute(
            select(IdempotencyRecord).where(
                IdempotencyRecord.principal == owner,
                IdempotencyRecord.key == key,
                IdempotencyRecord.expires_at > func.now(),
            )
        )
    ).scalar_one_or_none()
    if stored is not None:
        if stored.request_hash != request_hash:
            raise reused()
        raise IdempotentReplay(stored.status, stored.body)
    return Idempotency(session, owner, key, request_hash, ttl)


def usable_key(key: str | None) -> bool:
    return key is not None and 0 < len(key) <= MAX_KEY_LENGTH


def fingerprint(method: str, path: str, body: bytes) -> str:
    """What a retry must repeat to be replayed: the method, the path and the body."""
    return hashlib.sha256(b"\n".join([method.encode(), path.encode(), body])).hexdigest()


def in_flight() -> Conflict:
    return Conflict(
        f"A request with this {HEADER} is still in progress; retry when it completes.",
        type="idempotency-in-flight",
    )


def reused() -> ValidationFailed:
    return ValidationFailed(
        f"This {HEADER} was used with a different request; use a new key.",
        type="idempotency-key-reused",
    )


_STORE = (
    "INSERT INTO idempotency_keys (principal, key, request_hash, status, body, created_at, "
    "expires_at) VALUES (%s, %s, %s, %s, %s, now(), now() + make_interval(secs => %s)) "
    "ON CONFLICT (principal, key) DO UPDATE SET request_hash = excluded.request_hash, "
    "status = excluded.status, body = excluded.body, created_at = excluded.created_at, "
    "expires_at = excluded.expires_at"
)


async def store_and_commit(
    pg: Any,
    *,
    principal: str,
    key: str,
    request_hash: str,
    status: int,
    body: bytes,
    ttl_s: int,
    last: tuple[str, tuple[Any, ...]] | None = None,
) -> None:
    """`Idempotency.respond`'s record, on a psycopg connection inside the effect's open
    transaction (the seat fast path, which has no session), then the statement `last` (with
    its parameters) if any, then COMMIT: one round trip (bound client-side, so one query
    may hold them all)."""
    sql, params = _STORE, (principal, key, request_hash, status, body, ttl_s)
    if last is not None:
        sql, params = f"{sql}; {last[0]}", (*params, *last[1])
    await psycopg.AsyncClientCursor(pg).execute(f"{sql}; COMMIT", params)


IdempotencyDep = Annotated[Idempotency, Depends(_idempotency, scope="function")]
idempotency_for = _idempotency  # for the fast path, which runs without FastAPI's dependencies


def replay_response(exc: IdempotentReplay) -> Response:
    """The stored answer again; a versioned resource's (its body has a `revision`) with the
    `ETag` the first answer carried (kit/etag.py), so a retry can go on to `If-Match`."""
    headers = {"Idempotent-Replayed": "true"}
    revision = _revision(exc.body) if 200 <= exc.status < 300 else None
    if revision is not None:
        headers["ETag"] = f'"{revision}"'
    media = PROBLEM_MEDIA_TYPE if exc.status >= 400 else "application/json"  # a tombstone
    return Response(exc.body, status_code=exc.status, media_type=media, headers=headers)


def _revision(body: bytes) -> int | None:
    try:
        found = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    revision = found.get("revision") if isinstance(found, dict) else None
    return revision if isinstance(revision, int) and not isinstance(revision, bool) else None


async def purge_expired(session: AsyncSession) -> int:
    result = await session.execute(
        delete(IdempotencyRecord).where(IdempotencyRecord.expires_at <= func.now())
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


# The stored answer is replaced by a tombstone: the row (and its request digest, so a retry
# of that very request is still recognised, by the seat fast path's SQL too) stays until the
# key expires; its answer, which named the subject, is gone.
_FORGET = text(
    "UPDATE idempotency_keys SET status = :status, body = :tombstone "
    "WHERE position(:needle IN body) > 0"
)
ERASED_STATUS = 409
TOMBSTONE = dumps(
    {
        "type": PROBLEM_TYPE_BASE + "idempotency-key-erased",
        "title": "Conflict",
        "status": ERASED_STATUS,
        "detail": f"The answer to this {HEADER} named a subject that has since been erased, "
        "so it is neither replayed nor run again; to act for the subject again, send the "
        "request with a new key.",
    }
)


async def forget_holding(session: AsyncSession, value: str) -> int:
    """Replace the stored responses whose body holds `value` as a JSON string (an erased
    subject: docs/privacy.md) with the tombstone; a retry with their key gets it."""
    needle = orjson.dumps(value)
    params = {"needle": needle, "status": ERASED_STATUS, "tombstone": TOMBSTONE}
    result = await session.execute(_FORGET, params)
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
