"""Annotated dependency aliases: the session, Redis, the settings and the caller's principal.

Every route declares who may call it, with exactly one of `require(...)` or `public()`;
`tests/auth/test_route_scopes.py` walks the app and fails for a route that declares neither.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Depends, Header, Request
from redis.asyncio import Redis
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from allotment.auth import service as api_keys
from allotment.auth.principal import Principal
from allotment.config import Settings
from allotment.db import request_session
from allotment.errors import BadRequest, Forbidden, ServiceUnavailable, Unauthorized
from allotment.replica import read_session

SessionDep = Annotated[AsyncSession, Depends(request_session, scope="function")]


async def _read_session(
    request: Request,
    state_version: Annotated[
        int | None,
        Header(
            alias="Allotment-State-Version",
            ge=0,
            description="Read at least this state version of the customer in the path (a "
            "version seen in the change stream or an artifact). Matters only with a read "
            "replica, and only on routes that read one customer (docs/scale-out.md).",
        ),
    ] = None,
) -> AsyncIterator[AsyncSession]:
    customer = request.path_params.get("key")
    async with read_session(request, customer=customer, wanted=state_version) as session:
        yield session


# A transaction for a route that only reads and may read from the replica, when one is
# configured (replica.py): the customer it reads is the path's `key`, when it has one;
# otherwise the read counts as one of every customer. Elsewhere, `replica.read_session`.
ReadSessionDep = Annotated[AsyncSession, Depends(_read_session, scope="function")]


def _settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


def _redis(request: Request) -> Redis:
    return request.app.state.redis  # type: ignore[no-any-return]


SettingsDep = Annotated[Settings, Depends(_settings)]
RedisDep = Annotated[Redis, Depends(_redis)]

_READ_METHODS = frozenset({"GET", "HEAD"})


def _bearer(request: Request) -> str:
    header = request.headers.get("authorization")
    if not header:
        raise Unauthorized("Send an API key as `Authorization: Bearer <key>`.")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("The Authorization header must be `Bearer <key>`.")
    return token.strip()


async def authenticate(request: Request, token: str | None = None) -> Principal:
    """The caller of `request`, by the key in `Authorization: Bearer` (or `token`, a key a
    route takes from elsewhere: OFREP's `X-API-Key`)."""
    token = token or _bearer(request)
    cache = request.app.state.principals
    digest = api_keys.hash_secret(token)
    principal: Principal | None = cache.get(digest)
    if principal is None:
        try:
            async with request.app.state.sessionmaker() as session:
                principal = await api_keys.authenticate(session, token)
        except (OperationalError, InterfaceError, OSError) as exc:
            # PostgreSQL is down: a key this worker verified recently still works, so cached
            # checks keep being served (docs/design.md, "Architecture" degraded modes).
            settings = request.app.state.settings
            principal = cache.last_known(digest, max_age=settings.snapshot_stale_max_s)
            if principal is None:
                raise ServiceUnavailable(
                    "Cannot verify the API key: the database is down."
                ) from exc
            request.state.principal = principal
            return principal
        if principal is None:
            raise Unauthorized("The API key is unknown or revoked.")
        cache.put(digest, principal)
    request.state.principal = principal
    return principal


class Require:
    """Authorise the caller: `admin` always passes; otherwise one of `scopes`, or — for a
    read of the customer named by the path parameter `customer_param` (or, on a route that
    reads every customer unless told one, by the query parameter `customer_query`) —
    `customer:<key>`."""

    def __init__(
        self,
        *scopes: str,
        customer_param: str | None = None,
        customer_query: str | None = None,
    ) -> None:
        self.scopes = scopes
        self.customer_param = customer_param
        self.customer_query = customer_query

    async def __call__(self, request: Request) -> Principal:
        principal = await authenticate(request)
        customer = request.path_params.get(self.customer_param) if self.customer_param else None
        if self.customer_query:
            named = request.query_params.getlist(self.customer_query)
            if len(named) > 1:  # the guard and the route must read the same one
                raise BadRequest(f"Give `{self.customer_query}` at most once.")
            customer = named[0] if named else None
        if not principal.allows(
            self.scopes, customer=customer, read_only=request.method in _READ_METHODS
        ):
            needed = " or ".join(("admin", *self.scopes))
            if self.customer_query and customer is None and principal.customer_scoped:
                raise Forbidden(
                    f"A customer-scoped key reads only its own customer here: name it, "
                    f"`?{self.customer_query}=<key>`."
                )
            raise Forbidden(f"This API key lacks the scope this route needs ({needed}).")
        return principal

    def __repr__(self) -> str:
        return f"Require{self.scopes}"


class Public:
    """Marks a route that needs no API key (health, readiness, metrics)."""

    async def __call__(self) -> None:
        return None


def require(
    *scopes: str, customer_param: str | None = None, customer_query: str | None = None
) -> Any:
    return Depends(Require(*scopes, customer_param=customer_param, customer_query=customer_query))


def public() -> Any:
    return Depends(Public())


AdminDep = Annotated[Principal, require()]
