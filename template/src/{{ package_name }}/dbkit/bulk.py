# dbkit (the template's): `copier update` brings each release's changes here.
"""Many rows in or out, fast: write-once's and read-later's paths for a million rows.

Each keeps to the session's transaction and hands the rows to the driver as they are. In:
COPY on PostgreSQL, an INSERT compiled once on SQLite. Out: a statement whose rows arrive in
chunks on PostgreSQL, yield_per on SQLite. Each is here because a profile of a million rows
asked for it; an ordinary write or read needs none of them.
"""

import importlib
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import ExitStack, closing, contextmanager
from itertools import islice
from operator import itemgetter
from typing import Any

from sqlalchemy import Connection, Select, Table, bindparam, insert
from sqlalchemy.orm import Session

from .db import CHUNK_SIZE, driver_connection, driver_errors, first_round_trip


class Inserted:
    """What inserter() yields: insert(batch) inserts a batch; stored, once the inserter's
    block has ended, is how many rows the database says it stored, which a trigger that
    discards rows (PostgreSQL's RETURN NULL, SQLite's RAISE(IGNORE)) makes fewer."""

    def __init__(self, insert: Callable[[list[str]], int | None]) -> None:
        self._insert = insert
        self.stored = 0

    def insert(self, batch: list[str]) -> None:
        self.stored += self._insert(batch) or 0


@contextmanager
def inserter(connection: Connection, table: Table, column: str) -> Iterator[Inserted]:
    """Inserts batches of strings into table's column, a row each, in the connection's
    transaction; nothing is sent before the first batch."""
    if connection.dialect.name == "postgresql":
        # COPY streams every batch into one statement, several times faster than INSERTs;
        # psycopg escapes each value for COPY's text format, so every byte arrives as it was
        copy_sql = f"COPY {_quoted(connection, table, column)} FROM STDIN"
        driver = driver_connection(connection)
        with driver_errors(connection, copy_sql), driver.cursor() as cursor, ExitStack() as copy:
            copies: list[Any] = []  # begun at the first batch: COPY costs two round trips

            def copy_rows(batch: list[str]) -> None:
                if not copies:
                    copies.append(copy.enter_context(cursor.copy(copy_sql)))
                for value in batch:
                    copies[0].write_row((value,))

            inserted = Inserted(copy_rows)
            yield inserted
            if copies:
                copy.close()  # the COPY ends: its row count is the rows stored
                inserted.stored = max(cursor.rowcount, 0)
        return

    # SQLAlchemy converts every row's parameters to the driver's form, which for a million
    # rows costs as much as the inserts themselves; a plain string needs no conversion, so
    # the INSERT is compiled once for this database and the rows go to its driver as they are
    statement = insert(table).values({column: bindparam(column)})
    compiled = statement.compile(dialect=connection.dialect)
    sql = str(compiled)

    def insert_rows(batch: list[str]) -> int:
        rows = [(v,) for v in batch] if compiled.positional else [{column: v} for v in batch]
        return connection.exec_driver_sql(sql, rows).rowcount

    yield Inserted(insert_rows)


def queue_insert(
    connection: Connection, driver: Any, table: Table, column: str, batch: list[str]
) -> Any:
    """PostgreSQL: an INSERT of batch, in order, queued in the driver's pipeline (one
    statement, whatever the batch's size); its cursor's rowcount, once the pipeline has
    synced, is the rows stored."""
    into = _quoted(connection, table, column)
    cursor = driver.cursor()
    cursor.execute(
        f"INSERT INTO {into} SELECT value FROM unnest(%s::text[]) WITH ORDINALITY "
        "AS batch (value, position) ORDER BY position",
        (batch,),
    )
    return cursor


def _quoted(connection: Connection, table: Table, column: str) -> str:
    # table (column), quoted as this database needs them
    preparer = connection.dialect.identifier_preparer
    return f"{preparer.format_table(table)} ({preparer.quote(column)})"


def scalar_chunks(session: Session, query: Select[Any]) -> Generator[Sequence[Any], None, None]:
    """The first column of query's rows, CHUNK_SIZE at a time, as the database sends them;
    close() it (contextlib.closing) to stop the rows early."""
    if session.get_bind().dialect.name == "postgresql":
        # the first chunk comes in the transaction's first round trip, with the check that
        # the database is at head (db.first_round_trip); only a longer table costs one more,
        # a statement whose rows arrive in chunks as the server sends them. Both read one
        # snapshot (REPEATABLE READ), so the rest is exactly what follows the first chunk.
        connection = session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
        driver = driver_connection(connection)
        first = _literal_sql(connection, query.limit(CHUNK_SIZE))
        with driver_errors(connection, first), driver.cursor() as cursor:
            with first_round_trip(connection, "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY"):
                cursor.execute(first)
            chunk = [row[0] for row in cursor.fetchall()]
            yield chunk
            if len(chunk) == CHUNK_SIZE:
                rest = _literal_sql(connection, query.offset(CHUNK_SIZE))
                with closing(cursor.stream(rest, size=stream_size())) as rows:
                    while chunk := list(map(itemgetter(0), islice(rows, CHUNK_SIZE))):
                        yield chunk
            cursor.execute("COMMIT")
        return
    yield from session.scalars(query, execution_options={"yield_per": CHUNK_SIZE}).partitions()


def _literal_sql(connection: Connection, query: Select[Any]) -> str:
    # LIMIT and OFFSET as numbers: the statement goes to the driver with no parameters
    compiled = query.compile(dialect=connection.dialect, compile_kwargs={"literal_binds": True})
    return str(compiled)


def stream_size() -> int:
    # rows per message from the server: CHUNK_SIZE with libpq 17's chunked mode, else one
    # at a time (single-row mode), which streams as well, only with more messages
    psycopg = importlib.import_module("psycopg")
    return CHUNK_SIZE if psycopg.capabilities.has_stream_chunked() else 1
