# dbkit (the template's): `copier update` brings each release's changes here.
"""read-later: print the stored marker names, oldest first, as a Python list."""

import argparse
import sys
from collections.abc import Iterable, Sequence
from contextlib import closing
from typing import TextIO

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ..models.marker import Marker
from . import bulk
from .db import open_database
from .program import run


def main(argv: Sequence[str] | None = None) -> int:
    return run(
        argv,
        name="read-later",
        description="Print the stored marker names, oldest first, as a Python list.",
        work=read,
        could_not_run=1,
    )


def read(args: argparse.Namespace) -> int:
    with open_database(pre_ping=False, explain_errors=True) as sessions:
        read_names(sessions, sys.stdout)
    return 0


def read_names(sessions: sessionmaker[Session], out: TextIO) -> None:
    """Stream every name, in id order, to out as `print(list_of_names)` would show them."""
    query = select(Marker.name).order_by(Marker.id)
    # the rows stop first, whatever stopped the writing: the session cannot end during a query
    with sessions() as session, closing(bulk.scalar_chunks(session, query)) as chunks:
        _write_list(chunks, out)


def _write_list(chunks: Iterable[Sequence[str]], out: TextIO) -> None:
    # nothing on stdout until the first chunk has arrived: a query that fails prints nothing
    chunks = iter(chunks)
    out.write("[" + ", ".join(map(repr, next(chunks, ()))))
    for chunk in chunks:
        out.write(", " + ", ".join(map(repr, chunk)))
    out.write("]\n")
