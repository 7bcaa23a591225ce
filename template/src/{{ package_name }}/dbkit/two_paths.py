# dbkit (the template's): `copier update` brings each release's changes here.
"""The database opened two independent ways, for verification (verify.py).

One path is the project's own: its engine (make_engine), read-only where the backend allows.
The other is a raw DB-API connection that shares none of the project's code: sqlite3 on the
file opened read-only, or psycopg connected from the URL's parts. A check that reads the same
fact through both catches what re-reading through the programs' own code would not.
"""

import importlib
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import Connection, Engine
from sqlalchemy.engine import URL
from sqlalchemy.exc import SQLAlchemyError

from .db import (
    POSTGRES_WITH_BEGIN,
    existing_sqlite_file,
    lock_timeout,
    make_engine,
    postgresql_connect_args,
    set_local,
)
from .errors import DatabaseSetupError, cannot_use, explained, first_line, sqlite_problem
from .schema_diff import OWNED_SEQUENCES

# what the engine's path exports for the raw path to import (share_snapshot), with what
# reflection needs read in the same round trip: the schema unqualified names resolve to, and
# the sequences columns own (schema_diff.py)
EXPORT_SNAPSHOT = f"SELECT pg_export_snapshot(), current_schema(), ({OWNED_SEQUENCES})"


@dataclass
class Database:
    """Two independent ways into one database: the project's engine and a raw connection."""

    url: URL
    engine: Engine
    connection: Connection
    raw: Any  # a DB-API connection: sqlite3's or psycopg's
    driver_errors: tuple[type[Exception], ...]
    # PostgreSQL: both paths are in transactions that see one snapshot (share_snapshot)
    shared: bool = False
    # PostgreSQL: schema_diff.OWNED_SEQUENCES's answer, read in that snapshot
    owned_sequences: dict[str, str] | None = None

    @property
    def backend(self) -> str:
        return self.url.get_backend_name()

    def rollback(self) -> None:
        # a failed statement aborts a PostgreSQL transaction; the next check starts clean
        self.connection.rollback()
        self.raw.rollback()
        self.shared = False

    def data_version(self) -> int | None:
        """SQLite's count of commits by other connections; None on PostgreSQL (snapshots)."""
        if self.backend != "sqlite":
            return None
        (version,) = self.raw.execute("PRAGMA data_version").fetchone()
        return int(version)

    def versions(self) -> tuple[str, str]:
        """The driver's name and version, and the server's."""
        if self.backend == "sqlite":
            return f"sqlite3 {sqlite3.sqlite_version}", f"SQLite {sqlite3.sqlite_version}"
        psycopg = importlib.import_module("psycopg")
        # what SHOW server_version says, which the server sent as the connection opened
        server = self.raw.info.parameter_status("server_version")
        return f"psycopg {psycopg.__version__}", f"PostgreSQL {server}"

    def share_snapshot(self) -> None:
        """Start new transactions on both paths that see the same committed rows.

        On PostgreSQL the raw connection imports the snapshot the engine's connection
        exports, so a writer committing in between cannot make the two paths disagree.
        SQLite has no such thing; verify.py's _check_data watches its data_version instead.
        On PostgreSQL the two transactions, once begun, last until rollback(): every check
        reads the same snapshot, and sharing it again costs nothing.
        """
        if self.shared:
            return
        self.rollback()
        if self.backend == "sqlite":
            return
        # exported as the transaction begins, in its round trip, with the schema unqualified
        # names resolve to (db.py's read_default_schema) and the sequences columns own, which
        # reflection needs
        self.connection.execution_options(**{POSTGRES_WITH_BEGIN: EXPORT_SNAPSHOT})
        self.connection.begin()
        snapshot, schema, self.owned_sequences = self.connection.info.pop(POSTGRES_WITH_BEGIN)
        if self.connection.dialect.default_schema_name is None:
            self.connection.dialect.default_schema_name = schema
        sql = importlib.import_module("psycopg.sql")  # utility statements take no parameters
        # one round trip (the raw connection is in autocommit: psycopg's BEGIN would be one
        # more); the engine's transactions bound their lock waits (db.py), the raw path's too
        begin = sql.SQL(
            "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; SET TRANSACTION SNAPSHOT {}; {}"
        ).format(sql.Literal(snapshot), sql.SQL(set_local("lock_timeout", lock_timeout())))
        self.raw.execute(begin)
        self.shared = True


@contextmanager
def connect(url: URL) -> Iterator[Database]:
    """Open both paths, read-only where the backend allows; DatabaseSetupError if either fails."""
    with explained(url):
        if (path := existing_sqlite_file(url)) is not None:
            try:
                raw = _raw_sqlite(path)
            except sqlite3.Error as exc:  # the driver's own, which explained() does not see
                raise DatabaseSetupError(sqlite_problem(path, first_line(exc))) from None
            errors: tuple[type[Exception], ...] = (sqlite3.Error,)
            engine = make_engine(_read_only_sqlite_url(url, path))
        else:
            engine = make_engine(url)
            raw, errors = _raw_postgresql(url)
        try:
            connection = engine.connect()
            if url.get_backend_name() != "sqlite":
                # one snapshot per transaction, which share_snapshot() hands to the raw path
                connection = connection.execution_options(
                    isolation_level="REPEATABLE READ", postgresql_readonly=True
                )
        except BaseException:
            raw.close()
            engine.dispose()
            raise
    try:
        database = Database(url, engine, connection, raw, (SQLAlchemyError, *errors))
        with explained(url):
            # at once, so that every check reads the one snapshot (PostgreSQL)
            database.share_snapshot()
        yield database
    finally:
        if url.get_backend_name() != "sqlite":
            # both transactions only read: closing the connections ends them on the server,
            # without a ROLLBACK's round trip (as raw.close() does for the raw path)
            connection.invalidate()
        connection.close()
        raw.close()
        engine.dispose()


def _read_only_sqlite_url(url: URL, path: Path) -> URL:
    return url.set(database=f"file:{quote(str(path))}?mode=ro", query={"uri": "true"})


def _raw_sqlite(path: Path) -> sqlite3.Connection:
    # read-only: verification never writes; isolation_level=None keeps sqlite3 from
    # opening transactions of its own
    return sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True, isolation_level=None)


def _raw_postgresql(url: URL) -> tuple[Any, tuple[type[Exception], ...]]:
    psycopg = importlib.import_module("psycopg")  # the postgres extra; explained() says so
    # as SQLAlchemy merges them for the engine: the URL's parts, its query (host=, password=
    # and the like override the parts), then the project's defaults where the query is silent
    parts = {"host": url.host, "port": url.port, "user": url.username, "dbname": url.database}
    options = {key: value for key, value in parts.items() if value is not None}
    if url.password is not None:
        options["password"] = str(url.password)
    options.update((key, value) for key, value in url.query.items() if isinstance(value, str))
    options.update(postgresql_connect_args(url))
    try:
        raw = psycopg.connect(**options)
    except psycopg.Error as exc:
        raise DatabaseSetupError(cannot_use(url, exc)) from None
    # share_snapshot() begins its transactions, read-only, in the isolation level a snapshot
    # import needs (REPEATABLE READ), with the import in the same round trip
    raw.autocommit = True
    return raw, (psycopg.Error,)
