"""The agent's settings: command-line options, each with an environment default.

option             environment                     default
--upstream URL     ALLOTMENT_AGENT_UPSTREAM        (required) the Allotment service
--key KEY          ALLOTMENT_AGENT_KEY             (required) a `check` key for it
--listen H:P       ALLOTMENT_AGENT_LISTEN          127.0.0.1:7070
--spool DIR        ALLOTMENT_AGENT_SPOOL           ~/.local/state/allotment-agent
--fingerprint X    ALLOTMENT_AGENT_FINGERPRINT     none: customer-level artifacts only
--caller-key KEY   ALLOTMENT_AGENT_CALLER_KEY      none: callers need no key
--artifact-ttl S   ALLOTMENT_AGENT_ARTIFACT_TTL    3600
--max-customers N  ALLOTMENT_AGENT_MAX_CUSTOMERS   10000
--flush-interval S ALLOTMENT_AGENT_FLUSH_INTERVAL  0.2
--log-level L      ALLOTMENT_AGENT_LOG_LEVEL       info
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class AgentSettings:
    upstream: str
    key: str
    host: str = "127.0.0.1"
    port: int = 7070
    spool: Path = Path("~/.local/state/allotment-agent").expanduser()
    fingerprint: str | None = None
    caller_key: str | None = None
    artifact_ttl: int = 3600
    max_customers: int = 10_000
    flush_interval: float = 0.2
    log_level: str = "info"


def _listen(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    try:
        number = int(port)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--listen takes HOST:PORT, not {value!r}") from None
    if not 0 < number < 65536:
        raise argparse.ArgumentTypeError(f"no port {number}")
    return host.strip("[]") or "127.0.0.1", number


def parser() -> argparse.ArgumentParser:
    env = os.environ.get
    p = argparse.ArgumentParser(
        prog="allotment-agent",
        description="The Allotment sidecar: checks, batches, OFREP and events served locally "
        "from signed artifacts, forwarded when they need live state; events spooled (fsync) "
        "until the upstream acknowledges them. docs/agent.md.",
    )
    p.add_argument("--upstream", default=env("ALLOTMENT_AGENT_UPSTREAM"), help="the service's URL")
    p.add_argument(
        "--key", default=env("ALLOTMENT_AGENT_KEY"), help="an API key with `check` scope"
    )
    p.add_argument(
        "--listen", type=_listen, default=env("ALLOTMENT_AGENT_LISTEN", "127.0.0.1:7070")
    )
    p.add_argument(
        "--spool",
        type=Path,
        default=Path(env("ALLOTMENT_AGENT_SPOOL") or "~/.local/state/allotment-agent"),
        help="directory of the event spool (one agent per directory)",
    )
    p.add_argument(
        "--fingerprint",
        default=env("ALLOTMENT_AGENT_FINGERPRINT"),
        help="this machine's instance fingerprint: artifacts bound to it when it holds a lease",
    )
    p.add_argument(
        "--caller-key",
        default=env("ALLOTMENT_AGENT_CALLER_KEY"),
        help="a secret callers must send (Bearer or X-API-Key); default: none needed",
    )
    p.add_argument(
        "--artifact-ttl", type=int, default=int(env("ALLOTMENT_AGENT_ARTIFACT_TTL", "3600"))
    )
    p.add_argument(
        "--max-customers", type=int, default=int(env("ALLOTMENT_AGENT_MAX_CUSTOMERS", "10000"))
    )
    p.add_argument(
        "--flush-interval", type=float, default=float(env("ALLOTMENT_AGENT_FLUSH_INTERVAL", "0.2"))
    )
    p.add_argument("--log-level", default=env("ALLOTMENT_AGENT_LOG_LEVEL", "info"))
    return p


def parse(argv: Sequence[str] | None = None) -> AgentSettings:
    p = parser()
    args = p.parse_args(argv)
    if not args.upstream:
        p.error("--upstream (or ALLOTMENT_AGENT_UPSTREAM) is required")
    if not args.key:
        p.error("--key (or ALLOTMENT_AGENT_KEY) is required")
    host, port = args.listen if isinstance(args.listen, tuple) else _listen(args.listen)
    return AgentSettings(
        upstream=args.upstream.rstrip("/"),
        key=args.key,
        host=host,
        port=port,
        spool=args.spool.expanduser(),
        fingerprint=args.fingerprint or None,
        caller_key=args.caller_key or None,
        artifact_ttl=args.artifact_ttl,
        max_customers=args.max_customers,
        flush_interval=args.flush_interval,
        log_level=args.log_level,
    )
