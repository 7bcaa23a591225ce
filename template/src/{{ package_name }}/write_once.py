"""write-once: store marker names in one transaction, then exit."""

import argparse
import gc
import sys
from collections.abc import Iterable, Iterator, Sequence
from itertools import islice

from sqlalchemy import insert
from sqlalchemy.orm import Session, sessionmaker

from .config import database_url
from .db import open_database
from .errors import DatabaseSetupError, explained
from .models import InvalidName, Marker, check_name

DEFAULT_NAME = "persistent-check"
BATCH_SIZE = 10_000
# inserts go to the table through Core: the ORM's bulk insert would first sort every row
# through the mapper, four times the cost for rows that have no defaults or events
MARKERS = Marker.metadata.tables[Marker.__tablename__]


def write_names(sessions: sessionmaker[Session], names: Iterable[str]) -> int:
    """Insert every name in one transaction: all of them are stored, or none is."""
    count = 0
    with sessions.begin() as session:
        for batch in _batches(names, BATCH_SIZE):
            session.execute(insert(MARKERS), [{"name": name} for name in batch])
            count += len(batch)
    return count


def names_from(arguments: Sequence[str], stdin: Iterable[str]) -> Iterator[str]:
    """The names to write, each checked: the arguments, or one per line of stdin for '-'."""
    if list(arguments) == ["-"]:
        source: Iterable[str] = (line.rstrip("\r\n") for line in stdin)
    elif "-" in arguments:
        raise InvalidName("'-' (read standard input) must be the only name; nothing was written")
    else:
        source = arguments or [DEFAULT_NAME]
    for number, name in enumerate(source, start=1):
        try:
            yield check_name(name)
        except InvalidName as exc:
            raise InvalidName(f"name {number}: {exc}; nothing was written") from None


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
    try:
        url = database_url()
        sessions = open_database(url)
        with explained(url):
            count = write_names(sessions, names_from(args.names, sys.stdin))
    except (DatabaseSetupError, InvalidName) as exc:
        parser.exit(1, f"write-once: error: {exc}\n")
    if count == 0:
        parser.exit(1, "write-once: error: no names on standard input; nothing was written\n")
    print("Wrote marker" if count == 1 else f"Wrote {count} markers")
    return 0


def _batches(items: Iterable[str], size: int) -> Iterator[list[str]]:
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch
