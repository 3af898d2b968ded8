"""The Redis client: one server (ALLOTMENT_REDIS_URL) or a Redis Cluster
(ALLOTMENT_REDIS_CLUSTER_URLS, docs/scale-out.md).

Both take the same commands for everything the service keeps in Redis: kit/keyspace.py
names each key with a hash tag, so a multi-key operation or a MULTI stays in one slot.
Only the bus subscribes differently (kit/bus.py: sharded pub/sub on a cluster of Redis 7+).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from allotment.config import Settings

RedisClient = Redis | RedisCluster

# A command to a master that just died is retried on the refreshed slot map a few times,
# briefly: Redis is a cache and a bus, and no check waits on it (docs/reliability.md).
CLUSTER_RETRIES = 3


def connect(settings: Settings, url: str, *, timeout_s: float = 0.5) -> RedisClient:
    """Short timeouts: Redis is a cache and a bus; waiting on it must never stall a check."""
    seeds = settings.redis_cluster_seeds
    if not seeds:
        return Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=0.5, health_check_interval=10
        )
    parts = [urlsplit(seed if "://" in seed else f"redis://{seed}") for seed in seeds]
    return RedisCluster(
        startup_nodes=[
            ClusterNode(part.hostname or "localhost", part.port or 6379) for part in parts
        ],
        username=parts[0].username,
        password=parts[0].password,
        socket_timeout=timeout_s,
        socket_connect_timeout=0.5,
        health_check_interval=10,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), CLUSTER_RETRIES),
    )
