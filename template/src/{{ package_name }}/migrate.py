"""db-migrate, and migrations that finish whole or not at all, one process at a time.

`db-migrate` is `alembic upgrade head` for wherever the project is installed: it needs no
alembic.ini and no project folder, and finds the migration scripts in the package of an
installed wheel. migrations/env.py runs every Alembic command through the functions below.
SQLite needs the most care: it
changes a table by copying it, dropping the original and renaming the copy (Alembic's batch
mode). With foreign keys enforced, dropping the original deletes the rows that refer to it
(ON DELETE CASCADE) or fails halfway; so enforcement is off while migrating, and the rows are
checked before the commit instead.
"""

import argparse
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TextIO

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError

from .config import MIGRATIONS_DIR, migration_url
from .db import SQLITE_BEGIN
from .errors import DatabaseSetupError, name_database

# any number will do, as long as every process that migrates this database uses the same one
POSTGRES_LOCK_KEY = 2_026_112_501


@contextmanager
def migrating(connection: Connection, write_lock: bool = True) -> Iterator[None]:
    """Ready a connection for migrations before its transaction begins; restore it after.

    On SQLite: foreign keys are not enforced (the pragma is ignored inside a transaction),
    and, with write_lock, the transaction begins with the write lock taken, so that
    concurrent upgrades queue (a command that only reads passes False, and never waits).
    A connection already in a transaction is used as it is.
    """
    if connection.dialect.name != "sqlite" or connection.in_transaction():
        yield
        return
    # straight to the driver: through SQLAlchemy the pragma would begin a transaction
    driver = connection.connection.driver_connection
    assert driver is not None
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
    SQLite the transaction took the write lock when it began (migrating()).
    """
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": POSTGRES_LOCK_KEY})


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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="db-migrate",
        description="Bring the database (DATABASE_URL_DIRECT, else DATABASE_URL) to the "
        "migrations' head, as `alembic upgrade head` does, from wherever the project is installed.",
    )
    parser.parse_args(argv)
    config = alembic_config()
    try:
        heads = ScriptDirectory.from_config(config).get_heads()
        command.upgrade(config, "head")
    except CommandError as exc:  # env.py's one-line errors: the URL, the connection, the keys
        parser.exit(1, f"db-migrate: error: {exc}\n")
    except DBAPIError as exc:
        reason = " ".join(str(exc.orig).split())
        parser.exit(1, f"db-migrate: error: the migration failed and was rolled back: {reason}\n")
    print(f"Database at head: {', '.join(sorted(heads))} ({name_database(migration_url())})")
    return 0
