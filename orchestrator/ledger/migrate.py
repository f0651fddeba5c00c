"""Schema migrations: Alembic driven from code, no ``alembic.ini``.

The migration scripts live in ``migrations/`` at the top of the source tree; the wheel ships
them as ``orchestrator/_migrations`` (pyproject force-includes them). :func:`migrations_dir`
finds whichever exists, so the same calls work from a checkout, an editable install and a
wheel. Every command runs on a connection of :func:`orchestrator.ledger.engine.create_engine`,
so SQLite migrations get the same locking discipline as the daemon.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import sqlalchemy as sa
import structlog
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from orchestrator.errors import LedgerError
from orchestrator.ledger.engine import READ_ONLY, create_engine, display_url, sqlite_path
from orchestrator.ledger.schema import metadata

log = structlog.get_logger(__name__)

_PACKAGE_DIR = Path(__file__).resolve().parent.parent

FILE_TEMPLATE = "%%(year)d_%%(month).2d_%%(day).2d_%%(hour).2d%%(minute).2d-%%(rev)s_%%(slug)s"
"""Dated revision file names (``2026_11_23_1130-<rev>_<slug>.py``), oldest first in a listing.

The ``%%`` are ConfigParser escapes: Alembic reads them as single ``%``.
"""


def migrations_dir() -> Path:
    """The Alembic script directory: packaged ``orchestrator/_migrations`` or the source tree's.

    The packaged copy wins: in an installed wheel the folder above the package is
    site-packages, whose ``migrations/`` (if any) belongs to someone else.

    Raises:
        LedgerError: neither location holds an Alembic ``env.py`` (a broken install).
    """
    candidates = (_PACKAGE_DIR / "_migrations", _PACKAGE_DIR.parent / "migrations")
    for candidate in candidates:
        if (candidate / "env.py").is_file() and (candidate / "versions").is_dir():
            return candidate
    searched = ", ".join(str(candidate) for candidate in candidates)
    raise LedgerError(
        f"cannot find the ledger migrations (looked in {searched}); "
        "reinstall the orchestrator package"
    )


def alembic_config(url: str | None = None, *, connection: Connection | None = None) -> Config:
    """An Alembic configuration for this project, built without an ini file.

    Args:
        url: the ledger URL env.py connects to when no ``connection`` is given.
        connection: an open connection env.py runs the migrations on, inside the caller's
            transaction.

    Raises:
        LedgerError: as :func:`migrations_dir`.
    """
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.set_main_option("file_template", FILE_TEMPLATE)
    config.set_main_option("timezone", "UTC")
    if url is not None:
        # ConfigParser interpolates '%': URL-encoded passwords must be escaped.
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The revision the code expects the ledger to be at.

    Raises:
        LedgerError: the scripts have several heads (two branches need a merge revision) or
            none.
    """
    heads = ScriptDirectory.from_config(alembic_config()).get_heads()
    if len(heads) != 1:
        raise LedgerError(
            f"the ledger migrations have {len(heads)} heads ({', '.join(heads) or 'none'}); "
            "exactly one is expected: merge them with a new revision"
        )
    return heads[0]


async def current_revision(url: str) -> str | None:
    """The ledger's schema revision; None for a database never migrated.

    A SQLite file that does not exist is reported as None and is not created.

    Raises:
        ConfigError: the URL is not a SQLite or PostgreSQL URL.
        LedgerError: the database cannot be opened.
    """
    path = sqlite_path(url)
    if path is not None and not path.exists():
        return None
    engine = create_engine(url)
    try:
        return await revision_of(engine)
    finally:
        await engine.dispose()


async def revision_of(engine: AsyncEngine) -> str | None:
    """The schema revision of the database behind ``engine`` (None if never migrated).

    Raises:
        LedgerError: the database cannot be opened (server down, no such database, bad
            credentials, unwritable folder); the message names the URL and the reason.
    """
    try:
        async with engine.connect() as conn:
            await conn.execution_options(**{READ_ONLY: True})
            return await conn.run_sync(_revision)
    except (OSError, DBAPIError) as exc:
        reason = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
        where = engine.url.render_as_string(hide_password=True)
        raise LedgerError(
            f"cannot open the ledger {where}: {reason}; "
            "check the [ledger] url and that the database is reachable"
        ) from exc


def _revision(sync: Connection) -> str | None:
    return MigrationContext.configure(sync).get_current_revision()


MIGRATION_LOCK_KEY = 0x6F72_6368_6D69_6772 & 0x7FFF_FFFF_FFFF_FFFF
"""The advisory-lock key that serialises migrations on PostgreSQL ("orchmigr")."""


async def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the ledger at ``url`` up to ``revision`` (creating a SQLite file if needed).

    All the steps run in one transaction: a failure leaves the ledger where it was.

    Raises:
        ConfigError: the URL is not a SQLite or PostgreSQL URL.
        LedgerError: the database cannot be opened, or ``revision`` (or the ledger's own
            revision) is unknown to this version of the code.
    """
    path = sqlite_path(url)
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LedgerError(f"cannot create the ledger's folder {path.parent}: {exc}") from exc
    await _run(url, "upgrade", revision)


async def downgrade(url: str, revision: str = "base") -> None:
    """Migrate the ledger at ``url`` down to ``revision`` (``base`` drops every table).

    Raises:
        ConfigError: the URL is not a SQLite or PostgreSQL URL.
        LedgerError: the database cannot be opened, or ``revision`` (or the ledger's own
            revision) is unknown to this version of the code.
    """
    await _run(url, "downgrade", revision)


async def _run(url: str, direction: str, revision: str) -> None:
    """Run ``alembic <direction> <revision>`` on one transaction of a fresh engine."""
    engine = create_engine(url)
    try:
        # Also turns an unreachable database into a clear LedgerError before any DDL.
        before = await revision_of(engine)
        async with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                # Replicas started together with --migrate: one migrates, the others wait
                # for its commit and then find the schema at head.
                await conn.execute(
                    sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
                )

            def migrate(sync: Connection) -> None:
                config = alembic_config(connection=sync)
                if direction == "upgrade":
                    command.upgrade(config, revision)
                else:
                    command.downgrade(config, revision)

            try:
                await conn.run_sync(migrate)
            except CommandError as exc:
                raise LedgerError(
                    f"cannot migrate the ledger {display_url(url)} {direction} to {revision!r} "
                    f"from revision {before or 'none'}: {exc}"
                ) from exc
            after = await conn.run_sync(_revision)
    finally:
        await engine.dispose()
    log.info(
        "ledger.migrated",
        url=display_url(url),
        direction=direction,
        from_revision=before,
        to_revision=after,
    )


async def autogenerate_revision(message: str, *, url: str | None = None) -> Path:
    """Write a new revision from the difference between the schema module and a ledger.

    For developers changing :mod:`orchestrator.ledger.schema`. Without ``url`` a throwaway
    SQLite ledger is migrated to head and compared; review the generated script (and its
    PostgreSQL behaviour) before committing it.

    Returns:
        The path of the new script.

    Raises:
        LedgerError: nothing changed, so no revision was written.
    """
    with tempfile.TemporaryDirectory() as scratch:
        target = url or f"sqlite:///{Path(scratch) / 'ledger.db'}"
        await upgrade(target)
        engine = create_engine(target)
        try:
            async with engine.begin() as conn:
                differences = await conn.run_sync(
                    lambda sync: compare_metadata(MigrationContext.configure(sync), metadata)
                )
                if not differences:
                    raise LedgerError(
                        "orchestrator.ledger.schema matches the migration head: "
                        "there is nothing to write a revision for"
                    )
                script = await conn.run_sync(
                    lambda sync: command.revision(
                        alembic_config(connection=sync), message=message, autogenerate=True
                    )
                )
        finally:
            await engine.dispose()
    if script is None or isinstance(script, list):
        raise LedgerError("autogenerate wrote no single revision script")
    return Path(script.path)
