"""`allotment artifact verify FILE --jwks FILE [--fingerprint] [--now]`, run as a user would:
exit 0 with a one-line summary, or one line naming the failure and its own exit code."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from allotment.artifacts import service as artifacts
from allotment.artifacts.schemas import TYP
from allotment.artifacts.verify import EXIT_CODES
from allotment.db import session_scope
from tests.artifacts.helpers import artifact, b64e, jwks, parts
from tests.factories.seats import register
from tests.test_cli import run_cli


def _iso(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture
async def files(
    app: Any, tmp_path: Path, client: httpx.AsyncClient, backend: dict[str, str], team: str
) -> dict[str, Any]:
    """A machine-bound artifact, one in grace, one not yet valid, forgeries, key sets."""
    assert (await register(client, backend, "host-1")).status_code == 201
    token = await artifact(client, backend, fingerprint="host-1", ttl=3600)
    header, claims, signature = parts(token)
    head, body, sig = token.split(".")
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
    signer = await app.state.keyring.signer()
    early = signer.sign(orjson.dumps({**claims, "nbf": claims["iat"] + 86400}), typ=TYP)
    flipped = bytearray(signature)
    flipped[0] ^= 0x80
    none = b64e(json.dumps({**header, "alg": "none"}).encode())
    written = {
        "token": token,
        "graced": graced.token,
        "early": early,
        "forged": f"{head}.{body}.{b64e(bytes(flipped))}",
        "none": f"{none}.{body}.",
        "garbage": "hello, world",
        "jwks": json.dumps(await jwks(client)),
        "empty": json.dumps({"keys": []}),
        "broken": "[1, 2]",
    }
    paths = {}
    for name, content in written.items():
        paths[name] = tmp_path / name
        paths[name].write_text(content + "\n")
    return {"paths": paths, "claims": claims, "kid": header["kid"], "graced": graced.claims}


async def test_each_outcome_has_its_exit_code_and_one_line(
    stores: Any, files: dict[str, Any]
) -> None:
    p, claims = files["paths"], files["claims"]
    iat, exp = claims["iat"], claims["exp"]
    graced = files["graced"]

    def case(token: str, *extra: str, jwks: str = "jwks") -> tuple[str, ...]:
        return ("artifact", "verify", str(p[token]), "--jwks", str(p[jwks]), *extra)

    cases: list[tuple[tuple[str, ...], int, str]] = [
        (case("token"), 0, "valid: customer acme"),
        (case("token", "--fingerprint", "host-1"), 0, "bound to host-1"),
        (case("token", "--now", _iso(iat - 240)), 0, "valid:"),  # within the 5 min skew
        (case("token", "--now", _iso(exp + 240)), 0, "valid:"),
        (case("graced", "--now", _iso(graced["exp"] + 3600)), 0, "warning: grace_period"),
        (case("forged"), EXIT_CODES["bad_signature"], "bad_signature"),
        (case("token", jwks="empty"), EXIT_CODES["unknown_kid"], "unknown_kid"),
        (case("token", "--now", _iso(exp + 360)), EXIT_CODES["expired"], "expired"),
        (
            case("graced", "--now", _iso(graced["grace_until"] + 360)),
            EXIT_CODES["expired"],
            "grace until",
        ),
        (case("early"), EXIT_CODES["not_yet_valid"], "not_yet_valid"),
        (case("token", "--now", _iso(iat - 360)), EXIT_CODES["clock_behind"], "clock_behind"),
        (case("token", "--fingerprint", "host-2"), EXIT_CODES["wrong_machine"], "wrong_machine"),
        (case("garbage"), EXIT_CODES["malformed"], "malformed"),
        (case("none"), EXIT_CODES["algorithm"], "algorithm"),
        (case("token", jwks="broken"), EXIT_CODES["bad_key_set"], "bad_key_set"),
    ]
    results = await asyncio.gather(*(run_cli(stores, *args) for args, _, _ in cases))
    codes = set()
    for (args, code, words), result in zip(cases, results, strict=True):
        out = result.stdout if code == 0 else result.stderr
        assert result.returncode == code, (args, result.stdout, result.stderr)
        assert words in out, (args, out)
        assert len(out.strip().splitlines()) == 1, (args, out)
        assert "Traceback" not in result.stderr
        if code:
            assert out.startswith("invalid: ") and result.stdout == ""
            codes.add(code)
    assert codes == set(EXIT_CODES.values())  # every failure seen, each its own code
    valid = results[0].stdout.strip()
    assert f"kid {files['kid']}" in valid and "policy version 1" in valid
    assert f"valid until {_iso(exp)}" in valid


async def test_a_bad_now_is_a_usage_error(stores: Any, files: dict[str, Any]) -> None:
    p = files["paths"]
    result = await run_cli(
        stores, "artifact", "verify", str(p["token"]), "--jwks", str(p["jwks"]), "--now", "soon"
    )
    assert result.returncode == 2 and "ISO 8601" in result.stderr
