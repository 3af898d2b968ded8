"""A Redis Cluster that cannot be used says why, in words: at start (a warning) and in
/readyz, whose JSON keeps its shape. docs/scale-out.md, "When the cluster is not usable".

Real redis-server processes of their own: a plain Redis given as a cluster, a one-node
cluster with a password (all 16384 slots on it: `cluster_state:ok`), one never joined
(no slot assigned), and a port where nothing listens.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import structlog

from allotment import redis_client
from allotment.app import create_app
from tests.scale.redis_cluster import CLUSTER_MODE, Node, cluster_port, servers

pytestmark = pytest.mark.scale

SERVERS = servers()
PASSWORD = "s3cret@pw:1"  # written percent-encoded in a URL (QUOTED)
QUOTED = quote(PASSWORD, safe="")


@pytest.fixture(scope="module", params=sorted(SERVERS) or ["none"], ids=lambda v: f"redis{v}")
def server(request: pytest.FixtureRequest) -> str:
    if request.param not in SERVERS:
        pytest.skip("no redis-server binary to start")
    return SERVERS[request.param]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("redis-diagnosis")


@pytest.fixture(scope="module")
def plain(server: str, workdir: Path) -> Iterator[Node]:
    """A Redis that is not a cluster."""
    node = Node.start(workdir, server).wait()
    yield node
    node.stop()


@pytest.fixture(scope="module")
def one_node_cluster(server: str, workdir: Path) -> Iterator[Node]:
    """A cluster of one master holding every slot, behind a password."""
    node = Node.start(workdir, server, *CLUSTER_MODE, password=PASSWORD).wait()
    try:
        node.client().execute_command("CLUSTER", "ADDSLOTS", *range(16384))
        _settle(node)
        yield node
    finally:
        node.stop()


@pytest.fixture(scope="module")
def never_joined(server: str, workdir: Path) -> Iterator[Node]:
    """A node in cluster mode that no `redis-cli --cluster create` ever gave a slot."""
    node = Node.start(workdir, server, *CLUSTER_MODE).wait()
    yield node
    node.stop()


def _settle(node: Node) -> None:
    import time

    deadline = time.monotonic() + 10
    while b"cluster_state:ok" not in node.client().execute_command("CLUSTER", "INFO"):
        assert time.monotonic() < deadline, "the one-node cluster did not settle"
        time.sleep(0.05)


async def _start_and_ask(stores: Any, urls: str) -> tuple[list[dict[str, Any]], httpx.Response]:
    """Start an app on the cluster `urls`; its warnings at start and its /readyz answer."""
    app = create_app(stores.settings(redis_url=None, redis_cluster_urls=urls))
    with structlog.testing.capture_logs() as captured:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                ready = await client.get("/readyz")
    warnings = [e for e in captured if e.get("event") == "redis_cluster_unusable"]
    return warnings, ready


def _down(ready: httpx.Response, reason: str) -> None:
    """/readyz's usual 503: its shape unchanged, only the reason in words."""
    assert ready.status_code == 503, ready.text
    assert ready.headers["content-type"] == "application/problem+json"
    body = ready.json()
    assert body["checks"] == {"postgres": "ok", "redis": f"down: {reason}"}
    assert body["detail"] == "Not ready: redis unreachable."


async def test_a_plain_redis_given_as_a_cluster_is_reported_not_used(
    stores: Any, plain: Node
) -> None:
    reason = f"cluster mode is not enabled on {plain.address}"
    warnings, ready = await _start_and_ask(stores, f"redis://{plain.address}")
    assert [w["reason"] for w in warnings] == [reason]
    assert warnings[0]["log_level"] == "warning"
    _down(ready, reason)
    assert plain.client().dbsize() == 0  # nothing was kept there as if it were one Redis


async def test_nothing_listening_is_said_with_the_address(stores: Any) -> None:
    address = f"127.0.0.1:{cluster_port()}"
    reason = f"no node reachable: {address} (connection refused)"
    warnings, ready = await _start_and_ask(stores, f"redis://{address}")
    assert [w["reason"] for w in warnings] == [reason]
    _down(ready, reason)


async def test_a_wrong_or_missing_password_is_said_as_such(
    stores: Any, one_node_cluster: Node
) -> None:
    address = one_node_cluster.address
    for urls in (f"redis://:wrong@{address}", f"redis://{address}"):
        warnings, ready = await _start_and_ask(stores, urls)
        assert [w["reason"] for w in warnings] == [redis_client.AUTH_FAILED], urls
        _down(ready, "authentication failed (check the password in ALLOTMENT_REDIS_CLUSTER_URLS)")

    # The right password (percent-encoded, as in any URL): ready, and not a word at start.
    warnings, ready = await _start_and_ask(stores, f"redis://:{QUOTED}@{address}")
    assert warnings == []
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"postgres": "ok", "redis": "ok"}


async def test_a_dead_seed_beside_a_live_one_is_no_problem(
    stores: Any, one_node_cluster: Node
) -> None:
    """The client learns the cluster from any seed that answers."""
    dead = f"127.0.0.1:{cluster_port()}"
    urls = f"redis://:{QUOTED}@{dead},redis://{one_node_cluster.address}"
    assert await redis_client.cluster_problem(stores.settings(redis_cluster_urls=urls)) is None
    warnings, ready = await _start_and_ask(stores, urls)
    assert warnings == [] and ready.status_code == 200, ready.text


async def test_a_cluster_never_created_is_said_so(stores: Any, never_joined: Node) -> None:
    reason = (
        f"the cluster is not ok on {never_joined.address}"
        " (cluster_state:fail, 0 of 16384 slots assigned)"
    )
    warnings, ready = await _start_and_ask(stores, f"redis://{never_joined.address}")
    assert [w["reason"] for w in warnings] == [reason]
    _down(ready, reason)


async def test_every_seed_is_asked_and_each_cause_named(stores: Any, plain: Node) -> None:
    """redis-py keeps only its last seed's error; the diagnosis names each."""
    dead = f"127.0.0.1:{cluster_port()}"
    urls = f"redis://{dead},redis://{plain.address}"
    problem = await redis_client.cluster_problem(stores.settings(redis_cluster_urls=urls))
    assert problem == (
        f"cluster mode is not enabled on {plain.address}; unreachable: {dead} (connection refused)"
    )


async def test_rediss_speaks_tls(stores: Any, one_node_cluster: Node) -> None:
    """rediss:// is TLS to every node: a node that speaks plain text is not ready, not
    silently used without encryption."""
    urls = f"rediss://:{QUOTED}@{one_node_cluster.address}"
    warnings, ready = await _start_and_ask(stores, urls)
    assert ready.status_code == 503, ready.text
    assert ready.json()["checks"]["redis"].startswith(
        f"down: no node reachable: {one_node_cluster.address} ("
    )
    assert len(warnings) == 1
