"""read-later: print the stored marker names, oldest first, as a Python list."""

import argparse
import gc
import os
import sys
from collections.abc import Iterable, Sequence
from typing import TextIO

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from .config import database_url
from .db import open_database
from .errors import DatabaseSetupError, explained
from .models.marker import Marker

# rows fetched per round trip; memory stays flat however many markers there are
CHUNK_SIZE = 10_000


def read_names(sessions: sessionmaker[Session], out: TextIO) -> None:
    """Stream every name, in id order, to out as `print(list_of_names)` would show them."""
    with sessions() as session:
        names = session.scalars(
            select(Marker.name).order_by(Marker.id),
            execution_options={"yield_per": CHUNK_SIZE},
        )
        _write_list(names.partitions(), out)


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
        sessions = open_database(url)
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


def _write_list(chunks: Iterable[Sequence[str]], out: TextIO) -> None:
    separator = ""
    out.write("[")
    for chunk in chunks:
        out.write(separator + ", ".join(map(repr, chunk)))
        separator = ", "
    out.write("]\n")
