"""Signing keys: made once on first use (also by two processes at once), rotated and retired
with old artifacts verifying until they expire, published until the last artifact's
`grace_until`, the JWKS's ETag, the private half never stored in clear, the secret (its
file, and a wrong one), and a rotation in another process reaching this one."""

from __future__ import annotations

import asyncio
import os
import stat
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from allotment.artifacts import service as artifacts
from allotment.config import Settings
from allotment.db import session_scope
from allotment.kit.clock import utcnow
from allotment.signing import service as signing
from allotment.signing.keyring import KeyRing
from allotment.signing.secret import SECRET_FILE, SigningSecretMismatch, derive, sealer
from tests.artifacts.helpers import artifact, b64d, independent_verify, jwks, parts
from tests.conftest import SIGNING_SECRET, Stores
from tests.test_cli import run_cli


def _sealer(app: Any) -> Any:
    return app.state.keyring.sealer()


async def _rows(app: Any) -> list[Any]:
    async with session_scope(app.state.sessionmaker) as session:
        found = await session.execute(
            text("SELECT kid, state, private_sealed, public_jwk, signed_until FROM signing_keys")
        )
        return list(found.all())


async def _rotate(app: Any) -> dict[str, Any]:
    """What `allotment keys rotate` runs, on the app's bus (as the CLI's session is)."""
    async with session_scope(app.state.sessionmaker, bus=app.state.bus) as session:
        keys = await signing.rotate(session, sealer=_sealer(app), actor="test")
        return {role: key.kid for role, key in keys.items()}


async def test_first_use_makes_one_active_and_one_next_key(
    app: Any, client: httpx.AsyncClient
) -> None:
    assert await _rows(app) == []
    keys = await jwks(client)
    rows = await _rows(app)
    assert sorted(r.state for r in rows) == ["active", "next"]
    assert {k["kid"] for k in keys["keys"]} == {r.kid for r in rows}
    await jwks(client)
    assert len(await _rows(app)) == 2  # made once


async def test_two_processes_starting_together_make_one_pair(
    app: Any, stores: Stores, client: httpx.AsyncClient
) -> None:
    """Separate key rings (as two workers hold) asking at once; then a writer that skips the
    lock is stopped by the unique partial index."""
    settings = stores.settings()
    rings = [KeyRing(maker=app.state.sessionmaker, settings=settings) for _ in range(6)]
    signers = await asyncio.gather(*(ring.signer() for ring in rings))
    assert len({s.kid for s in signers}) == 1
    rows = await _rows(app)
    assert sorted(r.state for r in rows) == ["active", "next"]
    with pytest.raises(IntegrityError):
        async with session_scope(app.state.sessionmaker) as session:
            await session.execute(
                text(
                    "INSERT INTO signing_keys (kid, state, public_jwk, private_sealed, "
                    "created_at) VALUES ('sig_x', 'active', '{}', '', now())"
                )
            )


async def test_after_a_rotation_old_artifacts_verify_until_they_expire_new_ones_carry_new_kid(
    app: Any, client: httpx.AsyncClient, backend: dict[str, str], team: str
) -> None:
    old = await artifact(client, backend, ttl=3600)
    old_kid = parts(old)[0]["kid"]
    before = {k["kid"] for k in (await jwks(client))["keys"]}
    kids = await _rotate(app)
    assert kids["retired"] == old_kid and kids["active"] in before and kids["next"] not in before
    keys = await jwks(client)
    assert {k["kid"] for k in keys["keys"]} == {old_kid, kids["active"], kids["next"]}
    independent_verify(old, keys)  # the retired key is still published
    new = await artifact(client, backend)
    assert parts(new)[0]["kid"] == kids["active"]
    independent_verify(new, keys)

    # Published exactly until its last artifact's grace_until (here: exp, no grace).
    ring = app.state.keyring
    until = utcnow() + timedelta(seconds=3600)
    body, _ = await ring.jwks(now=until - timedelta(seconds=60))
    assert old_kid in body.decode()
    body, _ = await ring.jwks(now=until + timedelta(seconds=2))
    assert old_kid not in body.decode() and kids["active"] in body.decode()


async def test_a_retired_key_is_published_through_its_last_artifacts_grace(
    app: Any, client: httpx.AsyncClient, backend: dict[str, str], team: str
) -> None:
    async with session_scope(app.state.sessionmaker) as session:
        graced = await artifacts.issue(
            session,
            checker=app.state.checker,
            keyring=app.state.keyring,
            customer="acme",
            ttl=timedelta(hours=1),
            fingerprint=None,
            actor="test",
            issuer="allotment",
            grace=timedelta(hours=6),
        )
    kids = await _rotate(app)
    assert kids["retired"] == graced.kid
    ring = app.state.keyring
    exp = graced.claims["exp"]
    grace_until = graced.claims["grace_until"]
    assert grace_until == exp + 6 * 3600
    from datetime import UTC, datetime

    def at(seconds: int) -> datetime:
        return datetime.fromtimestamp(seconds, UTC)

    for moment, published in (
        (exp + 60, True),  # expired, in grace: still verifiable
        (grace_until - 1, True),
        (grace_until, False),
        (grace_until + 3600, False),
    ):
        ring.clear()
        body, _ = await ring.jwks(now=at(moment))
        assert (graced.kid in body.decode()) is published, moment - exp
        async with session_scope(app.state.sessionmaker) as session:
            listed = {k.kid for k in await signing.published(session, now=at(moment))}
        assert (graced.kid in listed) is published


async def test_retiring_the_active_key_hands_over_to_next(
    app: Any, client: httpx.AsyncClient, backend: dict[str, str], team: str
) -> None:
    first = parts(await artifact(client, backend))[0]["kid"]
    rows = {r.state: r.kid for r in await _rows(app)}
    async with session_scope(app.state.sessionmaker, bus=app.state.bus) as session:
        keys = await signing.retire(session, kid=first, sealer=_sealer(app), actor="test")
    assert keys["retired"].kid == first and keys["active"].kid == rows["next"]
    assert parts(await artifact(client, backend))[0]["kid"] == rows["next"]
    states = {r.kid: r.state for r in await _rows(app)}
    assert states[first] == "retired" and states[keys["next"].kid] == "next"
    assert sorted(states.values()) == ["active", "next", "retired"]
    # A next key retired before it ever signed: replaced, and gone from the JWKS at once.
    async with session_scope(app.state.sessionmaker, bus=app.state.bus) as session:
        again = await signing.retire(
            session, kid=keys["next"].kid, sealer=_sealer(app), actor="test"
        )
    published = {k["kid"] for k in (await jwks(client))["keys"]}
    assert keys["next"].kid not in published and again["next"].kid in published
    async with session_scope(app.state.sessionmaker) as session:
        with pytest.raises(signing.KeyRetired):
            await signing.retire(session, kid=first, sealer=_sealer(app), actor="test")
    async with session_scope(app.state.sessionmaker) as session:
        audited = (
            await session.execute(
                text("SELECT action, count(*) FROM audit_log GROUP BY action ORDER BY action")
            )
        ).all()
    counts = dict(audited)  # type: ignore[arg-type]
    assert counts["signing_key.retired"] == 2 and counts["signing_key.activated"] == 1
    assert counts["signing_key.created"] == 4


async def test_jwks_etag_round_trip(
    app: Any, client: httpx.AsyncClient, backend: dict[str, str], team: str
) -> None:
    first = await client.get("/.well-known/jwks.json")
    assert first.status_code == 200
    assert first.headers["content-type"] == "application/jwk-set+json"
    assert first.headers["cache-control"] == "public, max-age=300"
    etag = first.headers["etag"]
    same = await client.get("/.well-known/jwks.json", headers={"If-None-Match": etag})
    assert same.status_code == 304 and same.content == b"" and same.headers["etag"] == etag
    listed = await client.get(
        "/.well-known/jwks.json", headers={"If-None-Match": f'"other", W/{etag}'}
    )
    assert listed.status_code == 304
    await _rotate(app)
    changed = await client.get("/.well-known/jwks.json", headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["etag"] != etag
    assert len(changed.json()["keys"]) == 2  # the retired key signed nothing: not published


async def test_the_private_key_is_never_stored_in_clear(
    app: Any, client: httpx.AsyncClient, backend: dict[str, str], team: str
) -> None:
    token = await artifact(client, backend)
    kid = parts(token)[0]["kid"]
    row = next(r for r in await _rows(app) if r.kid == kid)
    stored = bytes(row.private_sealed)
    assert len(stored) == 12 + 32 + 16  # nonce, ciphertext, GCM tag
    raw = _sealer(app).open(stored, kid=kid)
    public = Ed25519PrivateKey.from_private_bytes(raw).public_key()
    assert public.public_bytes(Encoding.Raw, PublicFormat.Raw) == b64d(row.public_jwk["x"])
    assert raw not in stored  # the column is not the key, nor contains it
    for start in range(len(stored) - 31):
        candidate = Ed25519PrivateKey.from_private_bytes(stored[start : start + 32])
        assert candidate.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw) != b64d(
            row.public_jwk["x"]
        )
    assert "d" not in row.public_jwk
    # The kid is the associated data: the sealed half does not open under another kid.
    with pytest.raises(SigningSecretMismatch):
        _sealer(app).open(stored, kid="sig_other")


async def test_a_wrong_secret_is_a_clear_error_and_never_new_keys(
    app: Any, stores: Stores, client: httpx.AsyncClient, backend: dict[str, str], team: str
) -> None:
    await artifact(client, backend)
    before = await _rows(app)
    wrong = KeyRing(
        maker=app.state.sessionmaker, settings=stores.settings(signing_secret="not-the-secret")
    )
    with pytest.raises(SigningSecretMismatch) as refused:
        await wrong.signer()
    assert "ALLOTMENT_SIGNING_SECRET" in refused.value.message
    assert "cannot be decrypted" in refused.value.message
    # Over HTTP: a problem document, no traceback.
    right = app.state.keyring
    app.state.keyring = wrong
    try:
        response = await client.get("/v1/customers/acme/artifact", headers=backend)
    finally:
        app.state.keyring = right
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"].endswith("/signing-secret-mismatch")
    assert "Traceback" not in response.text
    # Rotating under the wrong secret: refused before anything changes.
    async with session_scope(app.state.sessionmaker) as session:
        with pytest.raises(SigningSecretMismatch):
            await signing.rotate(session, sealer=wrong.sealer(), actor="test")
    # Even with only retired keys left, no new pair is made under another secret.
    async with session_scope(app.state.sessionmaker) as session:
        await session.execute(text("UPDATE signing_keys SET state = 'retired'"))
    async with session_scope(app.state.sessionmaker) as session:
        with pytest.raises(SigningSecretMismatch):
            await signing.ensure(session, sealer=wrong.sealer(), actor="test")
    after = await _rows(app)
    assert {r.kid for r in after} == {r.kid for r in before}


async def test_the_cli_refuses_a_wrong_secret_in_one_line(
    app: Any, stores: Stores, client: httpx.AsyncClient
) -> None:
    await jwks(client)
    before = await _rows(app)
    env = {**stores.env(), "ALLOTMENT_SIGNING_SECRET": "not-the-secret"}
    result = await asyncio.to_thread(_cli, env, "keys", "rotate")
    assert result.returncode == 1
    assert "cannot be decrypted" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert [(r.kid, r.state) for r in await _rows(app)] == [(r.kid, r.state) for r in before]


def _cli(env: dict[str, str], *args: str) -> Any:
    import subprocess
    import sys

    command = [str(Path(sys.executable).parent / "allotment"), *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


def test_without_a_setting_the_secret_is_generated_once_into_the_data_dir(
    tmp_path: Path,
) -> None:
    settings = Settings(data_dir=tmp_path / "data", signing_secret=None)
    with structlog.testing.capture_logs() as captured:
        first = sealer(settings)
        second = sealer(settings)
    path = tmp_path / "data" / SECRET_FILE
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert first.key == second.key == derive(path.read_text().strip())
    assert first.origin == str(path.resolve())
    generated = [e for e in captured if e["event"] == "signing_secret_generated"]
    assert len(generated) == 1 and generated[0]["path"] == str(path.resolve())
    # The setting, when given, wins over the file.
    given = sealer(Settings(data_dir=tmp_path / "data", signing_secret=SIGNING_SECRET))
    assert given.key == derive(SIGNING_SECRET) != first.key


async def test_cli_keys_list_rotate_and_retire_are_audited(
    app: Any, stores: Stores, client: httpx.AsyncClient, backend: dict[str, str], team: str
) -> None:
    empty = await run_cli(stores, "keys", "list")
    assert empty.returncode == 0 and "no signing keys yet" in empty.stdout
    first = parts(await artifact(client, backend))[0]["kid"]
    listed = await run_cli(stores, "keys", "list")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.strip().splitlines()
    assert lines[0].split() == ["KID", "STATE", "CREATED", "SIGNED", "UNTIL"]
    assert any(line.startswith(first) and " active " in line for line in lines[1:])
    rotated = await run_cli(stores, "keys", "rotate")
    assert rotated.returncode == 0, rotated.stderr
    assert f"{first} retired" in rotated.stdout
    retired = await run_cli(stores, "keys", "retire", first)
    assert retired.returncode == 1 and "was retired" in retired.stderr
    unknown = await run_cli(stores, "keys", "retire", "sig_nope")
    assert unknown.returncode == 1 and "No signing key" in unknown.stderr
    async with session_scope(app.state.sessionmaker) as session:
        actors = (
            await session.execute(
                text("SELECT DISTINCT actor FROM audit_log WHERE action LIKE 'signing_key.%'")
            )
        ).scalars()
        assert set(actors) == {"allotment:first-use", "cli"}


async def test_a_rotation_in_another_process_reaches_this_one_through_the_bus(
    app: Any, stores: Stores, client: httpx.AsyncClient, backend: dict[str, str], team: str
) -> None:
    before = {k["kid"] for k in (await jwks(client))["keys"]}  # cached in this worker now
    rotated = await run_cli(stores, "keys", "rotate")
    assert rotated.returncode == 0, rotated.stderr
    deadline = asyncio.get_running_loop().time() + 5  # the ring's own reread is 60 s away
    while True:
        now_published = {k["kid"] for k in (await jwks(client))["keys"]}
        if now_published != before:
            break
        assert asyncio.get_running_loop().time() < deadline, "the rotation was not heard"
        await asyncio.sleep(0.05)
    rows = {r.state: r.kid for r in await _rows(app) if r.state != "retired"}
    assert now_published == {rows["active"], rows["next"]}
    assert parts(await artifact(client, backend))[0]["kid"] == rows["active"]


async def test_a_compromised_key_is_withdrawn_at_once_and_its_artifacts_stop_verifying(
    app: Any, client: httpx.AsyncClient, backend: dict[str, str], team: str
) -> None:
    token = await artifact(client, backend)
    kid = parts(token)[0]["kid"]
    independent_verify(token, await jwks(client))
    async with session_scope(app.state.sessionmaker, bus=app.state.bus) as session:
        await signing.retire(session, kid=kid, sealer=_sealer(app), actor="test", withdraw=True)
    published = await jwks(client)
    assert kid not in {k["kid"] for k in published["keys"]}
    with pytest.raises(Exception, match="no Ed25519 key"):
        independent_verify(token, published)
    # A plain retirement keeps the next one published while its artifact is valid.
    token = await artifact(client, backend)
    successor = parts(token)[0]["kid"]
    async with session_scope(app.state.sessionmaker, bus=app.state.bus) as session:
        await signing.retire(session, kid=successor, sealer=_sealer(app), actor="test")
    independent_verify(token, await jwks(client))


async def test_the_key_sets_etag_does_not_change_while_its_keys_do_not(
    app: Any, client: httpx.AsyncClient, backend: dict[str, str], team: str
) -> None:
    """The first active key and the first next key are made in one transaction, at one
    instant: their order in the set (and so its ETag) must not depend on how a read ties."""
    etags = set()
    for _ in range(5):
        app.state.keyring.clear()
        etags.add((await client.get("/.well-known/jwks.json")).headers["etag"])
        await artifact(client, backend)
    assert len(etags) == 1
