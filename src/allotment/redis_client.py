"""The Redis client: one server (ALLOTMENT_REDIS_URL) or a Redis Cluster
(ALLOTMENT_REDIS_CLUSTER_URLS, docs/scale-out.md).

Both take the same commands for everything the service keeps in Redis: kit/keyspace.py
names each key with a hash tag, so a multi-key operation or a MULTI stays in one slot.
Only the bus subscribes differently (kit/bus.py: sharded pub/sub on a cluster of Redis 7+).

A cluster that cannot be used says why in words (`cluster_problem`): at start, in a
warning, and in /readyz, instead of redis-py's "Redis Cluster cannot be connected"
(docs/scale-out.md, "When the cluster is not usable").
"""

from __future__ import annotations

import asyncio
import errno
import socket
from dataclasses import dataclass
from urllib.parse import SplitResult, unquote, urlsplit

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import AuthenticationError, ResponseError

from allotment.config import Settings

RedisClient = Redis | RedisCluster

# A command to a master that just died is retried on the refreshed slot map a few times,
# briefly: Redis is a cache and a bus, and no check waits on it (docs/reliability.md).
CLUSTER_RETRIES = 3

AUTH_FAILED = "authentication failed (check the password in ALLOTMENT_REDIS_CLUSTER_URLS)"


@dataclass(frozen=True)
class Seeds:
    """ALLOTMENT_REDIS_CLUSTER_URLS read: the nodes, and how every node is reached (the
    first URL's credentials, TLS for rediss://). config.py has checked each URL."""

    nodes: list[tuple[str, int]]
    username: str | None
    password: str | None
    ssl: bool

    @classmethod
    def of(cls, settings: Settings) -> Seeds:
        parts: list[SplitResult] = [urlsplit(seed) for seed in settings.redis_cluster_seeds]
        return cls(
            nodes=[(part.hostname or "localhost", part.port or 6379) for part in parts],
            # Percent-encoded in the URL (a password holding `@` or `:`), as redis-py reads one.
            username=unquote(parts[0].username) if parts[0].username else None,
            password=unquote(parts[0].password) if parts[0].password else None,
            ssl=parts[0].scheme == "rediss",
        )


def connect(settings: Settings, url: str, *, timeout_s: float = 0.5) -> RedisClient:
    """Short timeouts: Redis is a cache and a bus; waiting on it must never stall a check."""
    if not settings.redis_cluster_seeds:
        return Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=0.5, health_check_interval=10
        )
    seeds = Seeds.of(settings)
    return RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in seeds.nodes],
        username=seeds.username,
        password=seeds.password,
        ssl=seeds.ssl,
        socket_timeout=timeout_s,
        socket_connect_timeout=0.5,
        health_check_interval=10,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), CLUSTER_RETRIES),
    )


async def cluster_problem(settings: Settings, *, timeout_s: float = 1.0) -> str | None:
    """Why the configured Redis Cluster cannot be used, in words; None when a seed node
    answers as a healthy cluster node (or no cluster is configured).

    Each seed is asked `CLUSTER INFO` on a connection of its own, all at once: redis-py
    keeps only the last seed's error, and says "cannot be connected" for a wrong password
    or a Redis that is not a cluster alike."""
    if not settings.redis_cluster_seeds:
        return None
    seeds = Seeds.of(settings)
    answers = await asyncio.gather(
        *(_ask(seeds, host, port, timeout_s) for host, port in seeds.nodes)
    )
    if any(reachable and reason is None for reachable, reason in answers):
        return None  # a seed is a healthy cluster node: the client learns the rest from it
    problems = list(dict.fromkeys(reason for reachable, reason in answers if reachable and reason))
    unreachable = [reason for reachable, reason in answers if not reachable and reason]
    if not problems:
        return "no node reachable: " + ", ".join(unreachable)
    if unreachable:
        problems.append("unreachable: " + ", ".join(unreachable))
    return "; ".join(problems)


async def _ask(seeds: Seeds, host: str, port: int, timeout_s: float) -> tuple[bool, str | None]:
    """(whether the node answered, what is wrong with it or None)."""
    node = f"{host}:{port}"
    client = Redis(
        host=host,
        port=port,
        username=seeds.username,
        password=seeds.password,
        ssl=seeds.ssl,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
    )
    try:
        async with asyncio.timeout(timeout_s):
            info = await client.execute_command("CLUSTER", "INFO")
    except AuthenticationError:
        return True, AUTH_FAILED
    except ResponseError as exc:
        if "cluster support disabled" in str(exc) or "unknown command" in str(exc).lower():
            return True, f"cluster mode is not enabled on {node}"
        return True, f"{node} answered CLUSTER INFO with an error: {exc}"
    except Exception as exc:  # connection refused, timeout, TLS, DNS
        return False, f"{node} ({_unreachable(exc)})"
    finally:
        await client.aclose()
    fields = dict(line.split(":", 1) for line in _text(info).splitlines() if ":" in line)
    if fields.get("cluster_state") == "ok":
        return True, None
    assigned = fields.get("cluster_slots_assigned", "?")
    return True, (
        f"the cluster is not ok on {node} (cluster_state:{fields.get('cluster_state', '?')},"
        f" {assigned} of 16384 slots assigned)"
    )


def _unreachable(exc: BaseException) -> str:
    """Why a node could not be reached, in a few words."""
    for cause in _chain(exc):
        if isinstance(cause, ConnectionRefusedError) or (
            isinstance(cause, OSError) and cause.errno == errno.ECONNREFUSED
        ):
            return "connection refused"
        if isinstance(cause, socket.gaierror):
            return "host name not resolved"
        if isinstance(cause, TimeoutError | asyncio.TimeoutError):
            return "timed out"
    if "Timeout" in type(exc).__name__:
        return "timed out"
    return str(exc) or type(exc).__name__


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
