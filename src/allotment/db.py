"""The database: engine, declarative Base and the transaction boundary.

Every transaction is opened, committed and rolled back by `transaction(maker)` (database
outages → 503, a NUL → 422, before/after-commit hooks), through one of:

    request_session   one per HTTP request (a FastAPI dependency), committed after the
                      endpoint returns and *before* the response is sent, so nothing is
                      acknowledged until it is durable
    session_scope     the worker, the CLI and background tasks (the decision log)
    transaction       directly, by the check fast path's consume (check/endpoints.py), which
                      is reached without FastAPI's dependencies and opens what they would

Services and repositories only `flush()`. Outside `transaction` there are exactly two:

    hot_connection    an autocommit connection of the hot pool, for a hot path whose whole
                      write is one statement (the named-seat fast path, seats/fastpath.py;
                      with an Idempotency-Key, BEGIN goes with that statement and COMMIT
                      with the stored answer, kit/idempotency.store_and_commit)
    partitions        a month's partition is created on its own connection, outside the
                      pool (usage/partitions.ensure_months), so DDL asked for from inside a
                      transaction never waits on the pool that transaction holds

Reads that need no transaction (snapshot loads, meter use for checks) take a pooled
connection in autocommit. docs/architecture.md, "The transaction boundary", has the why.

Side effects that must not happen on rollback (cache invalidation, broadcasts) are
registered with `after_commit(session, fn)`. Work that must be the very last thing inside
the transaction (the audit chain append, which holds the chain lock until commit) is
registered with `before_commit(session, fn)`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import psycopg
import structlog
from psycopg_pool import AsyncConnectionPool
from psycopg_pool import PoolTimeout as HotPoolTimeout
from sqlalchemy import MetaData
from sqlalchemy.exc import DataError, DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase
from starlette.requests import Request

from allotment.config import Settings
from allotment.errors import ServiceUnavailable, ValidationFailed

log = structlog.get_logger("allotment.db")

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


Hook = Callable[[], Awaitable[None] | None]
SessionHook = Callable[[AsyncSession], Awaitable[None]]


def async_url(url: str) -> str:
    """Normalise a PostgreSQL URL to SQLAlchemy's psycopg 3 dialect."""
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def create_engine(url: str, settings: Settings, *, connect_timeout_s: int = 5) -> AsyncEngine:
    return create_async_engine(
        async_url(url),
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_pre_ping=True,
        pool_timeout=5,
        connect_args={
            "connect_timeout": connect_timeout_s,
            "options": f"-c statement_timeout={settings.db_statement_timeout_ms}",
        },
    )


def libpq_url(url: str) -> str:
    """A PostgreSQL URL as libpq (psycopg) takes it."""
    for prefix in ("postgresql+psycopg://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql://" + url[len(prefix) :]
    return url


def create_hot_pool(url: str, settings: Settings) -> AsyncConnectionPool:
    """Autocommit psycopg connections for the hot paths whose whole work is one statement
    (the named-seat fast path): no SQLAlchemy connection, session or transaction around it,
    and no ping per checkout. A connection an outage broke is dropped when it comes back
    to the pool, and the idle ones are then checked (`hot_connection`). Opened by the app's
    lifespan; connections are made on demand, up to `db_hot_pool_size`."""
    return AsyncConnectionPool(
        libpq_url(url),
        min_size=0,
        max_size=settings.db_hot_pool_size,
        open=False,
        name="allotment-hot",
        # A failed connect is retried with a backoff from 1 s (doubling) until this; then
        # the next request that waits for a connection starts a fresh attempt.
        reconnect_timeout=2,
        kwargs={
            "autocommit": True,
            "connect_timeout": 5,
            "options": f"-c statement_timeout={settings.db_statement_timeout_ms}",
        },
    )


_checks: set[asyncio.Task[None]] = set()


class HotPoolUnavailable(Exception):
    """No hot connection within the wait: every one busy, or none can be made (PostgreSQL
    down, or back and the pool not yet reconnected). The caller takes its general path,
    whose own pool answers the outage at once or serves the request."""


@asynccontextmanager
async def hot_connection(
    pool: AsyncConnectionPool, *, wait_s: float
) -> AsyncIterator[psycopg.AsyncConnection]:
    """A connection of the hot pool, with database failures answered as `transaction`
    answers them (503 for a lost connection, 422 for a NUL); `HotPoolUnavailable` when
    none is free within `wait_s`."""
    try:
        async with pool.connection(timeout=wait_s) as connection:
            yield connection
    except HotPoolTimeout as exc:
        raise HotPoolUnavailable() from exc
    except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
        # Its siblings were likely broken by the same outage: check them now, in the
        # background, so one request (not one per pooled connection) pays for it.
        task = asyncio.get_running_loop().create_task(pool.check())
        _checks.add(task)
        task.add_done_callback(_checks.discard)
        raise _unavailable(exc) from exc
    except psycopg.DataError as exc:
        if _holds_nul(exc):
            raise _unstorable() from exc
        raise


def create_sessionmaker(
    engine: AsyncEngine, *, info: dict[str, Any] | None = None
) -> async_sessionmaker[AsyncSession]:
    """`info` starts every session's `info` (the app's pseudonyms: privacy/pseudonyms.py)."""
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False, info=info)


def after_commit(session: AsyncSession, hook: Hook) -> None:
    session.info.setdefault("after_commit", []).append(hook)


def before_commit(session: AsyncSession, hook: SessionHook, *, key: str | None = None) -> None:
    """Run `hook(session)` just before commit; a `key` registers it once per transaction."""
    hooks: dict[Any, SessionHook] = session.info.setdefault("before_commit", {})
    hooks.setdefault(key if key is not None else object(), hook)


async def commit(session: AsyncSession) -> None:
    for hook in list(session.info.pop("before_commit", {}).values()):
        await hook(session)
    await session.commit()
    for after in session.info.pop("after_commit", []):
        try:
            result = after()
            if result is not None:
                await result
        except Exception:  # an after-commit effect must never undo an acknowledged write
            log.exception("after_commit_failed")


def _unavailable(exc: Exception) -> ServiceUnavailable:
    return ServiceUnavailable(
        "The database is unavailable; nothing was written. Retry shortly.", retry_after=2
    )


def _holds_nul(exc: DataError | psycopg.DataError) -> bool:
    """PostgreSQL stores no NUL (U+0000) in text or jsonb: psycopg refuses to send one in a
    text parameter (no SQLSTATE: it never reaches the server), and the server refuses a
    `\\u0000` in a JSON value (22P05, untranslatable_character). Through SQLAlchemy, or
    straight from the driver (`driver()`)."""
    orig = exc.orig if isinstance(exc, DataError) else exc
    sqlstate = getattr(orig, "sqlstate", None)
    return sqlstate == "22P05" or (sqlstate is None and "NUL (0x00)" in str(orig))


def _unstorable() -> ValidationFailed:
    return ValidationFailed(
        "The request holds a NUL character (U+0000), which cannot be stored.",
        errors=[{"path": "$", "message": "U+0000 (NUL) cannot be stored in any value"}],
    )


@asynccontextmanager
async def transaction(
    maker: async_sessionmaker[AsyncSession], **info: Any
) -> AsyncIterator[AsyncSession]:
    async with maker() as session, guarded(session, **info):
        yield session


@asynccontextmanager
async def guarded(session: AsyncSession, **info: Any) -> AsyncIterator[AsyncSession]:
    """`transaction` on a session already open (the replica's, replica.read_session)."""
    session.info.update(info)
    try:
        yield session
        await commit(session)
    except (
        OperationalError,
        InterfaceError,
        # Straight from the driver (`driver()`): a lost connection is the same outage.
        psycopg.OperationalError,
        psycopg.InterfaceError,
        # Every pooled connection busy for pool_timeout: overloaded, try again shortly.
        PoolTimeout,
    ) as exc:
        await _safe_rollback(session)
        raise _unavailable(exc) from exc
    except (DataError, psycopg.DataError) as exc:
        await _safe_rollback(session)
        if _holds_nul(exc):  # the caller's text, not the service, is at fault: a 422
            raise _unstorable() from exc
        raise
    except DBAPIError as exc:
        await _safe_rollback(session)
        if exc.connection_invalidated:
            raise _unavailable(exc) from exc
        raise
    except BaseException:
        await _safe_rollback(session)
        raise


async def _safe_rollback(session: AsyncSession) -> None:
    try:
        await session.rollback()
    except Exception:  # the connection may be gone; the server rolls back on its own
        log.debug("rollback_failed")


async def request_session(request: Request) -> AsyncIterator[AsyncSession]:
    """FastAPI dependency (scope="function"): one transaction per request."""
    async with transaction(
        request.app.state.sessionmaker,
        request_id=getattr(request.state, "request_id", None),
        bus=getattr(request.app.state, "bus", None),
    ) as session:
        yield session


def session_scope(maker: async_sessionmaker[AsyncSession], **info: Any) -> Any:
    """One transaction for the worker and the CLI."""
    return transaction(maker, **info)


async def driver(session: AsyncSession) -> Any:
    """The psycopg connection under the session, inside its transaction: for the few hot
    statements where SQLAlchemy's per-statement cost (~150 µs) is most of the work."""
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    return raw.driver_connection
