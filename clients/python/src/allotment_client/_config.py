"""Settings both clients share, and the small decisions they make the same way."""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from allotment_client import __version__
from allotment_client._http import RetryPolicy
from allotment_client.spool import Spool, SpoolLocked

log = logging.getLogger("allotment_client")

SpoolSetting = str | os.PathLike[str] | bool | None


@dataclass(frozen=True)
class Config:
    base_url: str
    api_key: str
    timeout: float = 10.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    def headers(self) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self.api_key}",
            "User-Agent": f"allotment-client-python/{__version__}",
        }

    def http_options(self) -> dict[str, Any]:
        return {"base_url": self.base_url, "headers": self.headers(), "timeout": self.timeout}


def open_spool(setting: SpoolSetting, base_url: str) -> Spool | None:
    """The event spool: a directory given, False for none, or (None/True) one per service
    URL under `$ALLOTMENT_SPOOL_DIR` or `~/.cache/allotment-client`. A default directory
    another process holds is left to it: this process takes `<dir>-<pid>-<n>`."""
    if setting is False:
        return None
    if setting is not None and setting is not True:
        return Spool(setting)
    root = Path(os.environ.get("ALLOTMENT_SPOOL_DIR") or Path.home() / ".cache/allotment-client")
    name = "events-" + hashlib.sha256(base_url.encode()).hexdigest()[:12]
    try:
        return Spool(root / name)
    except SpoolLocked:
        for n in itertools.count():
            try:
                spool = Spool(root / f"{name}-{os.getpid()}-{n}")
            except SpoolLocked:
                continue
            log.warning("event spool %s is in use; spooling to %s", root / name, spool.directory)
            return spool
    return None  # pragma: no cover - itertools.count() never ends


def heartbeat_interval(lease: dict[str, Any]) -> float:
    """How long to wait before renewing a lease (an instance or a session): a third of what
    is left of it, so two renewals can fail before it lapses; 1 s to 5 min."""
    expires = lease.get("lease_expires_at") or lease.get("expires_at")
    if not isinstance(expires, str):
        return 60.0
    left = (datetime.fromisoformat(expires) - datetime.now(UTC)).total_seconds()
    return min(300.0, max(1.0, left / 3))
