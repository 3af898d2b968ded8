"""docs/artifacts.md's verifier, run as printed: the code block of "Verifying in any
language" accepts a served artifact and refuses forgeries, expiry and another machine."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.exceptions import InvalidSignature

from tests.artifacts.helpers import artifact, b64e, jwks, parts
from tests.factories.seats import register

DOC = Path(__file__).resolve().parents[2] / "docs" / "artifacts.md"


def documented_verifier() -> Any:
    text = DOC.read_text()
    section = text.split("## Verifying in any language", 1)[1].split("\n## ", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert 15 <= len(code.strip().splitlines()) <= 25, "the doc promises about 20 lines"
    namespace: dict[str, Any] = {}
    exec(compile(code, str(DOC), "exec"), namespace)  # noqa: S102 - our own document
    return namespace["verify"]


async def test_the_documented_verifier_runs_as_printed(
    client: httpx.AsyncClient, backend: dict[str, str], team: str
) -> None:
    verify = documented_verifier()
    assert (await register(client, backend, "host-1")).status_code == 201
    token = await artifact(client, backend, fingerprint="host-1", ttl=3600)
    keys = await jwks(client)
    claims = verify(token, keys, fingerprint="host-1")
    assert claims["sub"] == "acme" and claims["instance"]["fingerprint"] == "host-1"
    assert verify(token + "\n", json.loads(json.dumps(keys)))["jti"] == claims["jti"]
    header, body_claims, signature = parts(token)
    head, body, sig = token.split(".")
    forged_body = b64e(json.dumps({**body_claims, "exp": body_claims["exp"] + 10**6}).encode())
    with pytest.raises(InvalidSignature):
        verify(f"{head}.{forged_body}.{sig}", keys)
    none = b64e(json.dumps({**header, "alg": "none"}).encode())
    with pytest.raises(ValueError, match="not an Allotment artifact"):
        verify(f"{none}.{body}.", keys)
    with pytest.raises(ValueError, match="unknown kid"):
        verify(token, {"keys": []})
    assert verify(token, keys, now=claims["grace_until"] + 299)["sub"] == "acme"
    with pytest.raises(ValueError, match="expired"):
        verify(token, keys, now=claims["grace_until"] + 301)
    assert verify(token, keys, now=claims["iat"] - 299)["sub"] == "acme"
    with pytest.raises(ValueError, match="clock is behind"):
        verify(token, keys, now=claims["iat"] - 301)
    assert verify(token, keys, now=time.time())["sub"] == "acme"
    with pytest.raises(ValueError, match="another machine"):
        verify(token, keys, fingerprint="host-2")
