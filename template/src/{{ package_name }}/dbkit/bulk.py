# dbkit (the template's): `copier update` brings each release's changes here.
"""Many rows in or out, fast: write-once's and read-later's paths for a million rows.

Each keeps to the session's transaction and hands the rows to the driver as they are. In:
COPY on PostgreSQL, an INSERT compiled once on SQLite. Out: a statement whose rows arrive in
chunks on PostgreSQL, yield_per on SQLite. Each is here because a profile of a million rows
asked for it; an ordinary write or read needs none of them.
"""

from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import closing, contextmanager
from itertools import islice
from operator import itemgetter
from typing import Any

from sqlalchemy import Connection, Select, Table, bindparam, insert
from sqlalchemy.orm import Session

from .db import CHUNK_SIZE, driver_connection, driver_errors, lock_timeout, set_local


@contextmanager
def inserter(
    connection: Connection, table: Table, column: str
) -> Iterator[Callable[[list[str]], None]]:
    """A function that inserts a batch of strings into table's column, a row each, in the
    connection's transaction."""
    if connection.dialect.name == "postgresql":
        # COPY streams every batch into one statement, several times faster than INSERTs;
        # psycopg escapes each value for COPY's text format, so every byte arrives as it was
        copy_sql = f"COPY {table.name} ({column}) FROM STDIN"
        driver = driver_connection(connection)
        with (
            driver_errors(connection, copy_sql),
            driver.cursor() as cursor,
            cursor.copy(copy_sql) as copy,
        ):

            def copy_rows(batch: list[str]) -> None:
                for value in batch:
                    copy.write_row((value,))

            yield copy_rows
        return

    # SQLAlchemy converts every row's parameters to the driver's form, which for a million
    # rows costs as much as the inserts themselves; a plain string needs no conversion, so
    # the INSERT is compiled once for this database and the rows go to its driver as they are
    statement = insert(table).values({column: bindparam(column)})
    compiled = statement.compile(dialect=connection.dialect)
    sql = str(compiled)

    def insert_rows(batch: list[str]) -> None:
        rows = [(v,) for v in batch] if compiled.positional else [{column: v} for v in batch]
        connection.exec_driver_sql(sql, rows)

    yield insert_rows


def scalar_chunks(session: Session, query: Select[Any]) -> Generator[Sequence[Any], None, None]:
    """The first column of query's rows, CHUNK_SIZE at a time, as the database sends them;
    close() it (contextlib.closing) to stop the rows early."""
    if session.get_bind().dialect.name == "postgresql":
        # one statement whose rows arrive in chunks as the server sends them: no server-side
        # cursor to declare, fetch from and close; its transaction, which bounds the wait for
        # a lock on the table (db.py), begins in the same round trip as that bound is set
        connection = session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
        driver = driver_connection(connection)
        sql = str(query.compile(dialect=connection.dialect))
        with driver_errors(connection, sql), driver.cursor() as cursor:
            cursor.execute(f"BEGIN READ ONLY; {set_local('lock_timeout', lock_timeout())}")
            with closing(cursor.stream(sql, size=CHUNK_SIZE)) as rows:
                while chunk := list(map(itemgetter(0), islice(rows, CHUNK_SIZE))):
                    yield chunk
            cursor.execute("COMMIT")
        return
    yield from session.scalars(query, execution_options={"yield_per": CHUNK_SIZE}).partitions()
