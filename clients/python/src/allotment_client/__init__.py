"""Allotment's Python SDK: `Allotment` (sync) and `AsyncAllotment` (async); see docs/sdk.md.

errors.py     problem+json answers as typed exceptions
_http.py      calls and retries, shared by both clients (no I/O)
_calls.py     every API call the SDK makes
client.py     Allotment            aio.py    AsyncAllotment
artifacts.py  verifying signed artifacts offline (KeySet, verify, Artifact)
local.py      decide() from an artifact; ArtifactCache; fetch_artifact()
refresh.py    keeping the cache fresh: Refresher (threads), AsyncRefresher (tasks)
spool.py      the durable file spool of events
events.py     track(): EventQueue, Tracker (thread), AsyncTracker (task)
openfeature.py  an OpenFeature provider (extra `openfeature`)
"""

from __future__ import annotations

__version__ = "0.1.0"

from allotment_client._http import RetryPolicy  # noqa: E402
from allotment_client.aio import AsyncAllotment  # noqa: E402
from allotment_client.artifacts import Artifact, KeySet, verify  # noqa: E402
from allotment_client.client import Allotment  # noqa: E402
from allotment_client.errors import (  # noqa: E402
    AllotmentError,
    ArtifactInvalid,
    BadRequest,
    Conflict,
    Forbidden,
    Gone,
    NotFound,
    RateLimited,
    Unauthorized,
    Unavailable,
    Unreachable,
    ValidationError,
)
from allotment_client.local import decide  # noqa: E402
from allotment_client.models import Decision  # noqa: E402

__all__ = [
    "AllotmentError",
    "Allotment",
    "Artifact",
    "ArtifactInvalid",
    "AsyncAllotment",
    "BadRequest",
    "Conflict",
    "Decision",
    "Forbidden",
    "Gone",
    "KeySet",
    "NotFound",
    "RateLimited",
    "RetryPolicy",
    "Unauthorized",
    "Unavailable",
    "Unreachable",
    "ValidationError",
    "decide",
    "verify",
]
