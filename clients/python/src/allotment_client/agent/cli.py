"""`allotment-agent` (and the server CLI's `allotment agent`, which hands it its arguments):
parse the options, open the spool (one agent per spool directory), serve with uvicorn."""

from __future__ import annotations

import importlib.util
import logging
import sys
from collections.abc import Sequence

from allotment_client.spool import Spool, SpoolLocked

from .settings import parse


def main(argv: Sequence[str] | None = None) -> None:
    settings = parse(argv)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if logging.getLogger().level > logging.DEBUG:
        # httpx logs every request at INFO: the upstream probe (`GET /healthz` every 2 s),
        # each forwarded call and each event batch. DEBUG shows them.
        logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        import uvicorn
    except ImportError:  # pragma: no cover - the extra is missing
        sys.exit("allotment-agent needs its extra: pip install 'allotment-client[agent]'")
    from .app import Agent

    try:
        spool = Spool(settings.spool)
    except SpoolLocked:
        sys.exit(f"allotment-agent: the spool {settings.spool} is held by another agent")
    except OSError as exc:
        sys.exit(f"allotment-agent: cannot open the spool {settings.spool}: {exc}")
    config = uvicorn.Config(
        Agent(settings, spool=spool),
        host=settings.host,
        port=settings.port,
        loop="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        http="httptools" if importlib.util.find_spec("httptools") else "h11",
        lifespan="on",
        access_log=False,
        log_level=settings.log_level.lower(),
    )
    server = uvicorn.Server(config)
    server.run()
    if not server.started:
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    main()
