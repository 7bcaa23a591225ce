# dbkit (the template's): `copier update` brings each release's changes here.
"""write-once: store marker names in one transaction, then exit."""

import argparse
import io
import sys
from collections.abc import Iterable, Iterator, Sequence
from itertools import islice

from sqlalchemy.orm import Session, sessionmaker

from ..models.marker import InvalidName, Marker, check_names
from . import bulk
from .db import CHUNK_SIZE, open_database
from .program import CannotRun, report, run, uninterrupted

DEFAULT_NAME = "persistent-check"
BATCH_SIZE = CHUNK_SIZE  # names checked, then sent to the database, at a time
MARKERS = Marker.metadata.tables[Marker.__tablename__]


def main(argv: Sequence[str] | None = None) -> int:
    return run(
        argv,
        name="write-once",
        description="Store marker names in the database in one transaction, then exit.",
        arguments=add_arguments,
        work=write,
        could_not_run=1,
        interrupted="nothing was written",  # Ctrl-C inside the transaction rolls it back
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help=f"names to store (default: {DEFAULT_NAME}); '-' reads one name per line from stdin",
    )


def write(args: argparse.Namespace) -> int:
    if isinstance(sys.stdin, io.TextIOWrapper):
        # bytes that are not UTF-8 become lone surrogates, which check_names refuses by number
        sys.stdin.reconfigure(errors="surrogateescape")
    try:
        with open_database(pre_ping=False, explain_errors=True) as sessions:
            count = write_names(sessions, names_from(args.names, sys.stdin))
    except InvalidName as exc:
        raise CannotRun(f"{exc}; nothing was written") from None
    if count == 0:
        raise CannotRun("no names on standard input; nothing was written")
    report("Wrote marker" if count == 1 else f"Wrote {count} markers")
    return 0


def write_names(sessions: sessionmaker[Session], names: Iterable[str]) -> int:
    """Check and insert every name in one transaction: all of them are stored, or none is."""
    count = 0
    with sessions() as session:  # closed uncommitted (an error, Ctrl-C), it rolls back
        with bulk.inserter(session.connection(), MARKERS, "name") as insert_names:
            for batch in _batches(names, BATCH_SIZE):
                check_names(batch, first_number=count + 1)
                insert_names(batch)
                count += len(batch)
        with uninterrupted():
            session.commit()
    return count


def names_from(arguments: Sequence[str], stdin: Iterable[str]) -> Iterable[str]:
    """The names to write: the arguments, the default name, or one per line of stdin for '-'."""
    if list(arguments) == ["-"]:
        return _lines(stdin)
    if "-" in arguments:
        raise InvalidName("'-' (read standard input) must be the only name")
    return arguments or [DEFAULT_NAME]


def _lines(stdin: Iterable[str]) -> Iterator[str]:
    # one name per line, without its line ending; a chunk at a time, which is faster
    lines = iter(stdin)
    while chunk := list(islice(lines, BATCH_SIZE)):
        yield from [line.rstrip("\r\n") for line in chunk]


def _batches(items: Iterable[str], size: int) -> Iterator[list[str]]:
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch
