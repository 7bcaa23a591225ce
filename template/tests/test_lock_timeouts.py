"""Waits for a lock are bounded: nothing queues for long behind a migration, nor waits forever.

On PostgreSQL a migration that waits for a table's lock holds up every reader and writer of
that table, so it gives up after the migrations' lock timeout, tries again, and then names
who holds the lock; the programs give up after theirs. The tests lower both through the
environment variables that override them, not to wait the defaults out.
"""

import shutil
import signal
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

from tests.conftest import (
    SCRIPTS,
    Run,
    migrations_plus,
    restore_sigint,
    scratch_env,
)

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


def db_migrate(scratch: Path, lock: float = MIGRATION_LOCK_TIMEOUT) -> "subprocess.Popen[str]":
    environment = {**scratch_env(scratch), "MIGRATION_LOCK_TIMEOUT": str(lock)}
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


# what a deploy role's URL looks like when someone pastes it into application_name
PASTED_URL = "postgresql://deploy:hunter2@db.example.com/app"
MIGRATIONS_LOCK = "SELECT pg_advisory_xact_lock(2026112501)"


@pytest.mark.parametrize("command", [("db-migrate",), ("alembic", "current"), ("alembic", "check")])
def test_a_command_behind_another_migrations_lock_gives_up_by_its_deadline_naming_the_holder(
    command: tuple[str, ...],
    migrated: URL,
    engine: Engine,
    run: Run,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    postgresql_only(migrated)
    monkeypatch.setenv("MIGRATION_LOCK_TIMEOUT", "0.25")  # the deadline: 5 x 0.25 + pauses
    holder = f"SELECT set_config('application_name', '{PASTED_URL}', false), {MIGRATIONS_LOCK[7:]}"
    with blocker(engine, holder) as pid:
        result = run(*command)
        # it ended while the holder still holds the lock: it did not wait it out
        assert waiting_behind_nobody(engine)
    said = result.stderr if command[0] == "db-migrate" else result.stdout
    assert result.returncode != 0, said
    assert f"another migration holds the migrations' lock: pid {pid} (" in said, said
    assert "hunter2" not in said and "postgresql://deploy:***@db.example.com/app" in said
    assert "Traceback" not in result.stderr
    if command[0] == "db-migrate":
        assert len(result.stderr.splitlines()) == 1, result.stderr


def waiting(connection: Connection) -> int:
    """How many sessions wait for a lock."""
    found = connection.scalar(
        text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
    )
    connection.rollback()  # pg_stat_activity is read once per transaction
    return int(found or 0)


def waiting_behind_nobody(engine: Engine) -> bool:
    """No session waits for the migrations' lock any more."""
    with engine.connect() as connection:
        return not connection.scalar(
            text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
        )


INDEX_REVISION = """
from alembic import op

revision = "1dx0"
down_revision = "{head}"


def upgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index("ix_markers_name", "markers", if_exists=True, postgresql_concurrently=True)
        op.create_index("ix_markers_name", "markers", ["name"], postgresql_concurrently=True)
"""


def test_the_concurrent_index_recipe_behind_an_open_writer_gives_up_naming_it(
    migrated: URL, engine: Engine, scratch: Path, tmp_path: Path
) -> None:
    postgresql_only(migrated)
    added = migrations_plus(tmp_path, INDEX_REVISION) / "versions" / "next_revision.py"
    shutil.copy(added, scratch / "migrations" / "versions")
    writer = "INSERT INTO markers (name) VALUES ('left open')"
    with blocker(engine, writer) as pid:
        migration = db_migrate(scratch)
        out, err = migration.communicate(timeout=120)  # (the writer is still open)
    assert (migration.returncode, out) == (1, ""), err
    assert err.startswith("db-migrate: error: the migration waited for a lock "), err
    assert f"held by pid {pid} (" in err and len(err.splitlines()) == 1, err
    # the failed build left an invalid index: not "nothing changed"
    assert "nothing changed" not in err and "revision 1dx0" in err, err
    assert versions(engine) == ["0001"]
    # once the writer has gone, the same command builds the index (the recipe drops it first)
    migration = db_migrate(scratch)
    out, err = migration.communicate(timeout=120)
    assert (migration.returncode, err) == (0, ""), err


def test_migrators_started_together_behind_one_blocker_end_together(
    migrated: URL, engine: Engine, scratch: Path, tmp_path: Path
) -> None:
    postgresql_only(migrated)
    added = migrations_plus(tmp_path, NOTE_REVISION) / "versions" / "next_revision.py"
    shutil.copy(added, scratch / "migrations" / "versions")
    lock = 1.0  # the deadline: 5 x 1 s + pauses of 0.5, 1 and 2 s = 8.5 s
    with blocker(engine, "SELECT count(*) FROM markers"), engine.connect() as watcher:
        migrations = [db_migrate(scratch, lock) for _ in range(4)]
        # from when all four wait (one for the table, three for the migrations' lock): a
        # loaded machine takes its time to start them
        while waiting(watcher) < 4 and all(m.poll() is None for m in migrations):
            time.sleep(0.05)
        started = time.monotonic()
        results = [migration.communicate(timeout=120) for migration in migrations]
        took = time.monotonic() - started
    # taking turns at the lock, 4 attempts of 1 s each, they took 16 s and more
    assert took < 8.5 + MARGIN, took
    for migration, (out, err) in zip(migrations, results, strict=True):
        assert (migration.returncode, out) == (1, ""), err
        assert len(err.splitlines()) == 1 and "nothing changed" in err, err


SLEEPING_BLOCK = """
from alembic import op

revision = "5133"
down_revision = "{head}"


def upgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute("SELECT pg_sleep(60)")
"""


def test_ctrl_c_inside_an_autocommit_block_says_interrupted(
    migrated: URL, engine: Engine, scratch: Path, tmp_path: Path
) -> None:
    postgresql_only(migrated)
    added = migrations_plus(tmp_path, SLEEPING_BLOCK) / "versions" / "next_revision.py"
    shutil.copy(added, scratch / "migrations" / "versions")
    migration = subprocess.Popen(
        [SCRIPTS / "db-migrate"],
        cwd=scratch,
        env=scratch_env(scratch),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=restore_sigint,
    )
    sleeping = text("SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(60)%'")
    deadline = time.monotonic() + 60
    with engine.connect() as connection:
        while not connection.scalar(sleeping) and time.monotonic() < deadline:
            connection.rollback()
            time.sleep(0.05)
    migration.send_signal(signal.SIGINT)
    out, err = migration.communicate(timeout=60)
    assert (migration.returncode, out) == (130, "")
    assert err == "db-migrate: interrupted; the migration was rolled back, nothing changed\n"
    assert versions(engine) == ["0001"]


ROWS_IN_A_BLOCK = """
from alembic import op

revision = "b10c"
down_revision = "{head}"


def upgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute("INSERT INTO markers (name) VALUES ('from a block')")
"""

SLOW_AFTER_IT = """
from alembic import op

revision = "510e"
down_revision = "b10c"


def upgrade() -> None:
    op.execute("SELECT pg_sleep(1)")
"""


def test_a_failure_after_an_autocommit_block_names_what_stays(
    migrated: URL,
    alembic_cfg: Config,
    engine: Engine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    postgresql_only(migrated)
    monkeypatch.setenv("MIGRATION_STATEMENT_TIMEOUT", "0.2")
    scripts = migrations_plus(tmp_path, ROWS_IN_A_BLOCK)
    (scripts / "versions" / "slow.py").write_text(SLOW_AFTER_IT)
    alembic_cfg.set_main_option("script_location", str(scripts))
    with pytest.raises(CommandError) as refused:
        command.upgrade(alembic_cfg, "head")
    said = str(refused.value)
    assert "nothing changed" not in said and "\n" not in said, said
    assert "the database is at 0001, and what revision b10c ran up to the end" in said, said
    assert count_markers(engine) == 1  # the block's row stays, and is said to
    assert versions(engine) == ["0001"]


@pytest.mark.parametrize(
    ("variable", "value"),
    [("MIGRATION_STATEMENT_TIMEOUT", "3000000"), ("MIGRATION_LOCK_TIMEOUT", "1e12")],
)
def test_a_migration_timeout_beyond_postgresqls_limit_is_refused_in_one_line(
    variable: str, value: str, migrated: URL, run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    postgresql_only(migrated)
    monkeypatch.setenv(variable, value)
    result = run("db-migrate")
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == (
        f"db-migrate: error: {variable} must be at most 2147483 seconds (PostgreSQL's limit, "
        f"about 24 days), not {float(value):g}; unset it for the default "
        f"({60 if 'STATEMENT' in variable else 2})\n"
    )
