"""read-later: print the stored marker names, oldest first, as a Python list."""

import argparse
import gc
import os
import sys
from collections.abc import Generator, Iterable, Sequence
from contextlib import closing
from itertools import islice
from operator import itemgetter
from typing import TextIO

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from .config import database_url
from .db import (
    CHUNK_SIZE,
    driver_connection,
    driver_errors,
    lock_timeout,
    open_database,
    set_local_lock_timeout,
)
from .errors import DatabaseSetupError, explained
from .models.marker import Marker


def read_names(sessions: sessionmaker[Session], out: TextIO) -> None:
    """Stream every name, in id order, to out as `print(list_of_names)` would show them."""
    # the rows stop first, whatever stopped the writing: the session cannot end during a query
    with sessions() as session, closing(_name_chunks(session)) as chunks:
        _write_list(chunks, out)


def main(argv: Sequence[str] | None = None) -> int:
    # a one-shot process: what the imports built lives until exit, so no garbage collection,
    # the one at exit included, needs to walk it (about 50 ms of a 250 ms run)
    gc.freeze()
    parser = argparse.ArgumentParser(
        prog="read-later",
        description="Print the stored marker names, oldest first, as a Python list.",
    )
    parser.parse_args(argv)
    try:
        url = database_url()
        sessions = open_database(url, pre_ping=False)
        with explained(url):
            read_names(sessions, sys.stdout)
    except DatabaseSetupError as exc:
        parser.exit(1, f"read-later: error: {exc}\n")
    except KeyboardInterrupt:
        parser.exit(130, "read-later: interrupted\n")
    except BrokenPipeError:
        # whoever read the output stopped early (`read-later | head`); say nothing more to it
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return 0


def _name_chunks(session: Session) -> Generator[Sequence[str], None, None]:
    query = select(Marker.name).order_by(Marker.id)
    if session.get_bind().dialect.name == "postgresql":
        # one statement whose rows arrive in chunks as the server sends them: no server-side
        # cursor to declare, fetch from and close; its transaction, which bounds the wait for
        # a lock on the table (db.py), begins in the same round trip as that bound is set
        connection = session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
        driver = driver_connection(connection)
        sql = str(query.compile(dialect=connection.dialect))
        with driver_errors(connection, sql), driver.cursor() as cursor:
            cursor.execute(f"BEGIN READ ONLY; {set_local_lock_timeout(lock_timeout())}")
            with closing(cursor.stream(sql, size=CHUNK_SIZE)) as rows:
                while chunk := list(map(itemgetter(0), islice(rows, CHUNK_SIZE))):
                    yield chunk
            cursor.execute("COMMIT")
        return
    yield from session.scalars(query, execution_options={"yield_per": CHUNK_SIZE}).partitions()


def _write_list(chunks: Iterable[Sequence[str]], out: TextIO) -> None:
    # nothing on stdout until the first chunk has arrived: a query that fails prints nothing
    chunks = iter(chunks)
    out.write("[" + ", ".join(map(repr, next(chunks, ()))))
    for chunk in chunks:
        out.write(", " + ", ".join(map(repr, chunk)))
    out.write("]\n")
