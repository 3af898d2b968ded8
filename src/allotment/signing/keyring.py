"""The signing keys as one worker holds them: read once, the active private half decrypted
once, the JWKS document built once per set of published keys.

    signer(now)   the active key, ready to sign (first use makes the keys: service.ensure)
    jwks(now)     (body, ETag) of the key set published at `now`
    clear()       forget everything; the next call rereads

A rotation or retirement in any process reaches every worker two ways:

- the bus: `invalidation.announce_signing_keys` after commit, heard by `clear()` here (at
  once in the process that made the change, within Redis's delivery elsewhere);
- a short life: what was read is reread after `TTL_S` (`TTL_BUS_DOWN_S` while Redis is
  unreachable), and at the moment a retired key's `signed_until` passes (so a key is
  dropped from the JWKS only once its latest artifact, as stored, stopped being valid).

Signing never depends on either: before signing, the issuer raises the key's
`signed_until` (`service.extend`), a statement that answers whether the key is still the
active one; a key no longer `active` makes the issuer clear this ring and sign with the new
active key.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson
import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from allotment.config import Settings
from allotment.db import session_scope
from allotment.errors import ServiceUnavailable
from allotment.invalidation import SIGNING_TOPIC
from allotment.kit.bus import Bus
from allotment.kit.clock import utcnow
from allotment.signing import service
from allotment.signing.jose import Signer
from allotment.signing.secret import Sealer, SigningSecretMismatch, sealer

log = structlog.get_logger("allotment.signing")

TTL_S = 60.0  # while the bus is connected (changes arrive on it meanwhile)
TTL_BUS_DOWN_S = 5.0
FIRST_USE_ACTOR = "allotment:first-use"


@dataclass(frozen=True)
class _Key:
    kid: str
    state: str
    jwk: dict[str, Any]
    sealed: bytes
    signed_until: datetime | None


@dataclass
class _Read:
    keys: tuple[_Key, ...]
    until: datetime  # reread at or after this instant
    documents: dict[tuple[str, ...], tuple[bytes, str]] = field(default_factory=dict)

    def active(self) -> _Key:
        for key in self.keys:
            if key.state == "active":
                return key
        # ensure() made one in the read's own transaction; only a key retired by hand in
        # SQL meanwhile gets here, and the next read makes a new pair.
        raise ServiceUnavailable("No active signing key; retry.")

    def published(self, now: datetime) -> tuple[_Key, ...]:
        return tuple(
            key
            for key in self.keys
            if key.state != "retired" or (key.signed_until is not None and key.signed_until > now)
        )


class KeyRing:
    def __init__(
        self,
        *,
        maker: async_sessionmaker[AsyncSession],
        settings: Settings,
        bus: Bus | None = None,
        bus_connected: Callable[[], bool] | None = None,
    ) -> None:
        self.maker = maker
        self.settings = settings
        self.bus = bus
        self._bus_connected = bus_connected or (lambda: bus is not None and bus.connected)
        self._sealer: Sealer | None = None
        self._read: _Read | None = None
        self._signers: dict[str, Signer] = {}
        self._generation = 0
        self._loading = asyncio.Lock()
        self._mismatch_logged = False
        if bus is not None:
            bus.subscribe(SIGNING_TOPIC, self._changed)
            bus.on_reconnect(self.clear)

    def clear(self) -> None:
        self._generation += 1
        self._read = None

    def _changed(self, _payload: str) -> None:
        self.clear()

    def sealer(self) -> Sealer:
        if self._sealer is None:
            self._sealer = sealer(self.settings)
        return self._sealer

    async def _current(self, now: datetime) -> _Read:
        read = self._read
        if read is not None and now < read.until:
            return read
        async with self._loading:  # one reread per worker, however many requests wait
            read = self._read
            if read is not None and now < read.until:
                return read
            generation = self._generation
            read = await self._load(now)
            if generation == self._generation:  # a change heard meanwhile: keep nothing
                self._read = read
            return read

    async def _load(self, now: datetime) -> _Read:
        keys_sealer = self.sealer()
        async with session_scope(self.maker, bus=self.bus) as session:
            await service.ensure(session, sealer=keys_sealer, actor=FIRST_USE_ACTOR)
            rows = await service.published(session, now=now)
        keys = tuple(
            _Key(row.kid, row.state, dict(row.public_jwk), row.private_sealed, row.signed_until)
            for row in rows
        )
        ttl = TTL_S if self._bus_connected() else TTL_BUS_DOWN_S
        until = now + timedelta(seconds=ttl)
        for key in keys:
            if key.state == "retired" and key.signed_until is not None:
                until = min(until, key.signed_until)
        return _Read(keys, until)

    async def signer(self, now: datetime | None = None) -> Signer:
        """The active key's signer; its private half is decrypted once per process."""
        try:
            active = (await self._current(now or utcnow())).active()
        except ServiceUnavailable:
            self.clear()
            raise
        found = self._signers.get(active.kid)
        if found is None:
            try:
                raw = self.sealer().open(active.sealed, kid=active.kid)
            except SigningSecretMismatch as exc:
                if not self._mismatch_logged:  # once per process: every artifact would say it
                    self._mismatch_logged = True
                    log.error("signing_secret_mismatch", kid=active.kid, detail=exc.message)
                raise
            found = self._signers[active.kid] = Signer.from_raw(active.kid, raw)
        return found

    async def jwks(self, now: datetime | None = None) -> tuple[bytes, str]:
        """The JWKS document of the keys published at `now`, and its ETag."""
        now = now or utcnow()
        read = await self._current(now)
        published = read.published(now)
        ids = tuple(key.kid for key in published)
        document = read.documents.get(ids)
        if document is None:
            body = orjson.dumps({"keys": [key.jwk for key in published]})
            etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
            document = read.documents[ids] = (body, etag)
        return document
