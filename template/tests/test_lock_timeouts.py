"""Waits for a lock are bounded: nothing queues for long behind a migration, nor waits forever.

On PostgreSQL a migration that waits for a table's lock holds up every reader and writer of
that table, so it gives up after the migrations' lock timeout, tries again, and then names
who holds the lock; the programs give up after theirs. The tests lower both through the
environment variables that override them, not to wait the defaults out.
"""

import shutil
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from alembic.util import CommandError
from sqlalchemy import Connection, Engine, func, inspect, select, table, text
from sqlalchemy.engine import URL

from tests.conftest import SCRIPTS, Run, migrations_plus, scratch_env

NOTE_REVISION = """
import sqlalchemy as sa
from alembic import op

revision = "n07e"
down_revision = "{head}"


def upgrade() -> None:
    op.add_column("markers", sa.Column("note", sa.String(20), nullable=True))
"""

MARKERS = table("markers")
# the bounds the tests set, in seconds, and how late a process may be on a busy machine
MIGRATION_LOCK_TIMEOUT = 0.5
PROGRAM_LOCK_TIMEOUT = 0.5
MARGIN = 5


def postgresql_only(database_url: URL) -> None:
    if database_url.get_backend_name() != "postgresql":
        pytest.skip("PostgreSQL only: lock_timeout and pg_blocking_pids (SQLite: the last tests)")


@contextmanager
def blocker(engine: Engine, sql: str) -> Iterator[int]:
    """A session that ran sql and then sits idle in its transaction; its pid."""
    with engine.connect() as connection:
        connection.execute(text(sql))
        yield connection.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
        connection.rollback()


def waiting_behind(connection: Connection, pid: int) -> bool:
    """Does some session wait for a lock that pid holds?"""
    waiting = text("SELECT count(*) FROM pg_stat_activity WHERE :pid = ANY (pg_blocking_pids(pid))")
    found = bool(connection.scalar(waiting, {"pid": pid}))
    connection.rollback()  # pg_stat_activity is read once per transaction
    return found


def markers_columns(engine: Engine) -> list[str]:
    with engine.connect() as connection:
        return [column["name"] for column in inspect(connection).get_columns("markers")]


def versions(engine: Engine) -> list[str]:
    with engine.connect() as connection:
        return list(connection.scalars(text("SELECT version_num FROM alembic_version")))


def insert_a_marker(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO markers (name) VALUES ('before')"))


def count_markers(engine: Engine) -> int:
    with engine.connect() as connection:
        return connection.scalar(select(func.count()).select_from(MARKERS)) or 0


def db_migrate(scratch: Path) -> "subprocess.Popen[str]":
    environment = {**scratch_env(scratch), "MIGRATION_LOCK_TIMEOUT": str(MIGRATION_LOCK_TIMEOUT)}
    return subprocess.Popen(
        [SCRIPTS / "db-migrate"],
        cwd=scratch,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_migration_behind_an_open_transaction_gives_up_naming_it_and_holds_up_no_reader(
    migrated: URL, engine: Engine, scratch: Path, tmp_path: Path
) -> None:
    postgresql_only(migrated)
    insert_a_marker(engine)
    # the scratch copy's migrations, one revision more: a nullable column, which needs a
    # moment of ACCESS EXCLUSIVE on markers
    added = migrations_plus(tmp_path, NOTE_REVISION) / "versions" / "next_revision.py"
    shutil.copy(added, scratch / "migrations" / "versions")
    columns, revisions = markers_columns(engine), versions(engine)

    with blocker(engine, "SELECT count(*) FROM markers") as pid, engine.connect() as watcher:
        started = time.monotonic()
        migration = db_migrate(scratch)
        while not waiting_behind(watcher, pid) and migration.poll() is None:
            time.sleep(0.02)
        # a reader that comes now would queue behind the migration's lock request for as
        # long as the blocker lasts, were that request not bounded; its own bound fails it
        reader = time.monotonic()
        with engine.begin() as connection:
            connection.exec_driver_sql(f"SET LOCAL lock_timeout = {MARGIN * 2 * 1000}")
            assert connection.scalar(select(func.count()).select_from(MARKERS)) == 1
        assert time.monotonic() - reader < MIGRATION_LOCK_TIMEOUT + MARGIN
        out, err = migration.communicate(timeout=60)
        assert time.monotonic() - started < 60

        assert (migration.returncode, out) == (1, "")
        assert err.startswith("db-migrate: error: the migration waited for a lock 4 time(s)")
        assert f"held by pid {pid} (" in err and "idle in transaction" in err
        assert len(err.splitlines()) == 1 and "Traceback" not in err, err
        assert (markers_columns(engine), versions(engine)) == (columns, revisions)

    # the blocker has ended: the same command goes through
    migration = db_migrate(scratch)
    out, err = migration.communicate(timeout=60)
    assert (migration.returncode, err) == (0, "")
    assert out.startswith("Database at head: n07e (PostgreSQL database "), out
    assert markers_columns(engine) == [*columns, "note"]


@pytest.fixture
def upgrade_with(migrated: URL, alembic_cfg: Config, tmp_path: Path) -> Callable[[str], None]:
    """`alembic upgrade head`, in this process, of the migrations and one more revision."""
    postgresql_only(migrated)

    def upgrade(revision: str) -> None:
        scripts = migrations_plus(tmp_path, revision)
        alembic_cfg.set_main_option("script_location", str(scripts))
        command.upgrade(alembic_cfg, "head")

    return upgrade


def test_alembic_upgrade_behind_a_held_lock_ends_with_one_line(
    upgrade_with: Callable[[str], None], engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MIGRATION_LOCK_TIMEOUT", str(MIGRATION_LOCK_TIMEOUT))
    columns = markers_columns(engine)

    share = "LOCK TABLE markers IN ACCESS SHARE MODE"  # what any reader takes
    with blocker(engine, share) as pid, pytest.raises(CommandError) as refused:
        upgrade_with(NOTE_REVISION)
    assert str(refused.value).startswith("the migration waited for a lock 4 time(s)")
    assert f"held by pid {pid} (" in str(refused.value) and "\n" not in str(refused.value)
    assert markers_columns(engine) == columns


SLOW_REVISION = """
from alembic import op

revision = "510w"
down_revision = "{head}"


def upgrade() -> None:
    SET_OWN_TIMEOUT
    op.execute("SELECT pg_sleep(1)")
"""


# what a revision does before its slow statement, and whether the migrations' timeout ends it
BEFORE_THE_SLOW_STATEMENT = {
    "nothing": ("pass", True),
    # what script.py.mako tells a revision with a backfill to write
    "its own timeout": ("op.execute(\"SET LOCAL statement_timeout = '10s'\")", False),
    # the block ends the migrations' transaction; the next one is bounded the same
    "an autocommit block": (
        'with op.get_context().autocommit_block():\n        op.execute("SELECT 1")',
        True,
    ),
}


@pytest.mark.parametrize("before", sorted(BEFORE_THE_SLOW_STATEMENT))
def test_a_slow_statement_ends_the_migration_unless_its_revision_allows_more(
    before: str,
    upgrade_with: Callable[[str], None],
    engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MIGRATION_STATEMENT_TIMEOUT", "0.2")
    lines, ended = BEFORE_THE_SLOW_STATEMENT[before]
    revision = SLOW_REVISION.replace("SET_OWN_TIMEOUT", lines)
    if not ended:
        upgrade_with(revision)
        assert versions(engine) == ["510w"]
        return
    before_versions = versions(engine)
    with pytest.raises(CommandError) as refused:
        upgrade_with(revision)
    assert str(refused.value).startswith(
        "a migration statement ran longer than 0.2 s (MIGRATION_STATEMENT_TIMEOUT) and the "
        "migration was rolled back, nothing changed;"
    )
    assert versions(engine) == before_versions


@pytest.mark.parametrize(
    ("program", "code"),
    [("write-once", 1), ("read-later", 1), ("db-verify", 2), ("db-evidence", 2)],
)
def test_a_program_behind_a_held_lock_gives_up_in_one_line_and_writes_nothing(
    program: str,
    code: int,
    migrated: URL,
    engine: Engine,
    run: Run,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    postgresql_only(migrated)
    monkeypatch.setenv("DATABASE_LOCK_TIMEOUT", str(PROGRAM_LOCK_TIMEOUT))
    insert_a_marker(engine)
    bundle = tmp_path / "bundle"
    arguments = ["--output", str(bundle)] if program == "db-evidence" else []

    with blocker(engine, "LOCK TABLE markers IN ACCESS EXCLUSIVE MODE"):
        started = time.monotonic()
        result = run(program, *arguments)
        assert time.monotonic() - started < PROGRAM_LOCK_TIMEOUT + MARGIN

    assert (result.returncode, result.stdout) == (code, "")
    assert result.stderr.startswith(f"{program}: error: gave up waiting for a lock")
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert count_markers(engine) == 1 and not bundle.exists()


@contextmanager
def sqlite_write_lock_held(url: URL, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Another connection holding url's write lock, and PROGRAM_LOCK_TIMEOUT to wait for it."""
    if url.get_backend_name() != "sqlite":
        pytest.skip("SQLite only: the PostgreSQL cases are above")
    monkeypatch.setenv("DATABASE_LOCK_TIMEOUT", str(PROGRAM_LOCK_TIMEOUT))
    holder = sqlite3.connect(str(url.database), isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        yield
    finally:
        holder.close()


def sqlite_locked(url: URL) -> str:
    return (
        f"SQLite database {url.database} is locked: another connection holds its write lock "
        "(a write or a migration in progress, a transaction left open) and the wait for it ran "
        "out (DATABASE_LOCK_TIMEOUT seconds, default 30; none for a transaction that read "
        "before it wrote); nothing changed; run this again once it has finished"
    )


def test_sqlite_writers_wait_as_long_as_the_same_setting_says(
    migrated: URL, run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    with sqlite_write_lock_held(migrated, monkeypatch):
        started = time.monotonic()
        result = run("write-once", "late")
        assert time.monotonic() - started < PROGRAM_LOCK_TIMEOUT + MARGIN
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == f"write-once: error: {sqlite_locked(migrated)}\n"


def test_sqlite_migrations_behind_a_writer_give_up_in_one_line(
    migrated: URL, run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    # (PostgreSQL's migrations retry, then name the session: above)
    with sqlite_write_lock_held(migrated, monkeypatch):
        migrate = run("db-migrate")
        downgrade = run("alembic", "downgrade", "base")
    assert (migrate.returncode, migrate.stdout) == (1, "")
    assert migrate.stderr == f"db-migrate: error: {sqlite_locked(migrated)}\n"
    # Alembic's own one line: FAILED on stdout, and the same logged on stderr
    assert (downgrade.returncode, downgrade.stdout) == (255, f"FAILED: {sqlite_locked(migrated)}\n")
    assert "Traceback" not in downgrade.stderr
    assert run("read-later").returncode == 0  # still at head: nothing changed


def test_a_lock_timeout_that_is_not_a_number_is_refused_in_one_line(
    run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_LOCK_TIMEOUT", "soon")
    result = run("read-later")
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == (
        "read-later: error: DATABASE_LOCK_TIMEOUT must be a number of seconds above 0, "
        "not 'soon'; unset it for the default (30)\n"
    )
