# dbkit (the template's): `copier update` brings each release's changes here.
"""db-copy: every row of the project's database into another one, migrated and empty.

For a project that moves from SQLite to PostgreSQL or Neon (or back): the source is the
project's database (DATABASE_URL, else app.db), the target the database at --to, which
`db-migrate` has brought to the same head. Every table of the models, in foreign-key order,
is streamed chunk by chunk into one transaction on the target, ids as they are; on PostgreSQL
each table's sequence is then set past the copied ids. Before the commit, each table is read
back on the target with plain SQL and must hold as many rows, with the same checksum
(checksums.py, db-verify's), as were read from the source: all of it is copied, or nothing.
"""

import argparse
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, MetaData, Table, exists, insert, select, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import SAWarning

from ..models.base import Base  # models/__init__.py, run first, imports every model
from .checksums import checksum, raw_checksum
from .config import database_url, parse_database_url
from .db import (
    CHUNK_SIZE,
    SQLITE_BEGIN,
    driver_connection,
    existing_sqlite_file,
    make_engine,
    open_database,
)
from .errors import MASK, describe, explained, in_memory, name_database
from .program import CannotRun, report, run, uninterrupted
from .schema import database_revisions, read_scripts

NOTHING_WRITTEN = "nothing was written to the target"


@dataclass(frozen=True)
class Copied:
    """A table's rows and checksum, as read from the source and read back from the target."""

    table: str
    rows: int
    checksum: str


def main(argv: Sequence[str] | None = None) -> int:
    return run(
        argv,
        name="db-copy",
        description=(
            "Copy every row of the project's database (DATABASE_URL, else app.db) into the "
            "database at --to, migrated to the same head (db-migrate) and empty: in one "
            "transaction, ids kept, then checked table by table (rows and checksums)."
        ),
        arguments=add_arguments,
        work=copy,
        could_not_run=1,
        interrupted=NOTHING_WRITTEN,  # Ctrl-C inside the transaction rolls it back
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--to",
        metavar="URL",
        required=True,
        help="the target database: postgresql://... or sqlite:///...; migrate it first "
        "(DATABASE_URL=URL db-migrate)",
    )


def copy(args: argparse.Namespace) -> int:
    source_url = database_url()
    target_url = parse_database_url(args.to, "--to")
    if target_url == source_url:
        raise CannotRun(f"--to names the source itself ({name_database(source_url)})")
    tables = copy_order(Base.metadata)
    on_postgresql = source_url.get_backend_name() == "postgresql"
    # one snapshot for every table (SQLite: its read transaction is one)
    snapshot = {"isolation_level": "REPEATABLE READ", "postgresql_readonly": True}
    with (
        open_database(source_url, pre_ping=False) as sessions,
        target_transaction(target_url) as target,
        sessions() as session,
    ):
        # each database's errors told by its own explained(): the other's password is not
        # masked there, and the line would name the wrong database
        with explained(source_url):
            source = session.connection(execution_options=snapshot if on_postgresql else None)
            if on_postgresql:
                # timestamps with a time zone read as UTC, as the target writes them
                source.exec_driver_sql("SET LOCAL TimeZone = 'UTC'")
        with explained(target_url):
            check_empty(target, tables)
        copied = [copy_table(source, source_url, target, target_url, t) for t in tables]
        with explained(target_url), uninterrupted():
            target.commit()
    lines = [f"{c.table}: {_rows(c.rows)}, checksum {c.checksum}" for c in copied]
    total = sum(c.rows for c in copied)
    lines.append(
        f"Copied {_rows(total)} in {len(copied)} table(s) from {describe(source_url)} to "
        f"{describe(target_url)}; the rows and checksums match"
    )
    report("\n".join(lines))
    return 0


def copy_order(metadata: MetaData) -> list[Table]:
    """The tables, each after every table it refers to; CannotRun when foreign keys form a
    cycle, in which no table can go first."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SAWarning)  # a cycle, refused below by name
        tables = metadata.sorted_tables
    done: set[Table] = set()
    cycle: set[str] = set()
    for table in tables:
        for key in table.foreign_key_constraints:
            referred = key.referred_table
            if referred is not table and referred not in done:
                cycle |= {table.name, referred.name}
        done.add(table)
    if cycle:
        raise CannotRun(
            f"the foreign keys of {', '.join(sorted(cycle))} form a cycle, so none of them can "
            "be copied before the others; copy them by hand (pg_dump --data-only, or INSERTs "
            "with the constraints deferred)"
        )
    return tables


@contextmanager
def target_transaction(url: URL) -> Iterator[Connection]:
    """A connection in a transaction on the target, once the target is found at the source's
    head; it rolls back unless committed, and its write lock is taken first on SQLite."""
    with explained(url):
        _existing_target(url)
        engine = make_engine(url, pre_ping=False)
        try:
            with engine.connect() as connection:
                _check_target_head(connection, url)
                if connection.dialect.name == "sqlite":
                    # the write lock up front; foreign keys checked at the commit, so a row
                    # may refer to one later in its own table
                    connection = connection.execution_options(**{SQLITE_BEGIN: "IMMEDIATE"})
                    connection.exec_driver_sql("PRAGMA defer_foreign_keys = ON")
                else:
                    connection.exec_driver_sql("SET LOCAL TimeZone = 'UTC'")
                yield connection
        finally:
            engine.dispose()


def _existing_target(url: URL) -> None:
    # (a SQLite file's folder, its kind and its permissions as for any database)
    path = Path(url.database or "")
    sqlite_file = url.get_backend_name() == "sqlite" and in_memory(url) is None
    if sqlite_file and path.parent.is_dir() and not path.exists():
        raise CannotRun(f"the target ({name_database(url)}) does not exist; {_migrate_first(url)}")
    existing_sqlite_file(url)


def _check_target_head(connection: Connection, url: URL) -> None:
    heads = read_scripts().heads
    current = database_revisions(connection)
    connection.rollback()
    if current == heads:
        return
    at = f"at revision {', '.join(sorted(current))}" if current else "at no revision"
    raise CannotRun(
        f"the target ({name_database(url)}) is {at}, the source at {', '.join(sorted(heads))}; "
        f"{_migrate_first(url)}"
    )


def _migrate_first(url: URL) -> str:
    shown = describe(url)
    secret = " (the password where it shows ***)" if MASK in shown else ""
    return f"migrate it first: DATABASE_URL='{shown}'{secret} db-migrate, then copy again"


def check_empty(target: Connection, tables: Sequence[Table]) -> None:
    """CannotRun unless every table on the target is empty (PostgreSQL: and stays so)."""
    if target.dialect.name == "postgresql" and tables:
        # no other session writes to them until the copy commits; reads go on
        names = ", ".join(_quoted(table) for table in tables)
        target.exec_driver_sql(f"LOCK TABLE {names} IN EXCLUSIVE MODE")
    holding = [table.name for table in tables if target.scalar(select(exists().select_from(table)))]
    if holding:
        raise CannotRun(
            f"the target ({name_database(target.engine.url)}) is not empty: "
            f"rows in {', '.join(holding)}; db-copy writes only into an empty database, so "
            f"that no row of its is overwritten or mixed with the source's; {NOTHING_WRITTEN}"
        )


def copy_table(
    source: Connection, source_url: URL, target: Connection, target_url: URL, table: Table
) -> Copied:
    """Stream table's rows from source into target, then compare the two sides."""
    columns = list(table.columns)
    keys = [column.key for column in columns]
    query = select(*columns).order_by(*table.primary_key.columns)

    def chunks() -> Iterator[Sequence[Any]]:
        with explained(source_url):
            result = source.execute(query, execution_options={"yield_per": CHUNK_SIZE})
            yield from result.partitions()

    def written(read: Iterator[Sequence[Any]]) -> Iterator[Sequence[Any]]:
        # each chunk goes to the target as the checksum of the source's rows passes over it
        for chunk in read:
            with explained(target_url):
                target.execute(insert(table), [dict(zip(keys, row, strict=True)) for row in chunk])
            yield chunk

    rows, sum_read = checksum(written(chunks()), plain=False)
    with explained(target_url):
        if target.dialect.name == "postgresql":
            _set_sequence_past_ids(target, table)
        back = raw_checksum(driver_connection(target), table, columns, target.dialect.name)
    if back != (rows, sum_read):
        raise CannotRun(
            f"the copy of {table.name} does not match: the source has {_rows(rows)} (checksum "
            f"{sum_read}), the target read back {_rows(back[0])} (checksum {back[1]}); "
            f"rolled back, {NOTHING_WRITTEN}"
        )
    return Copied(table.name, rows, sum_read)


def _set_sequence_past_ids(target: Connection, table: Table) -> None:
    # the ids came with the rows: the column's sequence (serial or identity) must hand out
    # the next one past the largest, or the first insert after the copy would collide
    column = table.autoincrement_column
    if column is None:
        return
    target.execute(
        text(
            f"SELECT setval(pg_get_serial_sequence(:table, :column), "
            f"coalesce(max({_quoted_name(column.name)}), 0) + 1, false) FROM {_quoted(table)}"
        ),
        {"table": _quoted(table), "column": column.name},
    )


def _quoted(table: Table) -> str:
    name = _quoted_name(table.name)
    return f"{_quoted_name(table.schema)}.{name}" if table.schema else name


def _quoted_name(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _rows(count: int) -> str:
    return f"{count} row" if count == 1 else f"{count} rows"
