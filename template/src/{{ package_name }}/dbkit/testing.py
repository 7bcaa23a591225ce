# dbkit (the template's): `copier update` brings each release's changes here.
"""The tests' pytest plugin, which tests/conftest.py loads: every test, yours and the
template's, gets a throwaway database, never the one DATABASE_URL names.

Fixtures a test can ask for: `migrated` (the database at head), `engine` (an engine on it),
`run` (one of the project's programs as a process), `run_here` (the same, in this process),
`alembic_cfg` and `scratch` (a copy of the project to change). The helpers below the
fixtures are the template's tests' (tests/dbkit/).

The database is a fresh SQLite file, or, when TEST_DATABASE_URL is set, that database emptied
before each test. The tests drop only what they made: they refuse to start on a database that
holds tables, whatever the URL looks like, and drop their own tables when they finish.
"""

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, MetaData, inspect, text
from sqlalchemy.engine import URL

from .config import (
    MIGRATIONS_DIR,
    PROJECT_ROOT,
    parse_database_url,
    test_database_setting,
)
from .db import make_engine
from .errors import DatabaseSetupError, explained
from .schema import read_scripts
from .schema_diff import reflecting

# the template's tests; the rest of tests/ is yours
TEMPLATE_TESTS = PROJECT_ROOT / "tests" / "dbkit"

# the virtualenv's bin folder, where write-once and read-later are installed
SCRIPTS = Path(sys.executable).parent

# decided once, from the environment or else .env, so that every test agrees
TEST_DATABASE_URL = test_database_setting()

Run = Callable[..., "subprocess.CompletedProcess[str]"]

# set once the tests have found TEST_DATABASE_URL's database empty, and so may drop its tables
OWNS_TEST_DATABASE = pytest.StashKey[bool]()


def pytest_configure(config: pytest.Config) -> None:
    """Refuse to start when TEST_DATABASE_URL's database holds tables the tests did not make."""
    config.addinivalue_line(
        "markers", "dbkit: the template's own tests, in tests/dbkit/ (deselect: -m 'not dbkit')"
    )
    # pytest-alembic's checks carry its marker; its plugin, which would declare it, is off
    config.addinivalue_line("markers", "alembic: pytest-alembic's checks")
    if TEST_DATABASE_URL:
        check_test_database(TEST_DATABASE_URL)
        config.stash[OWNS_TEST_DATABASE] = True


def check_test_database(raw_url: str) -> None:
    """Raise pytest.UsageError unless raw_url names a database that holds no tables."""
    url = parse_database_url(raw_url, "TEST_DATABASE_URL")
    try:
        with explained(url):
            found = _tables(url)
    except DatabaseSetupError as exc:
        raise pytest.UsageError(f"TEST_DATABASE_URL: {exc}") from None
    if found:
        # the same database may be written in many ways (localhost, 127.0.0.1, another
        # port, a pooler): what it holds is the one sure sign that it is not the tests' own
        raise pytest.UsageError(
            f"TEST_DATABASE_URL's database already holds tables ({', '.join(found)}); the "
            "tests drop every table they find, so they start only on an empty database: give "
            "them one of their own, or empty this one if nothing in it matters"
        )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the template's tests (tests/dbkit/), so that `pytest -m "not dbkit"` runs yours."""
    for item in items:
        if TEMPLATE_TESTS in item.path.parents:
            item.add_marker(pytest.mark.dbkit)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Leave TEST_DATABASE_URL's database as empty as the tests found it."""
    if session.config.stash.get(OWNS_TEST_DATABASE, False):
        _drop_everything(parse_database_url(TEST_DATABASE_URL, "TEST_DATABASE_URL"))


@pytest.fixture(autouse=True)
def database_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> URL:
    """This test's database, exported as DATABASE_URL to this process and its children."""
    if TEST_DATABASE_URL:
        url = parse_database_url(TEST_DATABASE_URL, "TEST_DATABASE_URL")
        _drop_everything(url)
    else:
        url = parse_database_url(f"sqlite:///{tmp_path / 'test.db'}")
    monkeypatch.setenv("DATABASE_URL", url.render_as_string(hide_password=False))
    # set, though empty, so that a DATABASE_URL_DIRECT in .env cannot point migrations elsewhere
    monkeypatch.setenv("DATABASE_URL_DIRECT", "")
    return url


@pytest.fixture
def alembic_cfg() -> Config:
    """Alembic's configuration, as the `alembic` command reads it from the project folder."""
    return Config(PROJECT_ROOT / "alembic.ini", toml_file=PROJECT_ROOT / "pyproject.toml")


@pytest.fixture
def migrated(alembic_cfg: Config, database_url: URL) -> URL:
    """The test database, brought to the migrations' head."""
    command.upgrade(alembic_cfg, "head")
    return database_url


@pytest.fixture
def engine(database_url: URL) -> Iterator[Engine]:
    """An engine on the test database, for checks that bypass the code under test."""
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def run() -> Run:
    """Run one of the project's programs as a separate process; never raises on failure."""

    def run(
        program: str, *args: str, stdin: str | None = None
    ) -> "subprocess.CompletedProcess[str]":
        return subprocess.run(
            [str(SCRIPTS / program), *args],
            input=stdin,
            capture_output=True,
            text=True,
            encoding="utf-8",
            timeout=300,
            check=False,
        )

    return run


@pytest.fixture
def run_here(capsys: pytest.CaptureFixture[str]) -> Run:
    """Run one of the project's programs in this process, through the main() its console
    script calls: the same exit code and output as `run`, without a new process importing
    everything again. `run` is for what only a process proves (exit, signals, stdin, imports).
    """

    def run_here(
        program: str, *args: str, stdin: str | None = None
    ) -> "subprocess.CompletedProcess[str]":
        assert stdin is None, "standard input is a real process's: use run"
        (entry_point,) = metadata.entry_points(group="console_scripts", name=program)
        capsys.readouterr()  # what the test printed before is not the program's
        try:
            code = entry_point.load()(list(args))
        except SystemExit as exit:
            code = exit.code if isinstance(exit.code, int) else 1
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess([program, *args], code, out, err)

    return run_here


def restore_sigint() -> None:
    """preexec_fn for a child a test interrupts: SIGINT as the system defaults it.

    A suite run in the background or under nohup ignores SIGINT, and a child inherits that:
    Python would then install no handler of its own, and Ctrl-C would never reach it.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    """A copy of the project's code, migrations and settings; the virtualenv is shared."""
    copy = tmp_path / "scratch"
    for folder in ("src", "migrations"):
        ignore = shutil.ignore_patterns("__pycache__")
        shutil.copytree(PROJECT_ROOT / folder, copy / folder, ignore=ignore)
    for name in ("alembic.ini", "pyproject.toml", ".squawk.toml"):
        shutil.copy(PROJECT_ROOT / name, copy / name)
    return copy


def in_scratch(scratch: Path, program: str, *args: str) -> str:
    """Run one of the virtualenv's programs in the scratch copy, on the copy's code."""
    result = run_in_scratch(scratch, program, *args)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def run_in_scratch(scratch: Path, program: str, *args: str) -> "subprocess.CompletedProcess[str]":
    """Like in_scratch(), for a run that may fail; never raises on failure."""
    return subprocess.run(
        [SCRIPTS / program, *args],
        cwd=scratch,
        env=scratch_env(scratch),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def scratch_env(scratch: Path) -> dict[str, str]:
    """The environment for a process in the scratch copy: its package comes first."""
    return {**os.environ, "PYTHONPATH": str(scratch / "src")}


def _tables(url: URL) -> list[str]:
    """The tables (and PostgreSQL enum types) in the database's default schema."""
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            inspector = inspect(connection)
            found = inspector.get_table_names()
            if connection.dialect.name == "postgresql":
                enums = inspector.get_enums()  # type: ignore[attr-defined]
                found += [f"type {enum['name']}" for enum in enums]
    finally:
        engine.dispose()
    return sorted(found)


def _drop_everything(url: URL) -> None:
    engine = make_engine(url)
    with engine.begin() as connection, reflecting():  # (a test's NOT VALID constraint)
        metadata = MetaData()
        metadata.reflect(connection)
        metadata.drop_all(connection)
        if connection.dialect.name == "postgresql":
            # enum types outlive their tables; a type left behind breaks the next CREATE TYPE
            for enum in inspect(connection).get_enums():  # type: ignore[attr-defined]
                connection.execute(text(f'DROP TYPE IF EXISTS "{enum["name"]}" CASCADE'))
    engine.dispose()


def migrations_plus(tmp_path: Path, revision: str) -> Path:
    """A copy of the project's migrations with one more revision on top of the head.

    revision is the new script's source; {head} in it becomes the current head's id.
    """
    (head,) = read_scripts().heads
    copy = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "versions" / "next_revision.py").write_text(revision.replace("{head}", head))
    return copy
