# dbkit (the template's): `copier update` brings each release's changes here.
"""Migrations that finish whole or not at all, one process at a time.

migrations/env.py runs every Alembic command, db-migrate's too, through the functions below:
connection_to_migrate() and run_migrations(), or run_migrations_as_sql() for `--sql`.
SQLite needs the most care: it changes a table by copying it, dropping the original and
renaming the copy (Alembic's batch mode). With foreign keys enforced, dropping the original
deletes the rows that refer to it (ON DELETE CASCADE) or fails halfway; so enforcement is off
while migrating, and the rows are checked before the commit instead.
PostgreSQL needs its lock waits bounded: a migration waiting for a table's lock makes every
reader and writer of that table queue behind it, so it gives up soon and tries again later;
and every wait, for another migration's lock too, ends by one deadline (wait_budget()).
"""

import logging
import re
import threading
import time
import weakref
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Literal, TextIO

from alembic import context
from alembic.autogenerate.api import AutogenContext
from alembic.config import Config
from alembic.runtime.migration import MigrationContext, MigrationInfo
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, DefaultClause, event, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.sql.elements import False_, True_
from sqlalchemy.sql.functions import Function

from .config import MIGRATIONS_DIR, migration_url
from .data_loss import refuse_data_loss
from .db import (
    CONNECT_TIMEOUT,
    MAX_TIMEOUT,
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
    without_url_passwords,
)
from .schema import (
    VERSION_TABLE,
    adoption_advice,
    database_revisions,
    lineage_comment,
    migrated_from,
)

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
# where wait_for_other_migrations leaves the migrating backend's pid (_state())
BACKEND_PID = "migration_backend_pid"
# what a migration keeps about its connection, apart from Connection.info, which an
# interrupted statement leaves unreadable (PendingRollbackError)
_STATES: "weakref.WeakKeyDictionary[Connection, dict[str, Any]]" = weakref.WeakKeyDictionary()


def _state(connection: Connection) -> dict[str, Any]:
    return _STATES.setdefault(connection, {})


# _state(): the time.monotonic() by which every wait of this migration ends
DEADLINE = "migration_deadline"
# _state(): the heads after each revision applied (version_applied()), and whether a
# revision's autocommit_block() committed during the run (what a rollback then leaves)
APPLIED = "migration_applied_heads"
COMMITTED_EARLY = "migration_committed_early"
# _state(): the run's ScriptDirectory while its revisions run (a commit then is a block's)
MIGRATING = "migration_running_revisions"
# _state(): an autocommit_block() set the session's timeouts (reset at the end)
SESSION_TIMEOUTS = "migration_session_timeouts"
# did this transaction write anything (PostgreSQL 13 on)?
WROTE = "SELECT pg_current_xact_id_if_assigned() IS NOT NULL"
# statements that change nothing when an autocommit_block() runs them
_READ_ONLY = re.compile(r"\s*(SELECT|SET|RESET|SHOW)\b", re.IGNORECASE)
# the sessions a backend waits for, seen from another connection while it waits
BLOCKERS = text(
    "SELECT pid, application_name, state, now() - xact_start AS open_for "
    "FROM pg_stat_activity WHERE pid = ANY (pg_blocking_pids(:pid)) ORDER BY pid"
)
# the sessions holding the migrations' advisory lock (a bigint key: classid the high half,
# objid the low, objsubid 1), and the sessions each waits for in turn
LOCK_HOLDERS = text(
    "SELECT a.pid, a.application_name, a.state, now() - a.xact_start AS open_for, "
    "pg_blocking_pids(a.pid) AS waits_for "
    "FROM pg_locks AS l JOIN pg_stat_activity AS a ON a.pid = l.pid "
    "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
    "AND l.classid::bigint = :high AND l.objid::bigint = :low ORDER BY a.pid"
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
    # env.py passes version_applied(), which tells what changed without reading
    # alembic_version again; an env.py from before it did not
    told = "on_version_apply" in migration.opts
    _state(connection).pop(COMMITTED_EARLY, None)

    def migrate_once() -> None:
        _state(connection).pop(APPLIED, None)
        with migrating(connection, write_lock=writes), context.begin_transaction():
            wait_for_other_migrations(connection)
            # a commit from now on is an autocommit_block's: it records the lineage of what
            # it commits (_committed), for this run's scripts
            _state(connection)[MIGRATING] = context.script
            try:
                context.run_migrations()
            except CommandError:
                if not _ahead_of_us(connection, migration):
                    raise
                return
            finally:
                _state(connection).pop(MIGRATING, None)
            if writes and (heads := _heads_now(connection, migration, told)) is not None:
                record_lineage(connection, context.script, heads)
            check_foreign_keys(connection)

    try:
        with _command_error(), _interrupts_told(connection):
            refuse_data_loss(migration, context.get_x_argument(as_dictionary=True))
            retrying_lock_timeouts(connection, migrate_once)
    except DBAPIError as exc:
        reason = first_line(exc)
        if connection.dialect.name == "sqlite" and "database is locked" in reason:
            # no broken migration, whose traceback would help: another connection writing
            path = Path(connection.engine.url.database or "")
            raise CommandError(sqlite_problem(path, reason)) from None
        # tables made without the migrations (create_all): "table ... already exists"
        if (advice := _adoption_advice(connection)) is not None:
            raise CommandError(advice) from None
        if _state(connection).get(COMMITTED_EARLY):
            raise CommandError(
                f"{reason}; {rolled_back(connection)}; fix it, then migrate again"
            ) from None
        raise


def version_applied(
    ctx: MigrationContext, step: MigrationInfo, heads: Collection[Any], run_args: Mapping[str, Any]
) -> None:
    """env.py's on_version_apply: the heads after each revision applied (or stamped), which
    are what record_lineage() writes; none applied, nothing to write."""
    if ctx.as_sql:
        _OFFLINE_HEADS[ctx] = set(heads)
    elif ctx.connection is not None:
        _state(ctx.connection)[APPLIED] = set(heads)


# `--sql` has no connection to keep them on: per MigrationContext, gone with it
_OFFLINE_HEADS: "weakref.WeakKeyDictionary[Any, set[str]]" = weakref.WeakKeyDictionary()


def rolled_back(connection: Connection) -> str:
    """What a migration that failed left: nothing, or, when a revision's autocommit_block()
    had committed (it commits what ran before it), the revision the database stays at."""
    if not _state(connection).get(COMMITTED_EARLY):
        return "the migration was rolled back, nothing changed"
    try:
        if connection.in_transaction():
            connection.rollback()
        with connection.begin():
            stays = ", ".join(sorted(database_revisions(connection))) or "no revision"
    except SQLAlchemyError:
        stays = "the revision before it (see `alembic current`)"
    return (
        "the migration was rolled back only to where a revision's autocommit_block() had "
        f"committed: the database is at {stays}, and what {_next_revision(stays)} ran up to "
        "the end of that block stays"
    )


def _next_revision(stays: str) -> str:
    # the revision after the one the database stays at: the one whose block committed
    at = set(stays.split(", "))
    following = [
        script.revision
        for script in context.script.walk_revisions()
        if at & set(_down_revisions(script.down_revision))
        or (not script.down_revision and stays == "no revision")
    ]
    return f"revision {', '.join(sorted(following))}" if following else "the next revision"


def _down_revisions(down: str | Sequence[str] | None) -> Sequence[str]:
    return (down,) if isinstance(down, str) else tuple(down or ())


def _heads_now(connection: Connection, migration: Any, told: bool) -> set[str] | None:
    # the heads this run moved the database to, or None when it moved nothing (no lineage to
    # write: a role that does not own alembic_version migrates to nothing as well)
    if told:
        applied = _state(connection).get(APPLIED)
        return None if applied is None else set(applied)
    return set(migration.get_current_heads())


def _ahead_of_us(connection: Connection, migration: Any) -> bool:
    # `upgrade head` on a database a later release of this project migrated past our head
    # (a rolled-back release's db-migrate): what its lineage says, as the programs read it
    if connection.dialect.name != "postgresql" or migration.opts.get("destination_rev") not in (
        "head",
        "heads",
    ):
        return False
    current = set(migration.get_current_heads())
    ours = set(context.script.get_heads())
    if not current or current & {rev.revision for rev in context.script.walk_revisions()}:
        return False
    if not ours <= migrated_from(connection, current):
        return False
    message = (
        f"the database is at {', '.join(sorted(current))}, which a later release of this "
        f"project migrated past this release's head {', '.join(sorted(ours))}; nothing to do"
    )
    context.config.attributes["ahead"] = message
    log.info("%s", message)
    return True


def _adoption_advice(connection: Connection) -> str | None:
    # only for a database with no revision stamped, read after the failed transaction
    try:
        if connection.in_transaction():
            connection.rollback()
        if database_revisions(connection):
            return None
        return adoption_advice(connection, context.script.get_bases())
    except SQLAlchemyError:
        return None


@contextmanager
def _interrupts_told(connection: Connection) -> Iterator[None]:
    # Ctrl-C during a statement leaves SQLAlchemy's transaction to be rolled back, and the
    # autocommit_block() that ends then fails on it (PendingRollbackError): the interrupt,
    # with what it left, is what the command reports
    try:
        yield
    except KeyboardInterrupt:
        raise KeyboardInterrupt(_after_interrupt(connection)) from None
    except Exception as exc:
        cause: BaseException | None = exc
        while cause is not None and not isinstance(cause, KeyboardInterrupt):
            cause = cause.__context__
        if cause is None:
            raise
        raise KeyboardInterrupt(_after_interrupt(connection)) from None


def _after_interrupt(connection: Connection) -> str:
    committed = _state(connection).get(COMMITTED_EARLY)
    with suppress(SQLAlchemyError):
        connection.invalidate()  # its state is unknown: the server rolls back when it closes
    if committed:
        return (
            "the migration was rolled back only to where a revision's autocommit_block() had "
            "committed; see `alembic current`, then migrate again"
        )
    return "the migration was rolled back, nothing changed"


def run_migrations_as_sql() -> None:
    """Write the migrations env.py configured as SQL (`alembic upgrade --sql`), without
    connecting; on PostgreSQL after what a run does first (start_sql()), so that SQL run by
    hand is as bounded."""
    migration = context.get_context()
    with context.begin_transaction():
        if migration.dialect.name == "postgresql":
            with _command_error():
                for statement in start_sql():
                    context.execute(statement)
        context.run_migrations()
        # the lineage, as a run records it (nothing applied, nothing to record)
        heads = _OFFLINE_HEADS.pop(migration, None)
        if migration.dialect.name == "postgresql" and heads is not None:
            context.execute(lineage_sql(context.script, heads, offline=True))


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
    event.listen(connection, "commit", _committed)
    try:
        with _ready(connection, write_lock):
            yield
    finally:
        event.remove(connection, "commit", _committed)


def _committed(connection: Connection) -> None:
    # a commit while the revisions run is an autocommit_block()'s: what ran before it stays,
    # if it wrote anything (PostgreSQL gives a transaction an id at its first write)
    if not _state(connection).get(MIGRATING):
        return
    if connection.dialect.name == "postgresql":
        # straight to the driver: the connection is between its statements and its commit
        driver = driver_connection(connection)
        if not driver.execute(WROTE).fetchone()[0]:
            return
        # the revisions applied before the block become visible now: with their lineage, or
        # the previous release's programs would refuse the database until the run ends
        applied = _state(connection).get(APPLIED)
        owner = driver.execute(OWNS_VERSION_TABLE).fetchone()
        if applied and owner and owner[0]:
            driver.execute(lineage_sql(_state(connection)[MIGRATING], applied))
    _state(connection)[COMMITTED_EARLY] = True


@contextmanager
def _ready(connection: Connection, write_lock: bool) -> Iterator[None]:
    if connection.dialect.name == "postgresql":
        connection.execution_options(**{POSTGRES_LOCK_TIMEOUT: None})
        event.listen(connection, "before_cursor_execute", _bound_autocommit)
        try:
            yield
        finally:
            event.remove(connection, "before_cursor_execute", _bound_autocommit)
            connection.execution_options(
                **{POSTGRES_LOCK_TIMEOUT: lock_timeout(), POSTGRES_STATEMENT_TIMEOUT: None}
            )
            if _state(connection).pop(SESSION_TIMEOUTS, None):
                with suppress(SQLAlchemyError), connection.begin():  # (a closing connection)
                    connection.exec_driver_sql("RESET lock_timeout; RESET statement_timeout")
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


def _bound_autocommit(
    connection: Connection, cursor: Any, statement: str, *_parameters: object
) -> None:
    # an autocommit_block() runs outside any transaction, where SET LOCAL lasts for nothing:
    # its statements get the migrations' timeouts for the session, once, reset by _ready()
    # (migrations run on DATABASE_URL_DIRECT: not through a pooler lending the session out)
    options = connection.get_execution_options()
    if options.get("isolation_level") != "AUTOCOMMIT":
        return
    if not _READ_ONLY.match(statement):
        _state(connection)[COMMITTED_EARLY] = True  # in autocommit, each statement commits itself
    if _state(connection).get(SESSION_TIMEOUTS):
        return
    lock, limit = migration_timeouts()
    _state(connection)[SESSION_TIMEOUTS] = True
    cursor.execute(
        f"SET lock_timeout = {milliseconds(lock)}; SET statement_timeout = {milliseconds(limit)}"
    )


def wait_for_other_migrations(connection: Connection) -> None:
    """Inside the migrations' transaction: hold the lock that other migrating processes wait on.

    The transaction keeps it until it ends, so the next process finds the schema at head. On
    SQLite the transaction took the write lock when it began (migrating()). On PostgreSQL the
    wait for it ends at the migration's deadline (retrying_lock_timeouts(); MigrationLockBusy
    then), and once it holds the lock the rest of the transaction gets the migrations'
    timeouts. All of it is one round trip: three statements sent at once (psycopg sends a
    query without parameters as one simple query).
    """
    if connection.dialect.name == "postgresql":
        lock, statement = migration_timeouts()
        deadline: float = _state(connection).get(DEADLINE) or time.monotonic() + wait_budget(lock)
        wait = min(max(deadline - time.monotonic(), 0.001), MAX_TIMEOUT)
        try:
            # the backend's pid, for _Blockers: the one psycopg learnt when it connected is
            # PgBouncer's own when the URL goes through it
            _state(connection)[BACKEND_PID] = connection.exec_driver_sql(
                f"SELECT pg_backend_pid(), set_config('lock_timeout', '{milliseconds(wait)}', "
                f"true); SELECT pg_advisory_xact_lock({POSTGRES_LOCK_KEY}); "
                f"SELECT set_config('lock_timeout', '{milliseconds(lock)}', true), "
                f"set_config('statement_timeout', '{milliseconds(statement)}', true)"
            ).scalar_one()
        except DBAPIError as exc:
            if lock_timed_out(exc):
                raise MigrationLockBusy(wait) from None
            raise
        # a revision's autocommit_block() ends this transaction; the one Alembic begins after
        # it gets the same timeouts from db.py (migrating() puts the programs' back at the end)
        connection.execution_options(
            **{POSTGRES_LOCK_TIMEOUT: lock, POSTGRES_STATEMENT_TIMEOUT: statement}
        )


def start_sql() -> list[str]:
    """What wait_for_other_migrations() does on PostgreSQL, as the SQL `alembic upgrade --sql`
    writes first: the lock, waited for as long as wait_budget() says, then the timeouts (which
    squawk checks: tests/dbkit/migration_sql.py).
    """
    lock, statement = migration_timeouts()
    return [
        f"SET LOCAL lock_timeout = '{milliseconds(min(wait_budget(lock), MAX_TIMEOUT))}ms'",
        f"SELECT pg_advisory_xact_lock({POSTGRES_LOCK_KEY})",
        f"SET LOCAL lock_timeout = '{milliseconds(lock)}ms'",
        f"SET LOCAL statement_timeout = '{milliseconds(statement)}ms'",
    ]


def migration_timeouts() -> tuple[float, float]:
    """Seconds a migration statement on PostgreSQL may wait for a lock, and may run;
    DatabaseSetupError, in one line, for a setting PostgreSQL cannot take."""
    return (
        seconds_from_env("MIGRATION_LOCK_TIMEOUT", LOCK_TIMEOUT),
        seconds_from_env("MIGRATION_STATEMENT_TIMEOUT", STATEMENT_TIMEOUT),
    )


def wait_budget(lock: float) -> float:
    """Seconds a migration may wait in all, for other migrations' lock and for tables' locks:
    LOCK_ATTEMPTS waits of lock seconds, the pauses between them, and one lock's worth for
    the work around them (17 s by default). Each process counts from its own start, so
    migrators started together end together."""
    return (LOCK_ATTEMPTS + 1) * lock + sum(_pause(lock, n) for n in range(1, LOCK_ATTEMPTS))


def _pause(lock: float, number: int) -> float:
    return lock / 2 * 2.0 ** (number - 1)


class MigrationLockBusy(Exception):
    """Another migration held the migrations' lock until this one's deadline."""

    def __init__(self, waited: float) -> None:
        super().__init__(waited)
        self.waited = waited


def retrying_lock_timeouts(connection: Connection, migrate_once: Callable[[], None]) -> None:
    """Run migrate_once, which migrates in one transaction; again while a lock wait ends it.

    On PostgreSQL a lock timeout rolls the whole transaction back; after a pause, in which
    the sessions queued behind it get their turn, it is tried again, LOCK_ATTEMPTS times in
    all, each wait (for another migration's lock too) ending by one deadline, wait_budget()
    from now. Then DatabaseSetupError names the sessions it waited for, which a second
    connection watched for from the first timeout on. A transaction the caller began is tried
    once: it is not ours.
    """
    if connection.dialect.name != "postgresql":
        migrate_once()
        return
    lock, statement = migration_timeouts()
    tries = 1 if connection.in_transaction() else LOCK_ATTEMPTS
    deadline = time.monotonic() + wait_budget(lock)
    _state(connection)[DEADLINE] = deadline
    blockers = _Blockers(connection, interval=lock / 4, delay=lock * 3 / 4)
    blockers.start()
    try:
        for number in range(1, tries + 1):
            try:
                migrate_once()
                return
            except MigrationLockBusy as busy:
                raise DatabaseSetupError(_other_migration(connection, busy.waited)) from None
            except DBAPIError as exc:
                if _statement_timed_out(exc):
                    raise DatabaseSetupError(_ran_too_long(statement, connection)) from None
                if not lock_timed_out(exc):
                    raise
            if _state(connection).get(COMMITTED_EARLY):
                break  # a retry would run that autocommit_block() again
            pause = _pause(lock, number)
            if number == tries or time.monotonic() + pause >= deadline:
                break
            time.sleep(pause)
    finally:
        blockers.stop()
        _state(connection).pop(DEADLINE, None)
    raise DatabaseSetupError(_waited_too_long(number, lock, blockers.seen, connection))


class _Blockers:
    """The sessions a connection waits for, sampled from another connection while it runs.

    The second connection opens only if the migration is still running after delay (three
    quarters of a lock timeout: a lock wait from the start is still on then, and a migration
    that has nothing to do, even 100 ms away, is done long before).
    """

    def __init__(self, connection: Connection, interval: float, delay: float) -> None:
        _state(connection).pop(BACKEND_PID, None)
        self.info = _state(connection)  # where each attempt leaves its backend's pid
        self.engine = connection.engine
        self.interval = interval
        self.delay = delay
        self.seen: Sequence[Any] = []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(timeout=CONNECT_TIMEOUT + 1)

    def _watch(self) -> None:
        if self.stopped.wait(self.delay):
            return
        try:
            with self.engine.connect() as watcher:
                # no transaction: pg_stat_activity is read once per transaction
                watcher.execution_options(isolation_level="AUTOCOMMIT")
                while True:
                    pid = self.info.get(BACKEND_PID)
                    if pid and (rows := watcher.execute(BLOCKERS, {"pid": pid}).all()):
                        self.seen = rows
                    if self.stopped.wait(self.interval):
                        return
        except SQLAlchemyError:
            return  # the report then says it did not see them


def _other_migration(connection: Connection, waited: float) -> str:
    """Who holds the migrations' lock, read after the wait for it ended (the rollback done)."""
    try:
        with connection.begin():
            holders = connection.execute(
                LOCK_HOLDERS,
                {"high": POSTGRES_LOCK_KEY >> 32, "low": POSTGRES_LOCK_KEY & 0xFFFF_FFFF},
            ).all()
    except SQLAlchemyError:
        holders = []
    if holders:
        sessions = "; ".join(_session(*row[:4]) + _waits_for(row.waits_for) for row in holders)
        held = f"another migration holds the migrations' lock: {sessions}"
        end = f"let it finish or end it (SELECT pg_terminate_backend({holders[0][0]}))"
    else:
        held = "another migration held the migrations' lock (it has just ended)"
        end = "try again"
    return (
        f"{held}; waited {waited:.0f} s for it (the migrations' deadline, {LOCK_ATTEMPTS + 1} x "
        f"MIGRATION_LOCK_TIMEOUT and pauses), nothing changed; {end}, then run this again"
    )


def _waits_for(pids: Sequence[int] | None) -> str:
    if not pids:
        return ""
    return f", which waits for pid {', '.join(str(pid) for pid in pids)}"


def _waited_too_long(
    tries: int, lock: float, blockers: Sequence[Any], connection: Connection
) -> str:
    if blockers:
        sessions = "; ".join(_session(*row) for row in blockers)
        ends = ", ".join(f"pg_terminate_backend({row[0]})" for row in blockers)
        held = f"held by {sessions}"
        end = f"let it finish or end it (SELECT {ends})"
    else:
        held = "held by a session it could not see (look in pg_locks for locks not granted)"
        end = "end that session or let it finish"
    return (
        f"the migration waited for a lock {tries} time(s), {lock:g} s each, and "
        f"{_after_rollback(connection)}: the lock is {held}; {end}, then migrate again "
        "(MIGRATION_LOCK_TIMEOUT sets a longer wait, for which every reader of the table waits)"
    )


def _after_rollback(connection: Connection) -> str:
    # "nothing changed" only when no autocommit_block() committed along the way
    return rolled_back(connection).removeprefix("the migration ")


def _session(pid: int, application: str | None, state: str | None, open_for: Any) -> str:
    # application_name is anyone's to set: a URL pasted there keeps its password otherwise
    shown = without_url_passwords(application) if application else None
    details = [f"application_name {shown!r}" if shown else "no application_name"]
    if state:
        details.append(state)
    if open_for is not None:
        details.append(f"transaction open {open_for.total_seconds():.0f} s")
    return f"pid {pid} ({', '.join(details)})"


def _ran_too_long(statement: float, connection: Connection) -> str:
    return (
        f"a migration statement ran longer than {statement:g} s (MIGRATION_STATEMENT_TIMEOUT) "
        f"and the migration {_after_rollback(connection)}; a revision that needs longer (a "
        "backfill, VALIDATE CONSTRAINT) sets its own in upgrade(): "
        "op.execute(\"SET LOCAL statement_timeout = '10min'\"), or, inside an "
        "autocommit_block(), op.execute(\"SET statement_timeout = '10min'\")"
    )


def _statement_timed_out(exc: DBAPIError) -> bool:
    # 57014 (query_canceled) is also a cancel request; the message tells them apart
    return getattr(exc.orig, "sqlstate", None) == "57014" and "statement timeout" in str(exc.orig)


def record_lineage(connection: Connection, script: ScriptDirectory, heads: Iterable[str]) -> None:
    """Inside the migrations' transaction, on PostgreSQL, when a revision was applied: write
    on alembic_version the project and the revisions its heads build on, so that the programs
    of an earlier release, whose scripts end below those heads, can tell a database migrated
    ahead of them (the expand phase of a live migration) from another project's
    (schema.migrated_from).

    A comment is its table owner's to write: a role that may migrate but does not own
    alembic_version migrates all the same, and is told in one line what goes unrecorded.
    """
    if connection.dialect.name != "postgresql":
        return
    owner = connection.exec_driver_sql(OWNS_VERSION_TABLE).scalar()
    if not owner:
        # alembic's logging shows it; db-migrate, which sets up no logging, prints it itself
        log.warning("%s", _NOT_OWNER)
        context.config.attributes[NOT_RECORDED] = _NOT_OWNER
        return
    connection.exec_driver_sql(lineage_sql(script, heads))


def lineage_sql(script: ScriptDirectory, heads: Iterable[str], offline: bool = False) -> str:
    """The statement that records heads' lineage; offline (`--sql`), one that records it only
    when the role running it owns alembic_version, and warns otherwise."""
    lineage = "NULL"
    if heads := set(heads):
        revisions = {
            revision.revision for revision in script.iterate_revisions(tuple(heads), "base")
        }
        lineage = "'" + lineage_comment(heads, revisions).replace("'", "''") + "'"
    comment = f"COMMENT ON TABLE {VERSION_TABLE} IS {lineage}"
    if not offline:
        return comment
    warning = _NOT_OWNER.replace("'", "''")
    return (
        f"DO $lineage$ BEGIN IF pg_has_role((SELECT relowner FROM pg_class WHERE oid = "
        f"'{VERSION_TABLE}'::regclass), 'USAGE') THEN {comment}; ELSE RAISE WARNING "
        f"'{warning}'; END IF; END $lineage$"
    )


# Config.attributes: the lineage went unrecorded, and why (db-migrate prints it)
NOT_RECORDED = "lineage_not_recorded"
# does this role own alembic_version (or belong to its owner)?
OWNS_VERSION_TABLE = (
    "SELECT pg_has_role(relowner, 'USAGE') FROM pg_class "
    f"WHERE oid = to_regclass('{VERSION_TABLE}')"
)
_NOT_OWNER = (
    f"lineage not recorded: this role does not own {VERSION_TABLE}, so the previous "
    "release's programs will refuse this database until its owner runs the migrations "
    f"(or ALTER TABLE {VERSION_TABLE} OWNER TO this role); the migration itself is done"
)


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
