"""Copy a whole ledger into an empty database: SQLite to PostgreSQL and back (``ledger copy``).

Every table of :mod:`orchestrator.ledger.schema` is copied, parents before children (the
schema's foreign keys give the order), rows in primary-key order with their keys and
timestamps unchanged; Alembic's version row is not copied, the target gets it by being
migrated to the head. A column that points into its own table (a part's ``parent_id``) is
written NULL with the row and set in a second pass, so no row ever points at one not yet
copied. Leases (``claimed_by``, ``lease_until``) are cleared: the copy belongs to no replica,
and the daemons started on it claim its in-flight jobs as orphans. On PostgreSQL the id
sequences are moved past the copied ids.

Rows stream in batches (memory does not grow with the ledger) from one read transaction on
the source (a consistent snapshot) into one write transaction on the target: a failure leaves
the target as empty as it was. Both ledgers are held for the copy: SQLite by the daemon's file
lock, PostgreSQL by the one-daemon advisory lock, and a PostgreSQL source must have no live
replica and no unexpired lease.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from typing import Any

import attrs
import sqlalchemy as sa
import structlog
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from orchestrator.clock import Clock
from orchestrator.errors import ConfigError, CopyRefused, LedgerError, LedgerLocked
from orchestrator.ledger import leases
from orchestrator.ledger.engine import (
    READ_ONLY,
    create_engine,
    display_url,
    parse_url,
    sqlite_path,
)
from orchestrator.ledger.lock import DAEMON_LOCK_KEY, DaemonLock, lock_path, postgres_session_lock
from orchestrator.ledger.migrate import head_revision, revision_of, upgrade
from orchestrator.ledger.schema import jobs, metadata

log = structlog.get_logger(__name__)

BATCH_SIZE = 2000
"""Rows read and written per round trip."""

CLEARED: Mapping[str, tuple[str, ...]] = {jobs.name: ("claimed_by", "lease_until")}
"""Columns written NULL in the copy, per table: the leases."""


@attrs.frozen(kw_only=True)
class CopyReport:
    """What one copy did."""

    source: str
    """The source URL, password masked."""
    target: str
    """The target URL, password masked."""
    rows: dict[str, int]
    """Rows copied per table, in copy order."""
    leases_cleared: int
    """Jobs whose lease was dropped in the copy."""


def copy_order() -> list[sa.Table]:
    """The schema's tables, each after the tables its foreign keys point at."""
    return list(metadata.sorted_tables)


async def copy_ledger(
    source: str, target: str, *, clock: Clock, batch_size: int = BATCH_SIZE
) -> CopyReport:
    """Copy every row of the ledger at ``source`` into the empty ledger at ``target``.

    The target is migrated to the head first (a SQLite file is created); ``clock`` decides
    which leases of a PostgreSQL source are still live.

    Raises:
        CopyRefused: a URL is malformed or unsupported, both name the same ledger, the SQLite
            source does not exist, the source is not at the migration head, a daemon holds
            either ledger, or the target holds rows. Nothing was changed.
        LedgerError: a database cannot be opened, or the copy failed (the target keeps no
            copied row).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    _check_urls(source, target)
    head = head_revision()
    source_engine = create_engine(source)
    try:
        current = await revision_of(source_engine)
        if current != head:
            raise CopyRefused(
                f"--from: the ledger {display_url(source)} is at schema revision "
                f"{current or 'none'}, not the head {head}: run `orchestrator migrate` on it "
                "(with this version of the orchestrator) first"
            )
        async with _hold(source_engine, source, "--from", clock=clock, check_leases=True):
            await _refuse_rows(target)
            return await _into_target(source_engine, source, target, clock, batch_size)
    finally:
        await source_engine.dispose()


async def _into_target(
    source_engine: AsyncEngine, source: str, target: str, clock: Clock, batch_size: int
) -> CopyReport:
    """Migrate and hold the target, then copy; a new SQLite file is held once it exists."""
    path = sqlite_path(target)
    async with contextlib.AsyncExitStack() as stack:
        target_engine = create_engine(target)
        stack.push_async_callback(target_engine.dispose)
        held = path is None or path.exists()
        if held:  # a daemon already on the target is refused before the migration
            await stack.enter_async_context(_hold(target_engine, target, "--to", clock=clock))
        await upgrade(target)
        if not held:
            await stack.enter_async_context(_hold(target_engine, target, "--to", clock=clock))
        report = await _copy(source_engine, target_engine, batch_size)
    report = attrs.evolve(report, source=display_url(source), target=display_url(target))
    log.info(
        "ledger.copied",
        source=report.source,
        target=report.target,
        rows=report.rows,
        leases_cleared=report.leases_cleared,
    )
    return report


def _check_urls(source: str, target: str) -> None:
    """Refuse malformed, unsupported, in-memory, missing and identical ledgers."""
    for flag, url in (("--from", source), ("--to", target)):
        try:
            parse_url(url)
        except ConfigError as exc:
            raise CopyRefused(f"{flag}: {str(exc).removeprefix('ledger.url: ')}") from None
        if parse_url(url).get_backend_name() == "sqlite" and sqlite_path(url) is None:
            raise CopyRefused(
                f"{flag}: {display_url(url)} is an in-memory SQLite database, which lives only "
                "as long as this process: give a file, sqlite:///path/to/ledger.db"
            )
    path = sqlite_path(source)
    if path is not None and not path.is_file():
        raise CopyRefused(f"--from: the SQLite ledger {path} does not exist")
    if _identity(source) == _identity(target):
        raise CopyRefused(
            f"--from and --to name the same ledger ({display_url(source)}): "
            "copy into another, empty database"
        )


def _identity(url: str) -> tuple[str, ...]:
    """What tells two URLs of one database apart from URLs of two (drivers and users aside)."""
    parsed = parse_url(url)
    path = sqlite_path(url)
    if path is not None:
        return ("sqlite", str(path.resolve()))
    return (
        "postgresql",
        (parsed.host or "").lower(),
        str(parsed.port or 5432),
        parsed.database or parsed.username or "",
    )


@contextlib.asynccontextmanager
async def _hold(
    engine: AsyncEngine, url: str, flag: str, *, clock: Clock, check_leases: bool = False
) -> AsyncIterator[None]:
    """Hold a ledger for the block, the way a daemon would, or refuse naming the holder.

    SQLite: the daemon's file lock. PostgreSQL: no live replica's presence session, no
    unexpired lease (``check_leases``), and the one-daemon advisory lock.
    """
    shown = display_url(url)
    path = sqlite_path(url)
    if path is not None:
        try:
            lock = DaemonLock.acquire(path)
        except LedgerLocked:
            raise CopyRefused(f"{flag}: {_sqlite_holder(path)}: stop it first") from None
        try:
            yield
        finally:
            lock.release()
        return
    async with engine.connect() as conn:
        replicas = sorted(await leases.live_replicas(conn))
        live = await _live_leases(conn, clock.now()) if check_leases else []
    if replicas:
        listed = ", ".join(repr(r) for r in replicas)
        raise CopyRefused(
            f"{flag}: the ledger {shown} has live replicas ({listed}, per pg_stat_activity): "
            "stop every daemon on it first"
        )
    if live:
        owner, count, until = live[0]
        more = f" (and {len(live) - 1} more replicas)" if len(live) > 1 else ""
        raise CopyRefused(
            f"{flag}: replica {owner!r}{more} holds unexpired leases on {count} jobs of the "
            f"ledger {shown} until {_iso(until)}: stop every daemon on it first (a replica "
            "that died without releasing them: wait until they expire)"
        )
    async with contextlib.AsyncExitStack() as stack:
        try:
            await stack.enter_async_context(postgres_session_lock(engine, DAEMON_LOCK_KEY, shown))
        except LedgerLocked:
            raise CopyRefused(
                f"{flag}: another process holds the exclusive lock of the ledger {shown} "
                "(another `orchestrator ledger copy`?)"
            ) from None
        yield


def _sqlite_holder(path: Any) -> str:
    """Who holds the daemon lock of SQLite ledger ``path``, as the lock file names it."""
    lock = lock_path(path)
    try:
        pid = int(lock.read_text(encoding="ascii").strip())
    except (OSError, ValueError):
        return f"a running daemon holds the ledger {path} (lock {lock})"
    return f"a running daemon (pid {pid}) holds the ledger {path} (lock {lock})"


async def _live_leases(conn: AsyncConnection, now: float) -> list[tuple[str, int, float]]:
    """``(replica, jobs, latest lease end)`` of the unexpired leases on in-flight jobs."""
    rows = await conn.execute(
        sa.select(jobs.c.claimed_by, sa.func.count(), sa.func.max(jobs.c.lease_until))
        .where(
            jobs.c.claimed_by.is_not(None),
            jobs.c.lease_until > now,
            jobs.c.state.in_([state.value for state in leases.CLAIMED_STATES]),
        )
        .group_by(jobs.c.claimed_by)
        .order_by(sa.func.count().desc(), jobs.c.claimed_by)
    )
    return [(str(owner), int(count), float(until)) for owner, count, until in rows]


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, tz=UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


async def _refuse_rows(url: str) -> None:
    """Refuse a target that holds rows, before anything (a migration) touches it."""
    path = sqlite_path(url)
    if path is not None and not path.exists():
        return
    engine = create_engine(url)
    try:
        if await revision_of(engine) is None:
            return  # never migrated: none of the ledger's tables (a foreign table is its own)
        async with engine.connect() as conn:
            await conn.execution_options(**{READ_ONLY: True})
            present = await conn.run_sync(lambda sync: set(sa.inspect(sync).get_table_names()))
            counts = await _counts(conn, [t for t in copy_order() if t.name in present])
    finally:
        await engine.dispose()
    _require_empty(url, counts)


async def _counts(conn: AsyncConnection, tables: list[sa.Table]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for table in tables:
        counts[table.name] = int(
            await conn.scalar(sa.select(sa.func.count()).select_from(table)) or 0
        )
    return counts


def _require_empty(url: str, counts: Mapping[str, int]) -> None:
    if any(counts.values()):
        held = ", ".join(f"{n} {name}" for name, n in counts.items() if n)
        raise CopyRefused(
            f"--to: the ledger {display_url(url)} is not empty ({held}): copy into a new, "
            "empty database"
        )


async def _copy(source: AsyncEngine, target: AsyncEngine, batch_size: int) -> CopyReport:
    """One read transaction on ``source``, one write transaction on ``target``."""
    reader = source.execution_options(**{READ_ONLY: True})
    if source.dialect.name == "postgresql":
        reader = reader.execution_options(
            isolation_level="REPEATABLE READ", postgresql_readonly=True
        )
    tables = copy_order()
    rows: dict[str, int] = {}
    cleared = 0
    async with reader.connect() as src, src.begin(), target.begin() as dst:
        if target.dialect.name == "postgresql":
            # Replicas started early wait for the commit instead of writing beside the copy.
            names = ", ".join(dst.dialect.identifier_preparer.format_table(t) for t in tables)
            await dst.execute(sa.text(f"LOCK TABLE {names} IN EXCLUSIVE MODE"))
        _require_empty(str(target.url), await _counts(dst, tables))
        for table in tables:
            rows[table.name], n = await _copy_rows(src, dst, table, batch_size)
            cleared += n
        for table in tables:
            await _link_rows(src, dst, table, batch_size)
        if target.dialect.name == "postgresql":
            for table in tables:
                await _advance_sequence(dst, table)
    return CopyReport(source="", target="", rows=rows, leases_cleared=cleared)


def _self_references(table: sa.Table) -> list[sa.Column[Any]]:
    """The columns of ``table`` whose foreign key points into ``table`` itself."""
    return [fk.parent for fk in table.foreign_keys if fk.column.table is table]


async def _copy_rows(
    src: AsyncConnection, dst: AsyncConnection, table: sa.Table, batch_size: int
) -> tuple[int, int]:
    """Copy ``table``'s rows in key order, self-references and leases NULL; (rows, leases)."""
    nulled = [c.name for c in _self_references(table)]
    cleared = CLEARED.get(table.name, ())
    query = sa.select(table).order_by(*table.primary_key.columns)
    copied = dropped = 0
    result = await src.stream(query)
    async for batch in result.partitions(batch_size):
        values = [dict(row._mapping) for row in batch]
        for value in values:
            if any(value[name] is not None for name in cleared):
                dropped += 1
            value.update(dict.fromkeys((*nulled, *cleared)))
        await _write(dst, table, table.insert(), values)
        copied += len(values)
    log.debug("ledger.copy_table", table=table.name, rows=copied)
    return copied, dropped


async def _link_rows(
    src: AsyncConnection, dst: AsyncConnection, table: sa.Table, batch_size: int
) -> None:
    """Set the self-references :func:`_copy_rows` left NULL (a part's parent)."""
    keys = list(table.primary_key.columns)
    for column in _self_references(table):
        query = sa.select(*keys, column).where(column.is_not(None)).order_by(*keys)
        update = (
            table.update()
            .where(*(key == sa.bindparam(f"key_{key.name}") for key in keys))
            .values({column.name: sa.bindparam("link")})
        )
        result = await src.stream(query)
        async for batch in result.partitions(batch_size):
            values = [
                {**{f"key_{key.name}": row._mapping[key] for key in keys}, "link": row[-1]}
                for row in batch
            ]
            await _write(dst, table, update, values)


async def _write(
    dst: AsyncConnection, table: sa.Table, statement: Any, values: list[dict[str, Any]]
) -> None:
    try:
        await dst.execute(statement, values)
    except DBAPIError as exc:
        reason = exc.orig if exc.orig is not None else exc
        raise LedgerError(
            f"cannot copy the rows of {table.name} into the ledger "
            f"{dst.engine.url.set(drivername=dst.dialect.name)}: {reason}; "
            "nothing was copied (the target stays empty)"
        ) from exc


async def _advance_sequence(dst: AsyncConnection, table: sa.Table) -> None:
    """Make the next id of ``table``'s serial key follow the largest copied one."""
    column = table.autoincrement_column
    if column is None:
        return
    largest = sa.select(sa.func.max(column)).scalar_subquery()
    sequence = sa.func.pg_get_serial_sequence(
        dst.dialect.identifier_preparer.format_table(table), column.name
    )
    await dst.execute(
        sa.select(sa.func.setval(sequence, sa.func.coalesce(largest, 0) + 1, sa.false()))
    )
