"""The `allotment` console script.

    serve [--host] [--port] [--workers] [--migrate] [--demo]   run the API
    worker                                                      background jobs
    aggregator                                                  events from NATS JetStream
    migrate                                                     apply migrations
    api-keys create --name NAME --scope SCOPE...                mint a key (last line: the key)
    policy validate FILE                                        every error, by path (no database)
    policy publish FILE [--force]                               validate, store and publish it
    demo                                                        seed demo data once
    audit verify                                                check the audit hash chain
    keys list | rotate | retire KID                             the artifacts' signing keys
    artifact verify FILE --jwks FILE [--fingerprint] [--now]    verify an artifact offline

Every command reads the same settings (ALLOTMENT_*); with no database or Redis URL set, the
first command that needs them starts the embedded servers and stops them when it exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Awaitable, Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click
from pydantic import ValidationError
from sqlalchemy.exc import ProgrammingError

from allotment import embedded, preflight
from allotment.config import get_settings

T = TypeVar("T")


@contextmanager
def _servers(*, check: bool = False) -> Any:
    """The stores (embedded ones started when no URL is set); with `check`, the database is
    connected to first, and one that cannot be is a paragraph saying why (preflight.py)."""
    settings = get_settings()
    servers = embedded.start(settings)
    servers.export()
    get_settings.cache_clear()  # later reads see the URLs just exported
    try:
        if check:
            try:
                preflight.check_database(servers.database_url)
            except preflight.DatabaseUnusable as exc:
                raise click.ClickException(str(exc)) from None
        yield servers
    finally:
        servers.stop()


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def _bus(settings: Any) -> tuple[Any, Any]:
    """The servers' Redis and bus (None, None without Redis): a change made by a command (a
    publish, a key revoked, a lease reaped) reaches running workers at once, as one made
    through the API does, not after their cache TTL."""
    from allotment import invalidation, redis_client

    if not settings.redis_url and not settings.redis_cluster_seeds:
        return None, None
    redis = redis_client.connect(settings, settings.redis_url or "", timeout_s=5.0)
    return redis, invalidation.make_bus(redis, settings)


def _run_in_session(fn: Callable[[Any], Awaitable[T]], database_url: str) -> T:
    from allotment.db import create_engine, create_sessionmaker, session_scope
    from allotment.errors import ServiceUnavailable

    async def main() -> T:
        settings = get_settings()
        engine = create_engine(database_url, settings)
        redis, bus = _bus(settings)
        try:
            async with session_scope(create_sessionmaker(engine), bus=bus) as session:
                return await fn(session)
        except (ServiceUnavailable, ProgrammingError) as exc:
            said = preflight.explain(exc, database_url, settings.data_dir)
            if said is None:
                raise
            raise click.ClickException(said) from None
        finally:
            if bus is not None:
                with contextlib.suppress(Exception):  # Redis down: workers' TTLs still bound it
                    await asyncio.wait_for(bus.flush(), timeout=5)
            if redis is not None:
                await redis.aclose()
            await engine.dispose()

    return asyncio.run(main())


def _print_admin_key(secret: str, host: str, port: int, *, demo: bool) -> None:
    click.echo("\nAn admin API key was created. It is shown only this once:\n")
    click.echo(f"    {secret}\n")
    click.echo("Try it:\n")
    click.echo(
        f"    curl -s -H 'Authorization: Bearer {secret}' http://{host}:{port}/v1/customers\n"
    )
    if demo:
        click.echo(
            f"    curl -s -H 'Authorization: Bearer {secret}' "
            f'-H \'Content-Type: application/json\' -d \'{{"customer": "acme", '
            f'"feature": "sso"}}\' http://{host}:{port}/v1/check\n'
        )


def _first_admin_key(database_url: str) -> str | None:
    """A fresh install's admin key (None when an admin key exists, or the schema is not
    migrated yet: `serve --migrate`)."""
    from sqlalchemy.exc import ProgrammingError

    from allotment.auth import service as api_keys

    try:
        return _run_in_session(
            lambda session: api_keys.first_admin(session, actor="cli:serve"), database_url
        )
    except ProgrammingError:
        return None


def _print_demo(result: Any, host: str, port: int) -> None:
    if result.published_version is not None:
        click.echo(f"Demo policy published as version {result.published_version}")
    if result.created_customers:
        click.echo(f"Demo customers created: {', '.join(result.created_customers)}")
    if result.admin_key:
        _print_admin_key(result.admin_key, host, port, demo=True)
    else:
        click.echo(
            "Demo data already present. Lost the admin key? "
            "`.venv/bin/allotment api-keys create --name me --scope admin` mints another."
        )


@click.group()
def main() -> None:
    """Allotment: centralized entitlements."""
    from allotment.kit import logs

    try:
        settings = get_settings()
    except ValidationError as exc:  # a bad ALLOTMENT_* value: say which, without a traceback
        problems = preflight.settings_problems(exc)
        raise click.ClickException(f"invalid configuration: {problems}") from None
    logs.configure(settings.log_level, json=settings.log_json)


@main.command()
@click.option("--host", default=None, help="Interface to bind (default ALLOTMENT_HOST).")
@click.option("--port", type=int, default=None, help="Port (default ALLOTMENT_PORT).")
@click.option("--workers", type=int, default=1, show_default=True)
@click.option("--migrate", is_flag=True, help="Apply migrations before serving.")
@click.option("--demo", is_flag=True, help="Seed demo data (once) before serving.")
def serve(host: str | None, port: int | None, workers: int, migrate: bool, demo: bool) -> None:
    """Serve the API (starting the embedded servers when no URLs are set)."""
    import uvicorn

    from allotment import demo as demo_data
    from allotment.migrate import upgrade

    settings = get_settings()
    host = host or settings.host
    port = port or settings.port
    # uvicorn stops gracefully on SIGTERM, then raises the signal again under the handler
    # found before it: with the default one the process died there, before the embedded
    # servers were stopped. This one unwinds, so they are (docs/architecture.md).
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    with _servers(check=True) as servers:
        if migrate:
            upgrade(servers.database_url)
        if demo:
            _print_demo(_run_in_session(demo_data.seed, servers.database_url), host, port)
        else:
            secret = _first_admin_key(servers.database_url)
            if secret is not None:
                _print_admin_key(secret, host, port, demo=False)
        click.echo(f"Serving on http://{host}:{port} (Ctrl-C stops it)", err=True)
        uvicorn.run(
            "allotment.app:create_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_config=None,
            access_log=False,
            server_header=False,
        )


@main.command()
@click.option(
    "--interval", type=float, default=5.0, show_default=True, help="Seconds between passes."
)
@click.option("--once", is_flag=True, help="Run one pass and exit.")
@click.option(
    "--metrics-port",
    type=int,
    default=None,
    help="Serve this worker's Prometheus metrics (webhook attempts) on this port.",
)
def worker(interval: float, once: bool, metrics_port: int | None) -> None:
    """Background jobs: the lease reaper (sessions, instances), idempotency-key purge, the
    decision log's and raw usage events' retention (docs/privacy.md), contract alerts and
    webhook delivery (docs/webhooks.md).

    Safe to run as several replicas at once."""
    from allotment import worker as jobs
    from allotment.db import create_engine, create_sessionmaker
    from allotment.webhooks.delivery import DeliveryLoop

    async def loop(database_url: str) -> None:
        settings = get_settings()
        engine = create_engine(database_url, settings)
        maker = create_sessionmaker(engine)
        redis, bus = _bus(settings)  # reaped leases move versions: announced to the servers
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        if metrics_port is not None:
            from prometheus_client import start_http_server

            start_http_server(metrics_port, addr=settings.host)
        webhooks = DeliveryLoop(maker, settings, database_url=database_url)
        delivering = asyncio.create_task(webhooks.run(stop)) if not once else None
        click.echo("worker started", err=True)
        try:
            while not stop.is_set():
                try:
                    done = await jobs.run_once(maker, bus=bus, settings=settings)
                    if bus is not None:
                        with contextlib.suppress(Exception):  # Redis down: TTLs bound it
                            await asyncio.wait_for(bus.flush(), timeout=5)
                    if any(done.values()):
                        click.echo(" ".join(f"{k}={v}" for k, v in done.items()), err=True)
                except Exception as exc:  # keep running through outages
                    click.echo(f"worker pass failed: {exc}", err=True)
                if once:
                    await webhooks.drain()
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=interval)
        finally:
            stop.set()
            if delivering is not None:
                await delivering
            await webhooks.aclose()
            if redis is not None:
                await redis.aclose()
            await engine.dispose()

    with _servers() as servers:
        asyncio.run(loop(servers.database_url))


@main.command()
def aggregator() -> None:
    """Usage events from NATS JetStream into PostgreSQL (ALLOTMENT_EVENTS_BROKER set).

    Safe to run as several replicas at once: they share one consumer."""
    from allotment import redis_client
    from allotment.check.snapshot import SnapshotCache
    from allotment.db import create_engine, create_sessionmaker
    from allotment.invalidation import make_bus
    from allotment.usage.aggregator import Aggregator

    if not get_settings().events_broker:
        raise click.ClickException("set ALLOTMENT_EVENTS_BROKER (nats://host:port[,…]) first")

    async def run(database_url: str) -> None:
        settings = get_settings()
        engine = create_engine(database_url, settings)
        redis = redis_client.connect(settings, settings.redis_url or "")
        bus = make_bus(redis, settings)  # policy and customer changes reach its snapshots
        maker = create_sessionmaker(engine)
        snapshots = SnapshotCache.from_settings(settings, maker=maker, redis=redis, bus=bus)
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        await bus.start()
        click.echo("aggregator started", err=True)
        try:
            await Aggregator(settings, maker=maker, engine=engine, snapshots=snapshots).run(stop)
        finally:
            await bus.stop()
            await redis.aclose()
            await engine.dispose()

    with _servers() as servers:
        asyncio.run(run(servers.database_url))


@main.command()
def migrate() -> None:
    """Apply the database migrations."""
    from allotment.migrate import upgrade

    with _servers(check=True) as servers:
        upgrade(servers.database_url)
    click.echo("migrations applied")


@main.command()
def demo() -> None:
    """Seed demo customers and an admin API key (once)."""
    from allotment import demo as demo_data

    settings = get_settings()
    with _servers() as servers:
        result = _run_in_session(demo_data.seed, servers.database_url)
    _print_demo(result, settings.host, settings.port)


@main.group("api-keys")
def api_keys_group() -> None:
    """Manage API keys."""


@api_keys_group.command("create")
@click.option("--name", required=True)
@click.option("--scope", "scopes", multiple=True, required=True, help="Repeatable.")
def api_keys_create(name: str, scopes: tuple[str, ...]) -> None:
    """Create an API key; the key alone is printed on the last line."""
    from allotment.auth import service as api_keys
    from allotment.auth.principal import scope_error

    problems = [p for p in (scope_error(s) for s in scopes) if p]
    if problems:
        raise click.UsageError("; ".join(problems))

    async def create(session: Any) -> tuple[Any, str]:
        return await api_keys.create(session, name=name, scopes=scopes, actor="cli")

    with _servers() as servers:
        key, secret = _run_in_session(create, servers.database_url)
    click.echo(f"created {key.id} ({', '.join(key.scopes)}); the key is shown once:")
    click.echo(secret)


@main.group("audit")
def audit_group() -> None:
    """The audit log."""


@audit_group.command("verify")
def audit_verify() -> None:
    """Verify the audit hash chain; exit 1 and name each broken record if it does not hold."""
    from allotment.audit import service as audit

    with _servers() as servers:
        result = _run_in_session(audit.verify, servers.database_url)
    if result.ok:
        click.echo(f"audit chain verifies: {result.records_checked} records, head {result.head_id}")
        return
    click.echo(f"audit chain BROKEN ({result.records_checked} records checked):", err=True)
    for problem in result.problems:
        click.echo(f"  record {problem.id}: {problem.problem}", err=True)
    sys.exit(1)


@main.group("policy")
def policy_group() -> None:
    """Policy documents (YAML or JSON)."""


_POLICY_MEDIA_TYPES = {
    ".yaml": "application/yaml",
    ".yml": "application/yaml",
    ".json": "application/json",
}


def _load_policy_file(path: Path) -> Any:
    """Parse and validate FILE; on errors print each as `path: message` and exit 1."""
    from allotment.policy import load

    media_type = _POLICY_MEDIA_TYPES.get(path.suffix.lower())
    if media_type is None:
        raise click.UsageError(f"{path}: name the file .yaml, .yml or .json so its format is known")
    result = load(path.read_bytes(), media_type)
    if not result.ok:
        for error in result.errors:
            click.echo(f"{error['path']}: {error['message']}", err=True)
        count = len(result.errors)
        click.echo(f"{path}: {count} error{'s' if count != 1 else ''}", err=True)
        sys.exit(1)
    return result


@policy_group.command("validate")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def policy_validate(file: Path) -> None:
    """Validate FILE without a database: print every error by path and exit 1, or `valid`."""
    _load_policy_file(file)
    click.echo("valid")


@policy_group.command("publish")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Publish even though live contracts would be orphaned.")
def policy_publish(file: Path, force: bool) -> None:
    """Validate FILE, store it as a version and publish it, in one transaction.

    Refused (exit 1, each orphaned contract printed) when it would orphan live contracts,
    unless --force (docs/policy.md#orphaned-contracts). With ALLOTMENT_POLICY_REQUIRE_APPROVAL
    it is refused too: a publish then needs a second admin key's approval, which the API
    records (docs/release-notes.md#sign-off)."""
    from allotment.policy import approvals, moves
    from allotment.policy import service as policies

    _load_policy_file(file)  # errors are reported before any server starts
    text = file.read_bytes()
    media_type = _POLICY_MEDIA_TYPES[file.suffix.lower()]

    async def publish(session: Any) -> tuple[int, bool, int]:
        row, created = await policies.create_draft(
            session, text=text, media_type=media_type, actor="cli"
        )
        await moves.publish(
            session,
            version=row.version,
            actor="cli",
            force=force,
            require_approval=get_settings().policy_require_approval,
        )
        return row.version, created, (await policies.pointer(session)).global_version

    with _servers() as servers:
        try:
            version, created, global_version = _run_in_session(publish, servers.database_url)
        except moves.PolicyOrphansContracts as exc:
            advice = exc.message.replace("the request with ?force=true", "with --force")
            click.echo(advice, err=True)
            for orphan in exc.extra["orphaned"]:
                for problem in orphan["problems"]:
                    click.echo(
                        f"{orphan['contract']} ({orphan['customer']}): "
                        f"{problem['path']}: {problem['message']}",
                        err=True,
                    )
            raise SystemExit(1) from None
        except moves.PolicyAlreadyActive:
            # A deploy that publishes the same file again is not an error: nothing changes.
            click.echo("policy version unchanged: the file's content is already the active version")
            return
        except (approvals.ApprovalRequired, approvals.SelfApproval):
            click.echo(
                "Publishing needs an approval from a second admin key "
                "(ALLOTMENT_POLICY_REQUIRE_APPROVAL is on), which the CLI cannot give; nothing "
                "was stored. Post the file with `POST /v1/policies`, have another admin key "
                "`POST /v1/policies/{version}/approvals`, then publish it through the API.",
                err=True,
            )
            raise SystemExit(1) from None
    origin = "a new version" if created else "the same content as an existing version"
    click.echo(
        f"published policy version {version} ({origin}; global policy version {global_version})"
    )


@main.command(
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
    add_help_option=False,
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def agent(args: tuple[str, ...]) -> None:
    """The sidecar agent (docs/agent.md): allotment agent --upstream URL --key KEY
    [--listen 127.0.0.1:7070] [--spool DIR] ... (`allotment agent --help` lists them)."""
    # The agent lives in the client distribution, deployable without the server's
    # dependencies; this command hands it its arguments unchanged.
    try:
        from allotment_client.agent.cli import main as agent_main
    except ImportError as exc:
        raise click.ClickException(
            f"the agent needs it: pip install 'allotment-client[agent]' ({exc})"
        ) from None
    agent_main(list(args))


from allotment.signing.commands import artifact_group, keys_group  # noqa: E402

main.add_command(keys_group)
main.add_command(artifact_group)


if __name__ == "__main__":
    main()
