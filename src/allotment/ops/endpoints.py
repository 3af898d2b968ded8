from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from allotment import redis_client
from allotment.deps import public
from allotment.errors import problem_response
from allotment.webhooks import metrics as webhook_metrics

router = APIRouter(tags=["operations"], dependencies=[public()])

PROBE_TIMEOUT_S = 1.0


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


async def _probe_postgres(request: Request) -> str:
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_S):
            async with request.app.state.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        return "ok"
    except Exception as exc:
        return f"down: {type(exc).__name__}"


async def _probe_redis(request: Request) -> str:
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_S):
            await request.app.state.redis.ping()
        return "ok"
    except Exception as exc:
        # A cluster's client says "RedisClusterException" for every cause: ask its seed
        # nodes why, in words (docs/scale-out.md, "When the cluster is not usable").
        problem = await redis_client.cluster_problem(
            request.app.state.settings, timeout_s=PROBE_TIMEOUT_S
        )
        return f"down: {problem or type(exc).__name__}"


def _probe_broker(request: Request) -> str | None:
    """The event broker's state when one is configured (usage/broker.py): POST /v1/events
    is a 503 while it is down, so the process is not ready (docs/scale-out.md)."""
    broker = getattr(request.app.state, "broker", None)
    if broker is None:
        return None
    problem = broker.problem()
    return "ok" if problem is None else f"down: {problem}"


@router.get(
    "/readyz",
    responses={503: {"description": "PostgreSQL, Redis or the event broker (when set) is down"}},
)
async def readyz(request: Request) -> Any:
    postgres, redis = await asyncio.gather(_probe_postgres(request), _probe_redis(request))
    checks = {"postgres": postgres, "redis": redis}
    broker = _probe_broker(request)
    if broker is not None:
        checks["broker"] = broker
    if all(v == "ok" for v in checks.values()):
        return {"status": "ready", "checks": checks}
    down = ", ".join(k for k, v in checks.items() if v != "ok")
    return problem_response(
        503,
        f"Not ready: {down} unreachable.",
        extra={"checks": checks},
        headers={"Retry-After": "2"},
    )


@router.get("/metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    await webhook_metrics.refresh(request.app.state.engine)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
