"""Racing publishes, rollbacks and drafts leave one consistent active pointer."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from allotment.db import session_scope
from allotment.policy import moves
from tests.factories.policies import create_policy, policy_document, published_policy
from tests.policy_api.helpers import audit_records, pointer

ROUNDS = 8


async def test_two_concurrent_publishes_leave_one_consistent_active_pointer(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    for round_ in range(ROUNDS):
        a = await create_policy(client, admin, variant=f"{round_}a")
        b = await create_policy(client, admin, variant=f"{round_}b")
        before = await pointer(app)
        seen = len(await audit_records(app, "policy.published"))

        responses = await asyncio.gather(
            client.post(f"/v1/policies/{a['version']}/publish", headers=admin),
            client.post(f"/v1/policies/{b['version']}/publish", headers=admin),
        )
        assert [r.status_code for r in responses] == [200, 200]

        after = await pointer(app)
        assert after.global_version == before.global_version + 2
        first, last = (await audit_records(app, "policy.published"))[seen:]
        # The pointer names whichever publish committed last, and the two audit records
        # chain: the second saw exactly what the first left.
        assert after.active_version == int(last.target_key)
        assert {first.target_key, last.target_key} == {str(a["version"]), str(b["version"])}
        assert first.before["global_version"] == before.global_version
        assert last.before == {
            "active_version": first.after["active_version"],
            "global_version": first.after["global_version"],
        }
        assert last.after["global_version"] == after.global_version
        both = [
            (await client.get(f"/v1/policies/{v['version']}", headers=admin)).json() for v in (a, b)
        ]
        assert [v["status"] for v in both] == ["published", "published"]
        assert sum(v["active"] for v in both) == 1


async def test_a_publish_waits_for_the_one_holding_the_pointer(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    """Deterministic: the second publish cannot move the pointer until the first commits."""
    a = await create_policy(client, admin, variant="a")
    b = await create_policy(client, admin, variant="b")
    maker = app.state.sessionmaker
    first_holds = asyncio.Event()
    release = asyncio.Event()

    async def slow_publish() -> None:
        async with session_scope(maker) as session:
            await moves.publish(session, version=a["version"], actor="test:first")
            first_holds.set()
            await release.wait()

    async def second_publish() -> None:
        async with session_scope(maker) as session:
            await moves.publish(session, version=b["version"], actor="test:second")

    slow = asyncio.create_task(slow_publish())
    await first_holds.wait()
    second = asyncio.create_task(second_publish())
    await asyncio.sleep(0.3)
    assert not second.done(), "the second publish ran while the first held the pointer"
    release.set()
    await asyncio.gather(slow, second)

    state = await pointer(app)
    assert state.active_version == b["version"] and state.global_version == 2
    records = await audit_records(app, "policy.published")
    assert [r.actor for r in records] == ["test:first", "test:second"]


async def test_concurrent_publish_and_rollback_stay_consistent(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    one = await published_policy(client, admin, variant="1")
    await published_policy(client, admin, variant="2")
    three = await create_policy(client, admin, variant="3")
    before = await pointer(app)
    publish, rollback = await asyncio.gather(
        client.post(f"/v1/policies/{three['version']}/publish", headers=admin),
        client.post("/v1/policies/rollback", json={"to_version": one["version"]}, headers=admin),
    )
    assert publish.status_code == 200
    # The rollback may run after the publish (fine) or before it (fine); never half of each.
    assert rollback.status_code == 200
    moves = await audit_records(app, "policy.published", "policy.rolled_back")
    state = await pointer(app)
    assert state.active_version == int(moves[-1].target_key)
    assert state.global_version == before.global_version + 2


async def test_concurrent_posts_of_one_document_make_one_draft(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    responses = await asyncio.gather(
        *(client.post("/v1/policies", json=policy_document(), headers=admin) for _ in range(6))
    )
    assert sorted(r.status_code for r in responses) == [200] * 5 + [201]
    assert {r.json()["version"] for r in responses} == {1}
    others = await asyncio.gather(
        *(
            client.post("/v1/policies", json=policy_document(variant=str(n)), headers=admin)
            for n in range(6)
        )
    )
    # Distinct documents racing get distinct, gap-free numbers.
    assert sorted(r.json()["version"] for r in others) == [2, 3, 4, 5, 6, 7]
