"""Fixtures of the fault-injection suite: a whole deployment per test (see cluster.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from tests.faults.cluster import Cluster

MakeCluster = Callable[..., Awaitable[Cluster]]


@pytest.fixture
async def make_cluster(tmp_path: Path) -> AsyncIterator[MakeCluster]:
    """`await make_cluster(env={...})`: Redis, PostgreSQL and two workers of this test's own,
    the workers started with `env` on top of the stores' URLs; all stopped afterwards."""
    made: list[Cluster] = []

    async def make(env: dict[str, str] | None = None) -> Cluster:
        cluster = await Cluster.start(tmp_path / f"cluster-{len(made)}", env)
        made.append(cluster)
        return cluster

    try:
        yield make
    finally:
        for cluster in made:
            cluster.close()
