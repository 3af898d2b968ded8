"""The ASGI application: `create_app()` wires settings, stores, caches, routes and errors.

The lifespan opens the engine, the Redis client, the invalidation bus and the change
stream's hub and keeps them on `app.state`; when no database or Redis URL is configured it
starts the embedded servers.
"""

from __future__ import annotations

import contextlib
import gc
import inspect
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import psycopg
import structlog
from fastapi import FastAPI, Request
from fastapi.routing import APIRoute
from sqlalchemy.exc import DBAPIError
from starlette.responses import Response

from allotment import embedded, invalidation
from allotment import redis_client as redis_store
from allotment.artifacts.endpoints import router as artifacts_router
from allotment.audit.endpoints import router as audit_router
from allotment.auth.cache import REVOKED_TOPIC, PrincipalCache
from allotment.auth.endpoints import router as api_keys_router
from allotment.billing.endpoints import router as billing_router
from allotment.check.credit_use import WalletCache
from allotment.check.decisions import DecisionLog
from allotment.check.endpoints import router as check_router
from allotment.check.fastpath import CheckFastPath
from allotment.check.meter_use import UsageCache
from allotment.check.service import Checker
from allotment.check.snapshot import SnapshotCache
from allotment.config import Settings, get_settings
from allotment.contracts.endpoints import router as contracts_router
from allotment.credits.endpoints import router as credits_router
from allotment.customers.endpoints import router as customers_router
from allotment.db import create_engine, create_hot_pool, create_sessionmaker
from allotment.deps import Public
from allotment.errors import document_problems, install_handlers
from allotment.impact.endpoints import router as dry_run_router
from allotment.instances.endpoints import router as instances_router
from allotment.kit import logs
from allotment.kit.clock import utcnow
from allotment.kit.idempotency import IdempotentReplay, replay_response
from allotment.kit.metrics import watch_gc
from allotment.kit.middleware import BodyGuard, RequestContext
from allotment.kit.shutdown import on_exit_signal
from allotment.ofrep import openapi as ofrep_openapi
from allotment.ofrep.endpoints import router as ofrep_router
from allotment.ofrep.fastpath import PREFIX as OFREP_PREFIX
from allotment.ofrep.fastpath import OfrepFastPath, body_refusal
from allotment.ops import apidocs
from allotment.ops.endpoints import router as ops_router
from allotment.policy.endpoints import router as policies_router
from allotment.portal import pages as portal_pages
from allotment.portal.endpoints import router as portal_router
from allotment.privacy.endpoints import router as privacy_router
from allotment.privacy.pseudonyms import INFO_KEY as PSEUDONYMS
from allotment.privacy.pseudonyms import from_settings, loggable_path
from allotment.releases.endpoints import router as releases_router
from allotment.replica import Replica
from allotment.seats.endpoints import router as seats_router
from allotment.seats.fastpath import SeatFastPath
from allotment.signing.endpoints import router as signing_router
from allotment.signing.keyring import KeyRing
from allotment.stream.endpoints import router as stream_router
from allotment.stream.hub import READ_BLOCK_MS, Hub
from allotment.tenants.endpoints import router as tenants_router
from allotment.usage import partitions
from allotment.usage.broker import Broker
from allotment.usage.endpoints import router as usage_router
from allotment.webhooks.endpoints import router as webhooks_router

log = structlog.get_logger("allotment.app")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    servers = embedded.start(settings)
    engine = create_engine(servers.database_url, settings)
    replica = (
        Replica.create(settings.database_replica_url, settings, primary_url=servers.database_url)
        if settings.database_replica_url
        else None
    )
    hot_pool = create_hot_pool(servers.database_url, settings)
    redis = redis_store.connect(settings, servers.redis_url)
    bus = invalidation.make_bus(redis, settings)
    assert bus.journal is not None
    stream = Hub(
        redis=redis,
        # XREAD BLOCK waits up to READ_BLOCK_MS on a connection of its own.
        reader=redis_store.connect(
            settings, servers.redis_url, timeout_s=READ_BLOCK_MS / 1000 + 2.0
        ),
        journal=bus.journal,
        client_queue=settings.stream_client_queue,
    )
    principals = PrincipalCache(
        ttl=settings.auth_cache_ttl_s,
        ttl_bus_up=settings.auth_cache_ttl_bus_up_s,
        bus_connected=lambda: bus.connected,
    )
    bus.subscribe(REVOKED_TOPIC, principals.drop_key)
    bus.on_reconnect(principals.clear)
    if replica is not None:
        replica.watch(bus)
    # Subjects' pseudonyms (privacy/pseudonyms.py): in every session, the fast paths' state,
    # the decision log and the access log.
    pseudonyms = from_settings(settings)
    maker = create_sessionmaker(engine, info={PSEUDONYMS: pseudonyms})
    decisions = DecisionLog(maker, sample_rate=settings.decision_sample_rate, pseudonyms=pseudonyms)
    snapshots = SnapshotCache.from_settings(
        settings, maker=maker, redis=redis, bus=bus, replica=replica
    )
    app.state.engine = engine
    app.state.replica = replica
    # Events through JetStream when a broker is set (usage/broker.py), else straight in.
    broker = Broker(settings) if settings.events_broker else None
    app.state.broker = broker
    app.state.hot_pool = hot_pool
    app.state.sessionmaker = maker
    app.state.pseudonyms = pseudonyms
    app.state.redis = redis
    app.state.bus = bus
    app.state.stream = stream
    app.state.principals = principals
    usage = UsageCache(
        maker=maker,
        refresh_s=settings.usage_refresh_s,
        active_s=settings.usage_active_s,
        max_stale_s=max(1.0, 2 * settings.usage_refresh_s),
    )
    if replica is not None:  # this worker's events and consumes: read from the primary
        usage.on_forget.append(replica.note)
    app.state.checker = Checker(
        snapshots=snapshots,
        decisions=decisions,
        usage=usage,
        warn_at=tuple(Decimal(str(t)) for t in settings.usage_warning_thresholds),
        wallets=WalletCache(maker=maker),
    )
    # The signing keys: read (and on first use made) when an artifact or the JWKS is asked for.
    app.state.keyring = KeyRing(maker=maker, settings=settings, bus=bus)
    await hot_pool.open()
    if replica is not None:
        replica.start()
    if broker is not None:
        broker.start()
    await bus.start()
    await stream.start()
    # uvicorn waits for running requests before the lifespan ends: end the streams first.
    forget_signal = on_exit_signal(stream.close)
    await decisions.start()
    with contextlib.suppress(DBAPIError, psycopg.Error, OSError):  # PostgreSQL down: made later
        await partitions.startup(engine, now=utcnow(), late_window_s=settings.events_late_window_s)
    # Everything built so far lives as long as the process: keep it out of the cyclic GC's
    # scans, and collect the young generation less often (fewer pauses on the hot path).
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    watch_gc()
    # A Redis Cluster that cannot be used (not a cluster, a wrong password, no node up) is
    # said at start in words; the service runs without it, as with Redis down
    # (docs/scale-out.md, "When the cluster is not usable").
    if problem := await redis_store.cluster_problem(settings):
        log.warning("redis_cluster_unusable", reason=problem)
    log.info("started")
    try:
        yield
    finally:
        forget_signal()
        await stream.stop()
        await usage.stop()
        await decisions.stop()
        if broker is not None:
            await broker.stop()
        await bus.stop()
        await redis.aclose()
        await hot_pool.close()
        if replica is not None:
            await replica.stop()
        await engine.dispose()
        servers.stop()


def _api_routes(app: FastAPI) -> list[APIRoute]:
    try:
        from fastapi.routing import iter_route_contexts

        routes = [ctx.original_route for ctx in iter_route_contexts(app.routes)]
    except ImportError:  # older FastAPI: the routes are flat already
        routes = list(app.routes)
    return [route for route in routes if isinstance(route, APIRoute)]


def _is_public(route: APIRoute) -> bool:
    pending = [route.dependant]
    while pending:
        dependant = pending.pop()
        if isinstance(dependant.call, Public):
            return True
        pending.extend(dependant.dependencies)
    return False


BEARER = "bearer"


def _declare_security(document: dict[str, Any], *, public: set[tuple[str, str]]) -> None:
    """The API key as an OpenAPI security scheme (so `/docs` can authorise, and generated
    clients send the key), required by every operation but the public ones."""
    document.setdefault("components", {})["securitySchemes"] = {
        BEARER: {
            "type": "http",
            "scheme": "bearer",
            "description": "An API key (`allotment api-keys create`, or POST /v1/api-keys): "
            "`Authorization: Bearer alm_…`. Scopes: `admin`, `check`, `finance`, `customer:{key}`.",
        }
    }
    for path, operations in document.get("paths", {}).items():
        for method, operation in operations.items():
            if (path, method) not in public:
                operation["security"] = [{BEARER: []}]


def _name_inline_bodies(document: dict[str, Any]) -> None:
    """Request bodies documented inline (the check fast path's, `openapi_extra`) become
    named components, like every body FastAPI parses itself, so generated clients get a
    `CheckBody` type rather than an anonymous one."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            content = operation.get("requestBody", {}).get("content", {})
            for media in content.values():
                schema = media.get("schema", {})
                name = schema.get("title")
                if name and schema.get("type") == "object" and name not in schemas:
                    schemas.update(schema.pop("$defs", {}))
                    schemas[name] = schema
                    media["schema"] = {"$ref": f"#/components/schemas/{name}"}


_GENERIC_NAME = re.compile(r"^PageRead_(\w+?)(?:Read)?_$")


def _name_pages(document: dict[str, Any]) -> None:
    """`CustomerPage` for the schema of `PageRead[CustomerRead]`, which pydantic names
    `PageRead_CustomerRead_`: clean names for the clients generated from the document."""
    schemas = document.get("components", {}).get("schemas", {})
    renamed = {
        old: f"{found.group(1)}Page" for old in list(schemas) if (found := _GENERIC_NAME.match(old))
    }
    if not renamed:
        return
    for old, new in renamed.items():
        schemas[new] = schemas.pop(old)
        schemas[new]["title"] = new
    prefix = "#/components/schemas/"
    refs = {prefix + old: prefix + new for old, new in renamed.items()}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("$ref") in refs:
                node["$ref"] = refs[node["$ref"]]
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(document)


def _declare_problems(app: FastAPI) -> None:
    """The OpenAPI document declares the problem+json error responses (errors.py) once."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            public = {
                (route.path, method.lower())
                for route in _api_routes(app)
                if _is_public(route)
                for method in route.methods or ()
            }
            document = build()
            document_problems(document, public=public)
            _declare_security(document, public=public)
            _name_inline_bodies(document)
            _name_pages(document)
            ofrep_openapi.declare(document)  # the protocol's shapes, not problem+json
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]


# FastAPI 0.16x asks OpenTelemetry on every request whether a provider is configured (2-3 %
# of a check's CPU, measured with py-spy in bench/run.py). Allotment's telemetry is its
# Prometheus metrics (docs/reliability.md); older FastAPI releases have no such option.
_NO_OPENTELEMETRY: dict[str, Any] = (
    {"telemetry": {"tracing": False, "metrics": False, "logs": False}}
    if "telemetry" in inspect.signature(FastAPI.__init__).parameters
    else {}
)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    logs.configure(settings.log_level, json=settings.log_json)
    app = FastAPI(
        title="Allotment",
        version="0.1.0",
        summary="Centralized entitlements: seats, instances, features, usage and billing.",
        lifespan=lifespan,
        docs_url=None,  # /docs and /redoc come from the package: ops/apidocs.py
        redoc_url=None,
        **_NO_OPENTELEMETRY,
    )
    app.state.settings = settings
    install_handlers(app)

    @app.exception_handler(IdempotentReplay)
    async def _replay(request: Request, exc: IdempotentReplay) -> Response:
        return replay_response(exc)

    # Routes are matched in order: the hot path (/v1/check) first.
    routers = (
        check_router,
        ops_router,
        api_keys_router,
        customers_router,
        policies_router,
        dry_run_router,
        releases_router,
        contracts_router,
        tenants_router,
        seats_router,
        privacy_router,
        instances_router,
        usage_router,
        billing_router,
        credits_router,
        audit_router,
        stream_router,
        artifacts_router,
        signing_router,
        ofrep_router,
        webhooks_router,
        portal_router,
        portal_pages.router,
    )
    for router in routers:
        app.include_router(router)
    apidocs.install(app)
    _declare_problems(app)
    app.add_middleware(SeatFastPath)  # innermost of ours: after ids, logs and body limits
    app.add_middleware(CheckFastPath)
    app.add_middleware(OfrepFastPath, cors_origins=settings.ofrep_cors_origins)
    app.add_middleware(
        BodyGuard,
        max_bytes=settings.max_body_bytes,
        protocols={OFREP_PREFIX: body_refusal, portal_pages.PREFIX: portal_pages.body_refusal},
    )
    app.add_middleware(RequestContext, path_of=loggable_path)
    return app
