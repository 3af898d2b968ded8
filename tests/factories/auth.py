from __future__ import annotations

from typing import Any

from allotment.auth import service as api_keys
from allotment.db import session_scope


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


async def create_key(app: Any, *, scopes: list[str], name: str = "test") -> dict[str, str]:
    """Mint a key straight through the service; returns ready-to-send headers."""
    async with session_scope(app.state.sessionmaker) as session:
        _, secret = await api_keys.create(session, name=name, scopes=scopes, actor="test")
    return bearer(secret)
