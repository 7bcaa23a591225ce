"""The tests never drop what they did not make: TEST_DATABASE_URL must name an empty database.

The same database can be written many ways, so the guard looks at what the database holds, not
at its URL: a database with a sentinel table must survive every way of writing it.
"""

import os
import re
import sqlite3
import subprocess
from pathlib import Path

import pytest

from tests.conftest import SCRIPTS, check_test_database

PROJECT = Path(__file__).resolve().parents[1]
ONE_TEST = "tests/test_persistence.py::test_read_later_on_an_empty_table_prints_an_empty_list"
REFUSED = "TEST_DATABASE_URL's database already holds tables (markers, sentinel)"


def run_suite(test_database_url: str) -> "subprocess.CompletedProcess[str]":
    return subprocess.run(
        [SCRIPTS / "pytest", "-q", "-p", "no:cacheprovider", ONE_TEST],
        cwd=PROJECT,
        env={**os.environ, "TEST_DATABASE_URL": test_database_url},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def contents(path: Path) -> list[tuple[str, list[tuple[object, ...]]]]:
    with sqlite3.connect(path) as connection:
        tables = [
            name
            for (name,) in connection.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
            )
        ]
        return [
            (table, connection.execute(f'SELECT * FROM "{table}"').fetchall()) for table in tables
        ]


@pytest.fixture
def precious(tmp_path: Path) -> Path:
    """A database someone cares about: a markers table and a sentinel table, with rows."""
    path = tmp_path / "precious.db"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE markers (id INTEGER PRIMARY KEY, name TEXT)")
        connection.execute("INSERT INTO markers (name) VALUES ('keep me')")
        connection.execute("CREATE TABLE sentinel (note TEXT)")
        connection.execute("INSERT INTO sentinel VALUES ('still here')")
    (tmp_path / "sub").mkdir()
    (tmp_path / "link.db").symlink_to(path)
    return path


@pytest.mark.parametrize(
    "written_as", ["absolute", "dot-and-parent-segments", "symlink", "relative-to-project"]
)
def test_a_database_that_holds_tables_is_refused_however_it_is_written(
    written_as: str, precious: Path
) -> None:
    folder = precious.parent
    path = {
        "absolute": str(precious),
        "dot-and-parent-segments": f"{folder}/./sub/../precious.db",
        "symlink": str(folder / "link.db"),
        "relative-to-project": os.path.relpath(precious, PROJECT),
    }[written_as]
    before = contents(precious)

    with pytest.raises(pytest.UsageError, match=re.escape(REFUSED)):
        check_test_database(f"sqlite:///{path}")

    assert contents(precious) == before


def test_the_suite_refuses_to_start_on_it_and_leaves_it_alone(precious: Path) -> None:
    before = contents(precious)

    result = run_suite(f"sqlite:///{precious}")

    assert result.returncode == pytest.ExitCode.USAGE_ERROR, result.stdout + result.stderr
    assert REFUSED in result.stderr
    assert contents(precious) == before


def test_the_suite_runs_on_an_empty_database_and_leaves_it_empty(tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()

    result = run_suite(f"sqlite:///{empty}")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout
    assert contents(empty) == []
