# dbkit (the template's): `copier update` brings each release's changes here.
"""The engine and session factory: every connection the project makes starts here."""

import math
import os
import sqlite3
import time
import warnings
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.dialects import registry
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg
from sqlalchemy.engine import URL
from sqlalchemy.engine.interfaces import IsolationLevel
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from .config import database_url
from .errors import (
    DatabaseSetupError,
    explained,
    in_memory,
    missing_folder,
    name_database,
    unusable_file,
)
from .schema import VERSION_TABLE, check_at_head

# seconds to wait for a connection (PostgreSQL)
CONNECT_TIMEOUT = 5
# rows per round trip, read (every streamed read) or written (write-once's batches): memory
# stays flat however many rows there are
CHUNK_SIZE = 10_000
# PostgreSQL's timeouts are milliseconds in an int: 2147483.647 s at most
MAX_TIMEOUT = 2_147_483
# seconds a program waits for a lock another session holds, then gives up with nothing done:
# SQLite's busy timeout, PostgreSQL's lock_timeout; DATABASE_LOCK_TIMEOUT overrides it
LOCK_TIMEOUT = 30
# the execution option that makes a SQLite transaction begin with the write lock taken
SQLITE_BEGIN = "sqlite_begin"
# the execution option that sets a PostgreSQL transaction's lock_timeout, in seconds; None
# sends none (migrations set theirs once they hold their advisory lock: see migrate.py)
POSTGRES_LOCK_TIMEOUT = "postgres_lock_timeout"
# the same for its statement_timeout; None (the default) sends none
POSTGRES_STATEMENT_TIMEOUT = "postgres_statement_timeout"
# the execution option that adds a query to a PostgreSQL transaction's BEGIN, in the same
# round trip; its first row is left in connection.info under the same name
POSTGRES_WITH_BEGIN = "postgres_with_begin"


# the driver name make_engine gives PostgreSQL URLs: psycopg, through _Psycopg below
DRIVER = "psycopg_at_connect"
# where a shared_reflection() block keeps the dialect's answers, in connection.info
SHARED_REFLECTION = "shared_reflection"


class _Psycopg(PGDialect_psycopg):
    """SQLAlchemy's psycopg dialect, minus the 6 round trips of its first connection.

    On its first connection SQLAlchemy asks the server, in a transaction of their own, for its
    version, the current schema, the default isolation level and standard_conforming_strings:
    on a remote database that is as long again as the rest of write-once. The server sent
    its version and standard_conforming_strings as the connection opened (psycopg's
    conn.info). The current schema is read where reflection needs it (read_default_schema);
    the isolation level is never read: a connection going back to the pool gets the server's
    default back, so default_transaction_isolation is honoured as before.

    _get_server_version_info, _set_backslash_escapes and _get_default_schema_name are
    SQLAlchemy's (the second is documented there as a hook for dialects to override), hence
    the range pinned in pyproject.toml; the template's tests/test_roundtrips.py fails if they
    change.

    The psycopg connection stays in autocommit, so that a transaction's BEGIN and its
    SET LOCALs go in one round trip (make_engine's begin listener sends them); COMMIT and
    ROLLBACK are psycopg's, which send them whenever a transaction is open.
    """

    supports_statement_cache = True

    def _get_server_version_info(self, connection: Any) -> tuple[int, ...]:
        # 150004 is 15.4; 90624 is 9.6.24
        number = connection.connection.dbapi_connection.info.server_version
        if number >= 100000:
            return (number // 10000, number % 10000)
        return (number // 10000, number // 100 % 100, number % 100)

    def _set_backslash_escapes(self, connection: Any) -> None:
        info = connection.connection.dbapi_connection.info
        self._backslash_escapes = info.parameter_status("standard_conforming_strings") == "off"

    def _get_default_schema_name(self, connection: Any) -> Any:
        return None  # read_default_schema() reads it, once, where reflection needs it

    def get_default_isolation_level(self, dbapi_conn: Any) -> IsolationLevel:
        # what Connection.default_isolation_level reports; reset_isolation_level does not use it
        return "READ COMMITTED"

    def set_isolation_level(self, dbapi_connection: Any, level: str) -> None:
        # the driver stays in autocommit, and make_engine's begin listener sends the BEGIN,
        # with this level, and the transaction's settings in the same round trip; AUTOCOMMIT
        # is no BEGIN at all
        dbapi_connection.autocommit = True
        levels = self.loaded_dbapi.IsolationLevel
        named = None if level == "AUTOCOMMIT" else levels[level.replace(" ", "_")]
        dbapi_connection.isolation_level = named

    def reset_isolation_level(self, dbapi_conn: Any) -> None:
        # None: a plain BEGIN, at the server's default isolation level (not one read at connect)
        dbapi_conn.autocommit = True
        dbapi_conn.isolation_level = None

    # the reflection questions that db-evidence's snapshot and its MetaData.reflect both ask:
    # within shared_reflection(), each is read once (the Dialect interface's methods)

    def get_table_names(self, connection: Any, schema: Any = None, **kw: Any) -> Any:
        return _shared(connection, super().get_table_names, schema=schema, **kw)

    def get_multi_columns(self, connection: Any, *args: Any, **kw: Any) -> Any:
        return _shared(connection, super().get_multi_columns, *args, **kw)

    def get_multi_pk_constraint(self, connection: Any, *args: Any, **kw: Any) -> Any:
        return _shared(connection, super().get_multi_pk_constraint, *args, **kw)

    def get_multi_foreign_keys(self, connection: Any, *args: Any, **kw: Any) -> Any:
        return _shared(connection, super().get_multi_foreign_keys, *args, **kw)

    def get_multi_unique_constraints(self, connection: Any, *args: Any, **kw: Any) -> Any:
        return _shared(connection, super().get_multi_unique_constraints, *args, **kw)

    def get_multi_indexes(self, connection: Any, *args: Any, **kw: Any) -> Any:
        return _shared(connection, super().get_multi_indexes, *args, **kw)

    def get_multi_check_constraints(self, connection: Any, *args: Any, **kw: Any) -> Any:
        return _shared(connection, super().get_multi_check_constraints, *args, **kw)


registry.register(f"postgresql.{DRIVER}", __name__, "_Psycopg")


@contextmanager
def shared_reflection(connection: Connection) -> Iterator[None]:
    """Within the block, each reflection question asked of connection's dialect (the tables,
    and their columns, keys, indexes and constraints, for the same tables) is read once, and
    asked again, answered from that read: db-evidence's schema snapshot and its MetaData.reflect
    for schema.sql ask the same, a round trip each on a remote database.

    For reads in one transaction that changes nothing meanwhile (db-evidence's, read-only).
    psycopg URLs only (_Psycopg); with another driver every question is read as it is asked.
    """
    connection.info[SHARED_REFLECTION] = {}
    try:
        yield
    finally:
        connection.info.pop(SHARED_REFLECTION, None)


def _shared(connection: Any, read: Any, *args: Any, **kw: Any) -> Any:
    """read(connection, ...), or within shared_reflection() its answer to the same question
    read before: the same tables (in any order), schema, kind and scope."""
    answers = connection.info.get(SHARED_REFLECTION)
    if answers is None or args:  # the Inspector asks by keyword; anything else is read
        return read(connection, *args, **kw)
    asked = {key: value for key, value in kw.items() if key not in ("info_cache", "unreflectable")}
    if isinstance(names := asked.get("filter_names"), (list, tuple, set)):
        asked["filter_names"] = frozenset(names)
    try:
        key = (read.__name__, *sorted(asked.items(), key=lambda item: item[0]))
        answer = answers.get(key)
    except TypeError:  # an unhashable option: not one the shared readers ask with
        return read(connection, **kw)
    if answer is None:
        answer = answers[key] = list(read(connection, **kw))
    return list(answer)


def read_default_schema(connection: Connection) -> None:
    """Read the schema unqualified names resolve to (current_schema()), once per engine, for
    reflection: Alembic's comparison and the inspector tell tables in it from others by it."""
    dialect = connection.dialect
    if dialect.name == "postgresql" and dialect.default_schema_name is None:
        dialect.default_schema_name = connection.exec_driver_sql("SELECT current_schema()").scalar()


def make_engine(url: URL, pre_ping: bool = True) -> Engine:
    """An engine for url, tuned for its backend; creates nothing in the database.

    pre_ping=False is for a one-shot process, whose pooled connection is never idle long
    enough to go stale: a ping would be one more round trip before every transaction.
    """
    seconds = lock_timeout()
    if url.get_backend_name() == "sqlite":
        engine = create_engine(url, connect_args={"timeout": seconds})
        # a read-only connection (db-verify's) reads the file in the journal mode it has: it
        # cannot switch it, and a file the lesson's scripts made is not in WAL
        read_only = "mode=ro" in (url.database or "")

        def configure_sqlite(dbapi_connection: Any, _record: Any) -> None:
            _configure_sqlite(dbapi_connection, seconds, read_only)

        event.listen(engine, "connect", configure_sqlite)
        event.listen(engine, "begin", _begin_sqlite)
        return engine
    # psycopg, as config.py makes every postgres:// URL; one that names another driver keeps it
    ours = url.drivername == "postgresql+psycopg"
    engine = create_engine(
        url.set(drivername=f"postgresql+{DRIVER}") if ours else url,
        # short-lived processes: a small pool, checked before use (Neon suspends idle computes)
        pool_size=1,
        max_overflow=4,
        pool_pre_ping=pre_ping,
        pool_recycle=300,
        # the project has no hstore column: looking the type up costs three statements per connect
        use_native_hstore=False,
        # the transactions begin in begin_postgresql below, not in psycopg
        connect_args={**postgresql_connect_args(url), **({"autocommit": True} if ours else {})},
    )

    def begin_postgresql(connection: Connection) -> None:
        # SET LOCAL: a session's SET would stay behind on a server connection that PgBouncer
        # in transaction mode (Neon's pooler) then lends to others; a startup option it refuses
        options = connection.get_execution_options()
        # in autocommit there is no transaction (read-later and write-once begin their own)
        if options.get("isolation_level") == "AUTOCOMMIT":
            return
        statements = []
        if (bound := options.get(POSTGRES_LOCK_TIMEOUT, seconds)) is not None:
            statements.append(set_local("lock_timeout", bound))
        if (limit := options.get(POSTGRES_STATEMENT_TIMEOUT)) is not None:
            statements.append(set_local("statement_timeout", limit))
        if not ours:  # another driver begins the transaction itself
            for statement in statements:
                connection.exec_driver_sql(statement)
            return
        # the driver is in autocommit (_Psycopg): BEGIN and the settings go in one round
        # trip, where psycopg would send its BEGIN in one and each setting in another
        driver = driver_connection(connection)
        statements.insert(0, begin_statement(driver))
        if (query := options.get(POSTGRES_WITH_BEGIN)) is not None:
            statements.append(query)
        sql = "; ".join(statements)
        with driver_errors(connection, sql):
            cursor = driver.execute(sql)
            if query is not None:
                while cursor.nextset():  # to the last statement's rows: the query's
                    pass
                connection.info[POSTGRES_WITH_BEGIN] = cursor.fetchone()

    event.listen(engine, "begin", begin_postgresql)
    # the engine's URL is the one it was given: messages name it, and compare it with others
    engine.url = url
    return engine


def begin_statement(driver: Any) -> str:
    """The BEGIN of a transaction with a psycopg connection's isolation level and access mode,
    as psycopg would begin it; none set: the server's defaults."""
    parts = ["BEGIN"]
    if driver.isolation_level is not None:
        parts.append(f"ISOLATION LEVEL {driver.isolation_level.name.replace('_', ' ')}")
    if driver.read_only is not None:
        parts.append("READ ONLY" if driver.read_only else "READ WRITE")
    if driver.deferrable is not None:
        parts.append("DEFERRABLE" if driver.deferrable else "NOT DEFERRABLE")
    return " ".join(parts)


def lock_timeout() -> float:
    """Seconds a program waits for another session's lock: DATABASE_LOCK_TIMEOUT, else 30."""
    return seconds_from_env("DATABASE_LOCK_TIMEOUT", LOCK_TIMEOUT)


def seconds_from_env(variable: str, default: float) -> float:
    """A number of seconds from the environment, else default; DatabaseSetupError if not one."""
    raw = os.environ.get(variable, "").strip()
    if not raw:
        return default
    try:
        seconds = float(raw)
    except ValueError:
        seconds = math.nan
    if not 0 < seconds < math.inf:
        raise DatabaseSetupError(
            f"{variable} must be a number of seconds above 0, not {raw!r}; "
            f"unset it for the default ({default:g})"
        )
    if seconds > MAX_TIMEOUT:
        # SQLite's busy timeout would take more, but one setting means the same everywhere
        raise DatabaseSetupError(
            f"{variable} must be at most {MAX_TIMEOUT} seconds (PostgreSQL's limit, about 24 "
            f"days), not {seconds:g}; unset it for the default ({default:g})"
        )
    return seconds


def set_local(timeout: str, seconds: float) -> str:
    """The statement that sets a timeout (lock_timeout, statement_timeout) for the rest of a
    PostgreSQL transaction."""
    return f"SET LOCAL {timeout} = {milliseconds(seconds)}"


def milliseconds(seconds: float) -> int:
    """PostgreSQL's unit for its timeouts; at least 1, as 0 would mean no timeout at all."""
    return max(1, round(seconds * 1000))


def postgresql_connect_args(url: URL) -> dict[str, Any]:
    """psycopg's settings: the project's defaults, except where the URL's query sets its own.

    The URL wins: it is where a user tunes a connection for their server (a longer
    connect_timeout for a compute that wakes up slowly), and every path reads the same URL.
    """
    defaults: dict[str, Any] = {
        "connect_timeout": CONNECT_TIMEOUT,
        # PgBouncer in transaction mode (Neon's -pooler host) cannot keep prepared statements
        "prepare_threshold": None,
    }
    args = {key: value for key, value in defaults.items() if key not in url.query}
    if isinstance(threshold := url.query.get("prepare_threshold"), str):
        # psycopg takes it as a keyword, not from the connection string: an int, or None (off)
        if threshold.lower() not in ("", "none") and not threshold.isdigit():
            raise DatabaseSetupError(
                f"prepare_threshold={threshold} in the URL is not a number or None"
            )
        args["prepare_threshold"] = int(threshold) if threshold.isdigit() else None
    return args


class Database:
    """What open_database() returns: `with open_database() as sessions:` gives the session
    factory and closes the engine's connections when the block ends.

    Calling it as a session factory without `with` (`sessions = open_database()`, the form
    before 0.2.0) still works until 0.3.0, with a DeprecationWarning.
    """

    def __init__(self, url: URL, engine: Engine, explain_errors: bool) -> None:
        self.url = url
        self.engine = engine
        self.sessions = sessionmaker(engine)
        self._explain_errors = explain_errors
        self._explaining: AbstractContextManager[None] | None = None

    def __enter__(self) -> sessionmaker[Session]:
        if self._explain_errors:
            self._explaining = explained(self.url)
            self._explaining.__enter__()
        return self.sessions

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool | None:
        try:
            if self._explaining is not None:
                return self._explaining.__exit__(kind, error, traceback)
            return None
        finally:
            self.engine.dispose()

    def __call__(self, **options: Any) -> Session:
        _warn_unclosed()
        return self.sessions(**options)

    def begin(self) -> AbstractContextManager[Session]:
        _warn_unclosed()
        return self.sessions.begin()


def _warn_unclosed() -> None:
    warnings.warn(
        "open_database() is a context manager since 0.2.0: write `with open_database() as "
        "sessions:` (the engine's connections are then closed when the block ends); "
        "`sessions = open_database()` stops working in 0.3.0",
        DeprecationWarning,
        stacklevel=3,
    )


def open_database(
    url: URL | None = None,
    pre_ping: bool = True,
    *,
    explain_errors: bool = False,
    check_postgresql: bool = True,
) -> Database:
    """Sessions on a database the migrations have brought to head, or DatabaseSetupError
    saying what to do: `with open_database() as sessions:`.

    What fails inside the block reaches the caller as itself (an IntegrityError for a
    duplicate row); explain_errors=True, for a command's work, turns a database error there
    into a DatabaseSetupError in one line too. pre_ping: see make_engine; the programs, which
    exit within the second, pass False. check_postgresql=False: on PostgreSQL the caller
    checks, in its transaction's first round trip (first_round_trip), rather than in a round
    trip of its own here.
    """
    url = url or database_url()
    with explained(url):
        engine = make_engine(url, pre_ping)
        existing_sqlite_file(url)
        try:
            if not check_postgresql and url.get_backend_name() == "postgresql":
                return Database(url, engine, explain_errors)
            with engine.connect() as connection:
                if connection.dialect.name == "postgresql":
                    # the check is one statement: BEGIN and ROLLBACK around it would be two
                    # more round trips (SQLite keeps its own BEGIN, which _begin_sqlite sends)
                    connection.execution_options(isolation_level="AUTOCOMMIT")
                check_at_head(connection)
        except BaseException:
            engine.dispose()
            raise
    return Database(url, engine, explain_errors)


@contextmanager
def first_round_trip(connection: Connection, begin: str = "BEGIN") -> Iterator[Any]:
    """PostgreSQL: one round trip that begins the transaction, bounds its lock waits, reads
    the revision and sends what the block queues on the psycopg connection it is given (a
    pipeline: the results are there once the block has ended); then check_at_head's
    verdict, before the caller uses them. `with first_round_trip(connection) as driver:`

    connection: in AUTOCOMMIT, so that the transaction begins here, with begin, in the same
    round trip; COMMIT or ROLLBACK ends it as any other. Where the check fails, or a
    statement does, the connection is rolled back and check_at_head reads what it needs to
    say why, as open_database would.
    """
    driver = driver_connection(connection)
    revision = driver.cursor()
    dbapi = connection.dialect.loaded_dbapi
    try:
        with driver.pipeline():
            driver.execute(begin)
            driver.execute(set_local("lock_timeout", lock_timeout()))
            revision.execute(f"SELECT version_num FROM {VERSION_TABLE}")
            yield driver
    except dbapi.Error as exc:
        driver.rollback()
        check_at_head(connection)  # its message, if the database is not at head
        first = "(the transaction's first statements)"
        raise DBAPIError.instance(first, None, exc, dbapi.Error) from None
    check_at_head(connection, current={version for (version,) in revision.fetchall()})


def driver_connection(connection: Connection) -> Any:
    """The DB-API connection under a SQLAlchemy one (sqlite3's or psycopg's), for what only
    the driver does: COPY, a streamed read, a pragma outside a transaction."""
    driver = connection.connection.driver_connection
    assert driver is not None  # a checked-out connection always has one
    return driver


@contextmanager
def driver_errors(connection: Connection, statement: str) -> Iterator[None]:
    """Errors of the driver's own cursor (COPY, streaming), wrapped as SQLAlchemy wraps its
    own, so that explained() tells them in one line."""
    dbapi = connection.dialect.loaded_dbapi
    try:
        yield
    except dbapi.Error as exc:
        raise DBAPIError.instance(statement, None, exc, dbapi.Error) from None


def existing_sqlite_file(url: URL) -> Path | None:
    """The file a SQLite URL names, which must exist; None for another backend.

    DatabaseSetupError, saying what to do, for an in-memory database, a missing folder, a
    folder or unreadable file in its place, or no file yet: connecting would create an empty
    one (opening it read-only would fail without saying why), and the schema belongs to
    `alembic upgrade head`.
    """
    if message := in_memory(url):
        raise DatabaseSetupError(message)
    if url.get_backend_name() != "sqlite" or not url.database:
        return None
    path = Path(url.database)
    if message := missing_folder(path) or unusable_file(path):
        raise DatabaseSetupError(message)
    if not path.exists():
        raise DatabaseSetupError(
            f"no database at {path} yet; run `alembic upgrade head` to create it"
        )
    if path.stat().st_size == 0:
        # what `touch app.db` leaves; a read-only connection (db-verify's) would take the file
        # for one it may not write, and fail on the journal mode as on a read-only file
        raise DatabaseSetupError(
            f"the database ({name_database(url)}) has no schema yet; run `alembic upgrade head`"
        )
    return path


def _configure_sqlite(dbapi_connection: Any, busy_timeout: float, read_only: bool) -> None:
    # the sqlite3 module would begin transactions itself, late and never before DDL, which
    # leaves a schema change half-applied when it fails; _begin_sqlite begins them instead
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    # WAL lets readers work while a writer commits; it persists in the file once set
    if not read_only:
        _use_wal(cursor, busy_timeout)
    cursor.close()


def _use_wal(cursor: Any, busy_timeout: float) -> None:
    # Switching a file to WAL takes it whole. Connections that try at once (replicas starting
    # together on a new file) each hold the shared lock the others wait on, so SQLite answers
    # all but one "database is locked" at once rather than after the busy timeout; the one
    # switches the file, and the others, trying again, find it switched.
    deadline = time.monotonic() + busy_timeout
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _begin_sqlite(connection: Connection) -> None:
    # every statement of a transaction inside it, DDL included, and SAVEPOINT works; a
    # connection with execution option sqlite_begin="IMMEDIATE" takes the write lock up front
    mode = connection.get_execution_options().get(SQLITE_BEGIN, "")
    connection.exec_driver_sql(f"BEGIN {mode}".rstrip())
