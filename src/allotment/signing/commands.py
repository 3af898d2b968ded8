"""The `allotment keys` and `allotment artifact` commands (docs/artifacts.md#the-cli),
registered on the console script by cli.py.

    keys list | rotate | retire KID [--compromised]             the artifacts' signing keys
    artifact verify FILE --jwks FILE [--fingerprint] [--now]    verify an artifact offline
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from allotment.config import get_settings

T = TypeVar("T")


@click.group("keys")
def keys_group() -> None:
    """The signing keys of the artifacts (docs/artifacts.md#keys-and-rotation)."""


def _key_change(change: Callable[[Any, Any], Awaitable[T]]) -> T:
    """Run `change(session, sealer)` in one transaction; a wrong secret, an unknown or
    retired key is one line on stderr and exit 1."""
    from allotment.cli import _run_in_session, _servers
    from allotment.errors import AllotmentError
    from allotment.signing.secret import sealer

    with _servers() as servers:
        try:
            keys_sealer = sealer(get_settings())
            return _run_in_session(
                lambda session: change(session, keys_sealer), servers.database_url
            )
        except AllotmentError as exc:
            click.echo(exc.message, err=True)
            raise SystemExit(1) from None


def _print_keys(keys: Any) -> None:
    rows = [("KID", "STATE", "CREATED", "SIGNED UNTIL")]
    from allotment.signing.service import view as signing_view

    for key in keys:
        view = signing_view(key)
        rows.append((view["kid"], view["state"], view["created_at"], view["signed_until"] or "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row[:3], widths, strict=True)]
        click.echo("  ".join([*cells, row[3]]))


@keys_group.command("list")
def keys_list() -> None:
    """Every signing key, oldest first: kid, state, created, signed until."""
    from allotment.cli import _run_in_session, _servers
    from allotment.signing import service as signing

    with _servers() as servers:
        keys = _run_in_session(signing.list_keys, servers.database_url)
    if not keys:
        click.echo("no signing keys yet: the first artifact or JWKS request makes them")
        return
    _print_keys(keys)


@keys_group.command("rotate")
def keys_rotate() -> None:
    """next → active, active → retired (published until its last artifact's grace ends),
    and a new next key."""
    from allotment.signing import service as signing

    async def rotate(session: Any, keys_sealer: Any) -> dict[str, str]:
        keys = await signing.rotate(session, sealer=keys_sealer, actor="cli")
        return {role: key.kid for role, key in keys.items()}

    kids = _key_change(rotate)
    click.echo(
        f"rotated: {kids['active']} is active, {kids['retired']} retired, {kids['next']} next"
    )


@keys_group.command("retire")
@click.argument("kid")
@click.option(
    "--compromised",
    is_flag=True,
    help="Withdraw it from the key set at once: every artifact it signed stops verifying "
    "wherever the key set is refetched (clients must fetch new artifacts).",
)
def keys_retire(kid: str, compromised: bool) -> None:
    """Retire KID; when it was the active key, the next key becomes active. A new next key
    is made either way. A retired key stays published while an artifact it signed is valid
    (or in grace), unless --compromised."""
    from allotment.signing import service as signing

    async def retire(session: Any, keys_sealer: Any) -> dict[str, str]:
        keys = await signing.retire(
            session, kid=kid, sealer=keys_sealer, actor="cli", withdraw=compromised
        )
        return {role: key.kid for role, key in keys.items()}

    kids = _key_change(retire)
    withdrawn = " and withdrawn from the key set" if compromised else ""
    click.echo(
        f"retired {kids['retired']}{withdrawn}: {kids['active']} is active, {kids['next']} next"
    )


@click.group("artifact")
def artifact_group() -> None:
    """Signed entitlement artifacts."""


def _instant(value: str) -> Any:
    from datetime import UTC, datetime

    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO 8601 instant") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@artifact_group.command("verify")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--jwks",
    "jwks_file",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The key set (GET /.well-known/jwks.json, saved).",
)
@click.option("--fingerprint", default=None, help="This machine's fingerprint.")
@click.option("--now", default=None, help="Verify as of this ISO 8601 instant (default: now).")
def artifact_verify(file: Path, jwks_file: Path, fingerprint: str | None, now: str | None) -> None:
    """Verify an artifact offline against a saved key set: exit 0 and a one-line summary,
    or a one-line reason and its exit code (docs/artifacts.md#the-cli)."""
    from allotment.artifacts.verify import Invalid, verify

    moment = _instant(now) if now is not None else None
    try:
        verified = verify(
            file.read_bytes(), jwks_file.read_bytes(), now=moment, fingerprint=fingerprint
        )
    except Invalid as exc:
        click.echo(f"invalid: {exc.reason}: {exc.message}", err=True)
        raise SystemExit(exc.exit_code) from None
    click.echo(verified.summary())
