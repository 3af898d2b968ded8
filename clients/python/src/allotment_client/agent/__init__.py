"""The sidecar agent (`allotment-agent`, docs/agent.md): Allotment's check, batch, OFREP and
events endpoints served on localhost for applications in any language.

    settings.py   the options (`--upstream`, `--key`, `--listen`, `--spool`, …)
    app.py        the ASGI application: routes, local decisions, the spool, health
    upstream.py   forwarding with the agent's key; the upstream's liveness probe
    asgi.py       reading bodies, sending answers and problems
    store.py      the verified artifacts kept on disk across restarts
    shapes.py     pure: check bodies, decision documents, OFREP evaluations, problems
    intake.py     pure: `POST /v1/events` in every CloudEvents content mode
    metrics.py    the Prometheus metrics
    cli.py        `main()`: open the spool, serve with uvicorn

Install with the extra: `pip install 'allotment-client[agent]'`.
"""

from __future__ import annotations

from .settings import AgentSettings

__all__ = ["AgentSettings"]
