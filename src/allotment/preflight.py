"""What the CLI says when its settings or the database they name cannot be used: one
paragraph, not a traceback.

    settings_problems(exc)  ALLOTMENT_* values refused by Settings, each after the setting it
                            is about
    check_database(url)     connect once (the schema is not looked at); `DatabaseUnusable`
                            when that fails, with a message that says what failed, the URL
                            without its password and what to do (`createdb …` for a database
                            that does not exist)
    unusable(url, exc)      the same message for a failure met later (a command's session)
    explain(exc, url, dir)  what a command's session failure means, when it is one of these
                            (the database unreachable, or holding no Allotment schema)

`allotment serve` and `allotment migrate` check first, so an operator who has not created
the database yet, or whose PostgreSQL is not running, reads why instead of a traceback
(README.md, "Set up").
"""

from __future__ import annotations

import shlex
from pathlib import Path

import psycopg
from psycopg.errors import UndefinedTable
from pydantic import ValidationError
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import OperationalError, ProgrammingError

from allotment.db import libpq_url


class DatabaseUnusable(Exception):
    """The configured database cannot be used; the message is meant for the operator."""


def shown(url: str) -> str:
    """The URL as it may be printed: its password masked."""
    try:
        return make_url(libpq_url(url)).render_as_string(hide_password=True)
    except Exception:  # not parseable: settings validation normally refuses it earlier
        return "(the configured URL)"


def _createdb(url: URL) -> str:
    """The `createdb` command line that creates the URL's database."""
    args = ["createdb"]
    host = url.host or url.query.get("host")
    if isinstance(host, str) and host:
        args += ["-h", host]
    if url.port:
        args += ["-p", str(url.port)]
    if url.username:
        args += ["-U", url.username]
    return shlex.join([*args, url.database or "allotment"])


def unusable(url: str, exc: BaseException) -> DatabaseUnusable:
    """Why `url` could not be used, from the driver's error `exc`, and what to do."""
    orig = getattr(exc, "orig", None) or exc.__cause__ or exc
    said = " ".join(str(orig).split()) or type(orig).__name__
    where = shown(url)
    parsed = make_url(libpq_url(url))
    if getattr(orig, "sqlstate", None) == "3D000" or (
        parsed.database and f'database "{parsed.database}" does not exist' in said
    ):
        return DatabaseUnusable(
            f"The database {parsed.database!r} does not exist on the PostgreSQL server of "
            f"ALLOTMENT_DATABASE_URL ({where}). Create it with `{_createdb(parsed)}` (or "
            f'CREATE DATABASE "{parsed.database}"), then run `allotment migrate` (or '
            "`allotment serve --migrate`) to create its schema."
        )
    if "password authentication failed" in said or "authentication failed" in said:
        advice = "Check the user and password in ALLOTMENT_DATABASE_URL, and pg_hba.conf."
    else:
        advice = (
            "Check that PostgreSQL is running and accepts connections at that host and port "
            "(pg_isready), and that ALLOTMENT_DATABASE_URL names it; unset, the embedded "
            "PostgreSQL is used."
        )
    ended = said if said.endswith((".", "?", "!")) else f"{said}."
    return DatabaseUnusable(
        f"Cannot connect to the database of ALLOTMENT_DATABASE_URL ({where}): {ended} {advice}"
    )


def explain(exc: BaseException, url: str, data_dir: Path) -> str | None:
    """The paragraph for a command whose session failed with `exc`: the database could not
    be reached (`unusable`), or it holds no Allotment schema; None for anything else."""
    from allotment.errors import ServiceUnavailable  # the web stack: only once a command ran

    if isinstance(exc, ServiceUnavailable) and isinstance(
        exc.__cause__, OperationalError | psycopg.OperationalError
    ):
        return str(unusable(url, exc))
    if isinstance(exc, ProgrammingError) and isinstance(exc.orig, UndefinedTable):
        # Most often: run from another directory, so the embedded servers were started
        # afresh under its ./.allotment (the data dir is relative to where it runs).
        return (
            f"the database has no Allotment schema ({str(exc.orig).splitlines()[0]}). "
            "Run this from the directory the service runs in, or set ALLOTMENT_DATA_DIR "
            f"(now {data_dir.resolve()}) or ALLOTMENT_DATABASE_URL to its store; "
            "`allotment migrate` creates the schema in a new one."
        )
    return None


def check_database(url: str, *, timeout_s: int = 5) -> None:
    """Connect to `url` once; `DatabaseUnusable` with the reason when that fails."""
    try:
        with psycopg.connect(libpq_url(url), connect_timeout=timeout_s):
            pass
    except psycopg.Error as exc:
        raise unusable(url, exc) from None


def settings_problems(exc: ValidationError) -> str:
    """Each problem after the setting it is about; one between settings (a model
    validator's, located nowhere) names them itself."""
    problems = []
    for error in exc.errors():
        message = error["msg"].removeprefix("Value error, ")
        if error["loc"]:
            message = f"ALLOTMENT_{'_'.join(str(p) for p in error['loc']).upper()}: {message}"
        problems.append(message)
    return "; ".join(problems)
