"""write-once: store marker names in one transaction, then exit."""

import argparse
import gc
import io
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from itertools import islice

from sqlalchemy import Connection, bindparam, insert
from sqlalchemy.orm import Session, sessionmaker

from .config import database_url
from .db import driver_connection, driver_errors, open_database
from .errors import DatabaseSetupError, explained
from .models.marker import InvalidName, Marker, check_names

DEFAULT_NAME = "persistent-check"
BATCH_SIZE = 10_000
MARKERS = Marker.metadata.tables[Marker.__tablename__]
COPY_MARKERS = f"COPY {MARKERS.name} ({MARKERS.c.name.name}) FROM STDIN"


def write_names(sessions: sessionmaker[Session], names: Iterable[str]) -> int:
    """Check and insert every name in one transaction: all of them are stored, or none is."""
    count = 0
    with sessions.begin() as session, _writer(session.connection()) as write:
        for batch in _batches(names, BATCH_SIZE):
            check_names(batch, first_number=count + 1)
            write(batch)
            count += len(batch)
    return count


def names_from(arguments: Sequence[str], stdin: Iterable[str]) -> Iterable[str]:
    """The names to write: the arguments, the default name, or one per line of stdin for '-'."""
    if list(arguments) == ["-"]:
        return _lines(stdin)
    if "-" in arguments:
        raise InvalidName("'-' (read standard input) must be the only name")
    return arguments or [DEFAULT_NAME]


def main(argv: Sequence[str] | None = None) -> int:
    # a one-shot process: what the imports built lives until exit, so no garbage collection,
    # the one at exit included, needs to walk it (about 50 ms of a 250 ms run)
    gc.freeze()
    parser = argparse.ArgumentParser(
        prog="write-once",
        description="Store marker names in the database in one transaction, then exit.",
    )
    parser.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help=f"names to store (default: {DEFAULT_NAME}); '-' reads one name per line from stdin",
    )
    args = parser.parse_args(argv)
    if isinstance(sys.stdin, io.TextIOWrapper):
        # bytes that are not UTF-8 become lone surrogates, which check_names refuses by number
        sys.stdin.reconfigure(errors="surrogateescape")
    try:
        url = database_url()
        sessions = open_database(url, pre_ping=False)
        with explained(url):
            count = write_names(sessions, names_from(args.names, sys.stdin))
    except DatabaseSetupError as exc:
        parser.exit(1, f"write-once: error: {exc}\n")
    except InvalidName as exc:
        parser.exit(1, f"write-once: error: {exc}; nothing was written\n")
    except KeyboardInterrupt:  # raised inside the transaction, which rolled back
        parser.exit(130, "write-once: interrupted; nothing was written\n")
    if count == 0:
        parser.exit(1, "write-once: error: no names on standard input; nothing was written\n")
    print("Wrote marker" if count == 1 else f"Wrote {count} markers")
    return 0


@contextmanager
def _writer(connection: Connection) -> Iterator[Callable[[list[str]], None]]:
    """A function that stores a batch of checked names in the connection's transaction."""
    if connection.dialect.name == "postgresql":
        # COPY streams every batch into one statement, several times faster than INSERTs;
        # psycopg escapes each name for COPY's text format, so every byte arrives as it was
        driver = driver_connection(connection)
        with (
            driver_errors(connection, COPY_MARKERS),
            driver.cursor() as cursor,
            cursor.copy(COPY_MARKERS) as copy,
        ):

            def copy_rows(batch: list[str]) -> None:
                for name in batch:
                    copy.write_row((name,))

            yield copy_rows
        return

    # SQLAlchemy converts every row's parameters to the driver's form, which for a million
    # rows costs as much as the inserts themselves; a plain string needs no conversion, so
    # the INSERT is compiled once for this database and the rows go to its driver as they are
    compiled = insert(MARKERS).values(name=bindparam("name")).compile(dialect=connection.dialect)
    sql = str(compiled)

    def insert_rows(batch: list[str]) -> None:
        rows = [(name,) for name in batch] if compiled.positional else [{"name": n} for n in batch]
        connection.exec_driver_sql(sql, rows)

    yield insert_rows


def _lines(stdin: Iterable[str]) -> Iterator[str]:
    # one name per line, without its line ending; a chunk at a time, which is faster
    lines = iter(stdin)
    while chunk := list(islice(lines, BATCH_SIZE)):
        yield from [line.rstrip("\r\n") for line in chunk]


def _batches(items: Iterable[str], size: int) -> Iterator[list[str]]:
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch
