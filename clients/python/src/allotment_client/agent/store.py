"""The agent's verified artifacts kept on disk, so that after a restart — the upstream
down or not — checks answer from them at once rather than waiting for a fetch.

    <spool>/artifacts/<customer>.jws   each customer's artifact as issued (compact JWS)
    <spool>/artifacts/jwks.json        the key set they verified against
    <spool>/artifacts/rules.json       what each policy version's rules read

Each file is written whole (a temporary file, fsync, rename). Read back, every artifact is
verified again — signature, time window, machine — exactly as a fetched one, and one that
no longer verifies is dropped; a tampered file cannot grant anything. The loaded artifacts
are marked stale at once, so the refresher fetches fresh ones as soon as the upstream
answers (a change made while the agent was down is not missed), keeping the loaded ones
until then, within their `grace_until` as always.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any

from allotment_client.artifacts import KeySet, verify
from allotment_client.errors import ArtifactInvalid
from allotment_client.local import ArtifactCache

log = logging.getLogger("allotment_client.agent")

SUFFIX = ".jws"
KEYS = "jwks.json"
RULES = "rules.json"


def _write(path: Path, data: bytes) -> None:
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def _policy_version(token: str) -> int | None:
    try:
        body = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except (ValueError, IndexError):
        return None
    version = claims.get("policy_version") if isinstance(claims, dict) else None
    return version if isinstance(version, int) else None


class ArtifactStore:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._saved: dict[str, str] = {}  # customer → jti written
        self._keys: KeySet | None = None
        self._rules: dict[str, Any] = {}

    def save(self, cache: ArtifactCache) -> int:
        """Write what changed since the last call: new artifacts, the key set, the rules.
        Returns how many artifacts were written."""
        written = 0
        keys = cache.keys
        if keys is not None and keys is not self._keys:
            document = {
                "keys": [
                    {**key.as_dict(private=False), "kid": kid} for kid, key in keys.keys.items()
                ]
            }
            _write(self.directory / KEYS, json.dumps(document).encode())
            self._keys = keys
        rules = {
            str(version): None
            if reads is None
            else {feature: sorted(names) for feature, names in reads.items()}
            for version, reads in list(cache.rules.items())
        }
        if rules != self._rules:
            _write(self.directory / RULES, json.dumps(rules).encode())
            self._rules = rules
        for customer in cache.customers():
            artifact = cache.get(customer)
            if artifact is None or self._saved.get(customer) == artifact.jti:
                continue
            _write(self.directory / (customer + SUFFIX), artifact.token.encode())
            self._saved[customer] = artifact.jti
            written += 1
        return written

    def load(self, cache: ArtifactCache) -> int:
        """Put every stored artifact that still verifies into `cache`, marked for refresh.
        Returns how many."""
        try:
            keys = KeySet.from_jwks((self.directory / KEYS).read_bytes())
        except (OSError, ArtifactInvalid):
            return 0
        # Fetched again with the next artifact: a key retired meanwhile leaves the set then.
        cache.set_keys(dataclasses.replace(keys, fetched_at=0.0))
        try:
            stored = json.loads((self.directory / RULES).read_bytes())
            for version, reads in stored.items():
                cache.rules[int(version)] = (
                    None
                    if reads is None
                    else {feature: frozenset(names) for feature, names in reads.items()}
                )
        except (OSError, ValueError, AttributeError, TypeError):
            pass  # rules unknown: any rule is assumed to read everything (the safe side)
        loaded = 0
        for path in sorted(self.directory.glob("*" + SUFFIX)):
            customer = path.name.removesuffix(SUFFIX)
            token = path.read_text(errors="replace")
            version = _policy_version(token)
            rules = cache.rules.get(version) if version is not None else None
            try:
                artifact = verify(token, keys, rules=rules)
            except ArtifactInvalid as exc:
                log.info("stored artifact of %s dropped: %s", customer, exc)
                path.unlink(missing_ok=True)
                continue
            if artifact.customer != customer:
                path.unlink(missing_ok=True)
                continue
            cache.put(customer, artifact)
            self._saved[customer] = artifact.jti
            loaded += 1
        self._keys = cache.keys
        cache.stale()
        return loaded
