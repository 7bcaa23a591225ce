# dbkit (the template's): `copier update` brings each release's changes here.
"""Migrations that finish whole or not at all, one process at a time.

migrations/env.py runs every Alembic command, db-migrate's too, through the functions below:
connection_to_migrate() and run_migrations(), or run_migrations_as_sql() for `--sql`.
SQLite needs the most care: it changes a table by copying it, dropping the original and
renaming the copy (Alembic's batch mode). With foreign keys enforced, dropping the original
deletes the rows that refer to it (ON DELETE CASCADE) or fails halfway; so enforcement is off
while migrating, and the rows are checked before the commit instead.
PostgreSQL needs its lock waits bounded: a migration waiting for a table's lock makes every
reader and writer of that table queue behind it, so it gives up soon and tries again later.
"""

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, TextIO

from alembic import context
from alembic.autogenerate.api import AutogenContext
from alembic.config import Config
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, DefaultClause, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.sql.elements import False_, True_
from sqlalchemy.sql.functions import Function

from .config import MIGRATIONS_DIR, migration_url
from .data_loss import refuse_data_loss
from .db import (
    CONNECT_TIMEOUT,
    POSTGRES_LOCK_TIMEOUT,
    POSTGRES_STATEMENT_TIMEOUT,
    SQLITE_BEGIN,
    driver_connection,
    lock_timeout,
    make_engine,
    milliseconds,
    seconds_from_env,
)
from .errors import (
    DatabaseSetupError,
    explained,
    first_line,
    in_memory,
    lock_timed_out,
    name_database,
    sqlite_problem,
)
from .schema import VERSION_TABLE, adoption_advice, lineage_comment

# any number will do, as long as every process that migrates this database uses the same one
POSTGRES_LOCK_KEY = 2_026_112_501

# PostgreSQL, every migration transaction once it holds that lock, in seconds: how long a
# statement may wait for a table's lock (the table's readers and writers queue behind it
# meanwhile), and how long one may run. MIGRATION_LOCK_TIMEOUT and MIGRATION_STATEMENT_TIMEOUT
# override them for a run (an installed copy has no code to edit); a revision that needs a
# longer statement sets its own: op.execute("SET LOCAL statement_timeout = '10min'")
LOCK_TIMEOUT = 2
STATEMENT_TIMEOUT = 60
# tries before giving up on a lock; between them, the sessions that queued get their turn
LOCK_ATTEMPTS = 4

# where wait_for_other_migrations leaves the migrating backend's pid (Connection.info)
BACKEND_PID = "migration_backend_pid"
# the sessions a backend waits for, seen from another connection while it waits
BLOCKERS = text(
    "SELECT pid, application_name, state, now() - xact_start AS open_for "
    "FROM pg_stat_activity WHERE pid = ANY (pg_blocking_pids(:pid)) ORDER BY pid"
)

# env.py's log: alembic.ini shows it with Alembic's own progress lines
log = logging.getLogger("alembic.env")


def url_to_migrate() -> URL:
    """The URL Alembic migrates (migration_url()); a bad one fails in one line."""
    with _command_error():
        url = migration_url()
        with explained(url):
            url.get_dialect()  # an unknown database, which `--sql` would meet in a traceback
        return url


@contextmanager
def connection_to_migrate(given: Any = None) -> Iterator[Connection]:
    """The connection env.py migrates on: the one its caller passed (config.attributes),
    a connection of the engine it passed (or of what connects like one: pytest-alembic's),
    else a new one to url_to_migrate(), closed at the end.
    """
    if isinstance(given, Connection):
        yield given
        return
    if given is not None:
        with given.connect() as connection:
            yield connection
        return
    url = url_to_migrate()
    # a migrated in-memory database is gone as the command exits; `--sql` never connects
    if message := in_memory(url):
        raise CommandError(message)
    # a failure to connect is told in one line, password masked; later errors keep
    # their traceback, which is what a broken migration needs
    with _command_error(), explained(url):
        connection = make_engine(url).connect()
    # which database this is, when DATABASE_URL_DIRECT and DATABASE_URL may name two
    log.info("Database: %s", name_database(url))
    with connection:
        yield connection


def run_migrations(connection: Connection) -> None:
    """Run the migrations env.py configured on connection, whole or not at all.

    In one transaction: ready the connection (migrating()), wait for other migrations, run
    the revisions, record their lineage, check the foreign keys, commit; on PostgreSQL, again
    while a lock wait ends it (retrying_lock_timeouts()). A drop that loses data is refused
    (refuse_data_loss()). Every refusal is Alembic's one-line error (CommandError), and tables
    made without the migrations get the advice to adopt them.
    """
    migration = context.get_context()
    # upgrade, downgrade and stamp are given a destination and write the revision; current,
    # check and history only read, and must not queue behind a writer for SQLite's write lock
    writes = "destination_rev" in migration.opts
    unstamped = False

    def migrate_once() -> None:
        nonlocal unstamped
        with migrating(connection, write_lock=writes), context.begin_transaction():
            wait_for_other_migrations(connection)
            unstamped = not migration.get_current_heads()
            context.run_migrations()
            if writes:
                record_lineage(connection, context.script, migration.get_current_heads())
            check_foreign_keys(connection)

    try:
        with _command_error():
            refuse_data_loss(migration, context.get_x_argument(as_dictionary=True))
            retrying_lock_timeouts(connection, migrate_once)
    except DBAPIError as exc:
        reason = first_line(exc)
        if connection.dialect.name == "sqlite" and "database is locked" in reason:
            # no broken migration, whose traceback would help: another connection writing
            path = Path(connection.engine.url.database or "")
            raise CommandError(sqlite_problem(path, reason)) from None
        # tables made without the migrations (create_all): "table ... already exists"
        if unstamped and (advice := adoption_advice(connection, context.script.get_bases())):
            raise CommandError(advice) from None
        raise


def run_migrations_as_sql() -> None:
    """Write the migrations env.py configured as SQL (`alembic upgrade --sql`), without
    connecting; on PostgreSQL after what a run does first (start_sql()), so that SQL run by
    hand is as bounded."""
    with context.begin_transaction():
        if context.get_context().dialect.name == "postgresql":
            with _command_error():
                for statement in start_sql():
                    context.execute(statement)
        context.run_migrations()


def render_item(kind: str, item: Any, _context: AutogenContext) -> str | Literal[False]:
    """Write server defaults such as func.now() and true() as SQLAlchemy calls, not as SQL.

    Compiled for the database autogenerate ran on, true() is `1` on SQLite, which PostgreSQL
    refuses for a boolean column; as calls, each database gets its own SQL for them.
    """
    if kind == "server_default" and isinstance(item, DefaultClause):
        default = item.arg
        if isinstance(default, (True_, False_)):
            return f"sa.{'true' if isinstance(default, True_) else 'false'}()"
        if (
            isinstance(default, Function)
            and not default.packagenames
            and not default.clauses.clauses
        ):
            return f"sa.func.{default.name}()"
    return False


@contextmanager
def _command_error() -> Iterator[None]:
    # Alembic tells a CommandError in one line; anything else gets a traceback
    try:
        yield
    except DatabaseSetupError as exc:
        raise CommandError(str(exc)) from None


@contextmanager
def migrating(connection: Connection, write_lock: bool = True) -> Iterator[None]:
    """Ready a connection for migrations before its transaction begins; restore it after.

    On SQLite: foreign keys are not enforced (the pragma is ignored inside a transaction),
    and, with write_lock, the transaction begins with the write lock taken, so that
    concurrent upgrades queue (a command that only reads passes False, and never waits).
    On PostgreSQL: the transaction begins without the programs' lock timeout, which would
    cut the wait for other migrations (wait_for_other_migrations sets the migrations' own).
    A connection already in a transaction is used as it is.
    """
    if connection.in_transaction():
        yield
        return
    if connection.dialect.name == "postgresql":
        connection.execution_options(**{POSTGRES_LOCK_TIMEOUT: None})
        try:
            yield
        finally:
            connection.execution_options(
                **{POSTGRES_LOCK_TIMEOUT: lock_timeout(), POSTGRES_STATEMENT_TIMEOUT: None}
            )
        return
    if connection.dialect.name != "sqlite":
        yield
        return
    # straight to the driver: through SQLAlchemy the pragma would begin a transaction
    driver = driver_connection(connection)
    enforced = driver.execute("PRAGMA foreign_keys").fetchone()[0]
    driver.execute("PRAGMA foreign_keys=OFF")
    connection.execution_options(**{SQLITE_BEGIN: "IMMEDIATE" if write_lock else ""})
    try:
        yield
    finally:
        connection.execution_options(**{SQLITE_BEGIN: ""})
        driver.execute(f"PRAGMA foreign_keys={'ON' if enforced else 'OFF'}")


def wait_for_other_migrations(connection: Connection) -> None:
    """Inside the migrations' transaction: hold the lock that other migrating processes wait on.

    The transaction keeps it until it ends, so the next process finds the schema at head. On
    SQLite the transaction took the write lock when it began (migrating()). On PostgreSQL,
    once it holds the lock, the rest of the transaction gets the migrations' timeouts: waiting
    for another migration is no lock to give up on, as that one is bounded in turn.
    """
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": POSTGRES_LOCK_KEY})
        lock, statement = migration_timeouts()
        # the backend's pid, for _Blockers: the one psycopg learnt when it connected is
        # PgBouncer's own when the URL goes through it
        connection.info[BACKEND_PID] = connection.execute(
            text(
                "SELECT pg_backend_pid(), set_config('lock_timeout', :lock, true), "
                "set_config('statement_timeout', :statement, true)"
            ),
            {"lock": str(milliseconds(lock)), "statement": str(milliseconds(statement))},
        ).scalar_one()
        # a revision's autocommit_block() ends this transaction; the one Alembic begins after
        # it gets the same timeouts from db.py (migrating() puts the programs' back at the end)
        connection.execution_options(
            **{POSTGRES_LOCK_TIMEOUT: lock, POSTGRES_STATEMENT_TIMEOUT: statement}
        )


def start_sql() -> list[str]:
    """What wait_for_other_migrations() does on PostgreSQL, as the SQL `alembic upgrade --sql`
    writes first: the lock, then the timeouts (squawk checks them: tests/dbkit/migration_sql.py).
    """
    lock, statement = migration_timeouts()
    return [
        f"SELECT pg_advisory_xact_lock({POSTGRES_LOCK_KEY})",
        f"SET LOCAL lock_timeout = '{milliseconds(lock)}ms'",
        f"SET LOCAL statement_timeout = '{milliseconds(statement)}ms'",
    ]


def migration_timeouts() -> tuple[float, float]:
    """Seconds a migration statement on PostgreSQL may wait for a lock, and may run."""
    return (
        seconds_from_env("MIGRATION_LOCK_TIMEOUT", LOCK_TIMEOUT),
        seconds_from_env("MIGRATION_STATEMENT_TIMEOUT", STATEMENT_TIMEOUT),
    )


def retrying_lock_timeouts(connection: Connection, migrate_once: Callable[[], None]) -> None:
    """Run migrate_once, which migrates in one transaction; again while a lock wait ends it.

    On PostgreSQL a lock timeout rolls the whole transaction back; after a pause, in which
    the sessions queued behind it get their turn, it is tried again, LOCK_ATTEMPTS times in
    all. Then DatabaseSetupError names the sessions it waited for, which a second connection
    watched for while it ran. A transaction the caller began is tried once: it is not ours.
    """
    if connection.dialect.name != "postgresql":
        migrate_once()
        return
    lock, statement = migration_timeouts()
    tries = 1 if connection.in_transaction() else LOCK_ATTEMPTS
    with _Blockers(connection, interval=lock / 4) as blockers:
        for number in range(1, tries + 1):
            try:
                migrate_once()
                return
            except DBAPIError as exc:
                if _statement_timed_out(exc):
                    raise DatabaseSetupError(_ran_too_long(statement)) from None
                if not lock_timed_out(exc):
                    raise
            if number < tries:
                time.sleep(lock / 2 * 2 ** (number - 1))
    raise DatabaseSetupError(_waited_too_long(tries, lock, blockers.seen))


class _Blockers:
    """The sessions a connection waits for, sampled from another connection while it runs.

    The second connection opens only if the migration is still running after one interval.
    """

    def __init__(self, connection: Connection, interval: float) -> None:
        connection.info.pop(BACKEND_PID, None)
        self.info = connection.info  # where each attempt leaves its backend's pid
        self.engine = connection.engine
        self.interval = interval
        self.seen: Sequence[Any] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> "_Blockers":
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=CONNECT_TIMEOUT + 1)

    def _watch(self) -> None:
        if self.stop.wait(self.interval):
            return
        try:
            with self.engine.connect() as watcher:
                # no transaction: pg_stat_activity is read once per transaction
                watcher.execution_options(isolation_level="AUTOCOMMIT")
                while True:
                    pid = self.info.get(BACKEND_PID)
                    if pid and (rows := watcher.execute(BLOCKERS, {"pid": pid}).all()):
                        self.seen = rows
                    if self.stop.wait(self.interval):
                        return
        except SQLAlchemyError:
            return  # the report then says it did not see them


def _waited_too_long(tries: int, lock: float, blockers: Sequence[Any]) -> str:
    if blockers:
        sessions = "; ".join(_session(*row) for row in blockers)
        ends = ", ".join(f"pg_terminate_backend({row[0]})" for row in blockers)
        held = f"held by {sessions}"
        end = f"let it finish or end it (SELECT {ends})"
    else:
        held = "held by a session it could not see (look in pg_locks for locks not granted)"
        end = "end that session or let it finish"
    return (
        f"the migration waited for a lock {tries} time(s), {lock:g} s each, and was rolled "
        f"back, nothing changed: the lock is {held}; {end}, then migrate again "
        "(MIGRATION_LOCK_TIMEOUT sets a longer wait, for which every reader of the table waits)"
    )


def _session(pid: int, application: str | None, state: str | None, open_for: Any) -> str:
    details = [f"application_name {application!r}" if application else "no application_name"]
    if state:
        details.append(state)
    if open_for is not None:
        details.append(f"transaction open {open_for.total_seconds():.0f} s")
    return f"pid {pid} ({', '.join(details)})"


def _ran_too_long(statement: float) -> str:
    return (
        f"a migration statement ran longer than {statement:g} s (MIGRATION_STATEMENT_TIMEOUT) "
        "and the migration was rolled back, nothing changed; a revision that needs longer (a "
        "backfill, VALIDATE CONSTRAINT) sets its own in upgrade(): "
        "op.execute(\"SET LOCAL statement_timeout = '10min'\")"
    )


def _statement_timed_out(exc: DBAPIError) -> bool:
    # 57014 (query_canceled) is also a cancel request; the message tells them apart
    return getattr(exc.orig, "sqlstate", None) == "57014" and "statement timeout" in str(exc.orig)


def record_lineage(connection: Connection, script: ScriptDirectory, heads: Sequence[str]) -> None:
    """Inside the migrations' transaction, on PostgreSQL: write on alembic_version the
    revisions its heads build on, so that the programs of an earlier release, whose scripts
    end below those heads, can tell a database migrated ahead of them (the expand phase of a
    live migration) from another project's (schema.migrated_from)."""
    if connection.dialect.name != "postgresql":
        return
    lineage = "NULL"
    if heads:
        revisions = {
            revision.revision for revision in script.iterate_revisions(tuple(heads), "base")
        }
        lineage = "'" + lineage_comment(set(heads), revisions).replace("'", "''") + "'"
    connection.execute(text(f"COMMENT ON TABLE {VERSION_TABLE} IS {lineage}"))


def check_foreign_keys(connection: Connection) -> None:
    """Before the commit: raise DatabaseSetupError if any row refers to a row that is not there.

    PostgreSQL enforces foreign keys during the migration itself; SQLite is told to check.
    """
    if connection.dialect.name != "sqlite":
        return
    broken: dict[tuple[str, str], int] = {}
    for table, _rowid, parent, _key in connection.exec_driver_sql("PRAGMA foreign_key_check"):
        broken[table, parent] = broken.get((table, parent), 0) + 1
    if broken:
        where = ", ".join(
            f"{count} row(s) of {table} refer to missing rows of {parent}"
            for (table, parent), count in sorted(broken.items())
        )
        raise DatabaseSetupError(
            f"the migrations were rolled back, nothing changed: {where} (PRAGMA foreign_key_check)"
        )


def alembic_config(output_buffer: TextIO | None = None) -> Config:
    """Alembic's configuration without alembic.ini: where the scripts are is all it needs.

    (alembic.ini also sets up logging, which would print Alembic's progress lines on stderr.)
    """
    config = Config(output_buffer=output_buffer)
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config
