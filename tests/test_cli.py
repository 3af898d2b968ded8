"""The `allotment` console script, run as a user would, against the test database."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text

from allotment.db import session_scope
from tests.factories.auth import bearer

ALLOTMENT = str(Path(sys.executable).parent / "allotment")


async def run_cli(stores: Any, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [ALLOTMENT, *args],
        env=stores.env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_api_keys_create_prints_the_key_alone_on_the_last_line(
    stores: Any, client: httpx.AsyncClient
) -> None:
    result = await run_cli(
        stores, "api-keys", "create", "--name", "ci", "--scope", "finance", "--scope", "check"
    )
    assert result.returncode == 0, result.stderr
    key = result.stdout.strip().splitlines()[-1]
    assert key.startswith("alm_") and " " not in key
    assert (await client.get("/v1/customers", headers=bearer(key))).status_code == 200
    assert (await client.get("/v1/api-keys", headers=bearer(key))).status_code == 403


async def test_api_keys_create_refuses_unknown_scope(
    stores: Any, client: httpx.AsyncClient
) -> None:
    result = await run_cli(stores, "api-keys", "create", "--name", "x", "--scope", "root")
    assert result.returncode != 0
    assert "not a scope" in result.stderr


async def test_audit_verify_exit_codes(
    app: Any, stores: Any, client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    await client.post("/v1/customers", json={"key": "acme", "name": "Acme"}, headers=admin)
    ok = await run_cli(stores, "audit", "verify")
    assert ok.returncode == 0, ok.stderr
    assert "verifies: 2 records" in ok.stdout
    async with session_scope(app.state.sessionmaker) as session:
        await session.execute(text("UPDATE audit_log SET actor = 'someone-else' WHERE id = 2"))
    broken = await run_cli(stores, "audit", "verify")
    assert broken.returncode == 1
    assert "record 2" in broken.stderr


async def test_demo_seeds_once(stores: Any, client: httpx.AsyncClient) -> None:
    first = await run_cli(stores, "demo")
    assert first.returncode == 0, first.stderr
    key = next(
        line.strip() for line in first.stdout.splitlines() if line.strip().startswith("alm_")
    )
    listed = (await client.get("/v1/customers", headers=bearer(key))).json()["items"]
    second = await run_cli(stores, "demo")
    assert second.returncode == 0, second.stderr
    assert "already present" in second.stdout
    assert "alm_" not in second.stdout
    again = (await client.get("/v1/customers", headers=bearer(key))).json()["items"]
    assert len(listed) >= 3 and again == listed


async def test_demo_publishes_the_catalog_and_a_contract_of_each_kind(
    stores: Any, client: httpx.AsyncClient
) -> None:
    result = await run_cli(stores, "demo")
    assert result.returncode == 0, result.stderr
    assert "Demo policy published as version 1" in result.stdout
    key = bearer(next(w for w in result.stdout.split() if w.startswith("alm_")))
    kinds = {}
    for customer in ("acme", "globex", "initech", "umbrella"):
        listed = (await client.get(f"/v1/customers/{customer}/contracts", headers=key)).json()
        kinds[customer] = listed["items"][0]["kind"]
    assert sorted(kinds.values()) == ["educational", "pilot", "standard", "trial"]

    async def check(customer: str, feature: str) -> dict[str, Any]:
        response = await client.post(
            "/v1/check", json={"customer": customer, "feature": feature}, headers=key
        )
        return response.json()  # type: ignore[no-any-return]

    assert (await check("acme", "sso"))["allowed"] is True
    assert (await check("initech", "exports"))["rule_reason"] == "not_in_trial"
    assert (await check("globex", "audit_log"))["allowed"] is True  # the audit_pack add-on


async def test_a_command_against_a_store_without_the_schema_says_so_in_one_line(
    stores: Any,
) -> None:
    """Run from another directory, the CLI starts embedded servers afresh under ./.allotment:
    a new user saw a 138-line traceback for `relation "signing_keys" does not exist`."""
    import uuid

    import psycopg
    from sqlalchemy.engine import make_url

    from allotment.db import libpq_url

    url = make_url(libpq_url(stores.database_url))
    empty = f"allotment_empty_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(
        url.set(database="postgres").render_as_string(False), autocommit=True
    ) as c:
        c.execute(f"CREATE DATABASE {empty}")
    try:
        env = {
            **stores.env(),
            "ALLOTMENT_DATABASE_URL": url.set(database=empty).render_as_string(False),
        }
        result = await asyncio.to_thread(
            subprocess.run,
            [ALLOTMENT, "keys", "list"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 1
        assert "Traceback" not in result.stderr
        assert "has no Allotment schema" in result.stderr and "allotment migrate" in result.stderr
    finally:
        with psycopg.connect(
            url.set(database="postgres").render_as_string(False), autocommit=True
        ) as c:
            c.execute(f"DROP DATABASE {empty} WITH (FORCE)")


async def test_a_bad_setting_is_named_in_one_line(stores: Any) -> None:
    env = {**stores.env(), "ALLOTMENT_ARTIFACT_GRACE_S": "1h"}
    result = await asyncio.to_thread(
        subprocess.run,
        [ALLOTMENT, "keys", "list"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "invalid configuration: ALLOTMENT_ARTIFACT_GRACE_S" in result.stderr


async def test_allotment_agent_hands_its_options_to_the_client_agent(
    stores: Any, tmp_path: Path
) -> None:
    from allotment_client.spool import Spool

    shown = await run_cli(stores, "agent", "--help")
    assert shown.returncode == 0 and "--upstream" in shown.stdout and "--spool" in shown.stdout
    missing = await run_cli(stores, "agent", "--key", "k")
    assert missing.returncode == 2 and "--upstream" in missing.stderr
    held = Spool(tmp_path)  # another agent holds this spool: a one-line refusal, no traceback
    try:
        refused = await run_cli(
            stores,
            "agent",
            "--upstream",
            "http://127.0.0.1:9",
            "--key",
            "k",
            "--spool",
            str(tmp_path),
        )
    finally:
        held.close()
    assert refused.returncode == 1
    assert refused.stderr.strip().endswith("is held by another agent")
    assert "Traceback" not in refused.stderr


async def test_the_aggregator_without_a_broker_says_what_to_set(stores: Any) -> None:
    result = await run_cli(stores, "aggregator")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "ALLOTMENT_EVENTS_BROKER" in result.stderr


async def test_an_aggregator_that_never_reached_nats_stops_on_sigterm_and_sigint(
    stores: Any,
) -> None:
    # Its first connection never succeeds (a closed port): the client retries forever, and
    # the signal must still end it, at once and cleanly.
    from tests.check.servers import free_port

    for sig in (signal.SIGTERM, signal.SIGINT):
        env = {**stores.env(), "ALLOTMENT_EVENTS_BROKER": f"nats://127.0.0.1:{free_port()}"}
        proc = await asyncio.create_subprocess_exec(
            ALLOTMENT, "aggregator", env=env, stderr=asyncio.subprocess.PIPE
        )
        assert proc.stderr is not None
        try:
            line = await asyncio.wait_for(proc.stderr.readline(), timeout=60)
            assert b"aggregator started" in line, line
            await asyncio.sleep(1.5)  # connecting: several attempts have failed by now
            assert proc.returncode is None
            proc.send_signal(sig)
            code = await asyncio.wait_for(proc.wait(), timeout=5)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        assert code == 0, (sig, code)


async def _cli_with(
    stores: Any, env: dict[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [ALLOTMENT, *args],
        env={**stores.env(), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _one_paragraph(result: subprocess.CompletedProcess[str]) -> str:
    """The command failed with one paragraph on stderr: no traceback, no password."""
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr and "secret" not in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    return result.stderr


async def test_migrate_or_serve_a_database_that_does_not_exist_says_how_to_create_it(
    stores: Any,
) -> None:
    """The operator's trial: a 126-line traceback ending in `FATAL: database "allotment"
    does not exist`."""
    from sqlalchemy.engine import make_url

    from allotment.db import libpq_url

    url = make_url(libpq_url(stores.database_url)).set(
        database="allotment_missing", password="secret"
    )
    env = {"ALLOTMENT_DATABASE_URL": url.render_as_string(hide_password=False)}
    for args in (("migrate",), ("serve", "--migrate", "--port", "1")):
        said = _one_paragraph(await _cli_with(stores, env, *args))
        assert "'allotment_missing' does not exist" in said, said
        assert "createdb" in said and "allotment_missing" in said and "***" in said, said
        assert "allotment migrate" in said


async def test_serve_with_the_primary_unreachable_says_so_in_one_paragraph(
    stores: Any,
) -> None:
    """The operator's trial: 222 lines and 3 tracebacks ending in "The database is
    unavailable; nothing was written. Retry shortly."."""
    env = {"ALLOTMENT_DATABASE_URL": "postgresql://allotment:secret@127.0.0.1:1/allotment"}
    for args in (
        ("serve", "--port", "1"),
        ("migrate",),
        ("api-keys", "create", "--name", "x", "--scope", "admin"),
    ):
        said = _one_paragraph(await _cli_with(stores, env, *args))
        assert "Cannot connect to the database" in said, said
        assert "postgresql://allotment:***@127.0.0.1:1/allotment" in said, said


async def test_a_malformed_store_url_is_refused_before_serving(stores: Any) -> None:
    for name, value in (
        ("ALLOTMENT_DATABASE_REPLICA_URL", "not-a-url"),
        ("ALLOTMENT_DATABASE_REPLICA_URL", "mysql://u:secret@db/allotment"),
        ("ALLOTMENT_DATABASE_URL", "mysql://u:secret@db/allotment"),
        ("ALLOTMENT_REDIS_URL", "http://cache:6379"),
    ):
        result = await _cli_with(stores, {name: value}, "serve", "--port", "1")
        said = _one_paragraph(result)
        assert "Serving on" not in result.stdout + said
        assert f"invalid configuration: {name}: must be a" in said, said
        assert "Value error" not in said


async def test_a_settings_error_between_two_settings_names_them(stores: Any) -> None:
    env = {"ALLOTMENT_REPLICA_CHECK_S": "10"}
    said = _one_paragraph(await _cli_with(stores, env, "keys", "list"))
    assert "invalid configuration: ALLOTMENT_REPLICA_CHECK_S must be shorter" in said, said
    assert "ALLOTMENT_:" not in said and "Value error" not in said


async def test_a_command_logs_nothing_of_alembic_at_info(stores: Any) -> None:
    result = await _cli_with(stores, {"ALLOTMENT_LOG_LEVEL": "INFO"}, "migrate")
    assert result.returncode == 0, result.stderr
    assert "alembic" not in result.stderr, result.stderr
