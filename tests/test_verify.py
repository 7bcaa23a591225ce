"""db-verify and db-evidence in a rendered project, on a SQLite file and a real PostgreSQL server.

The PostgreSQL role's password, s3cr%t@p:ss/w0rd, must be URL-encoded; no output and no file of
an evidence bundle may show it, in any form.
"""

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import (
    assert_shows_no_password,
    database_name,
    install,
    ok,
    render,
    run,
    run_program,
)
from tests.postgres import PASSWORD, PostgresServer

# run by the project's own python: validate a bundle against the schema the project ships
VALIDATE = """
import json, sys
import jsonschema
from budget_tracker.dbkit.bundle import SCHEMA_PATH

schema = json.loads(SCHEMA_PATH.read_text())
jsonschema.validate(
    json.loads(open(sys.argv[1]).read()), schema, cls=jsonschema.Draft202012Validator
)
print("valid")
"""

# a new column on Marker, as a user would add it before `alembic revision --autogenerate`
NOTE_COLUMN = "    note: Mapped[str | None] = mapped_column(String(20))\n"


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[str], dict[str, str]]:
    """Make a new empty database on each backend; returns the environment that selects it."""

    def new(label: str) -> dict[str, str]:
        if request.param == "sqlite":
            return {"DATABASE_URL": f"sqlite:///{tmp_path / label}.db"}
        server: PostgresServer = request.getfixturevalue("postgres")
        new_database: Callable[[str], str] = request.getfixturevalue("new_database")
        return {"DATABASE_URL": server.url(new_database(f"verify_{label}"))}

    return new


def bundle_text(bundle: Path) -> str:
    return "".join(path.read_text() for path in sorted(bundle.iterdir()))


def make_bundle(project: Path, output: Path, env: dict[str, str]) -> dict[str, Any]:
    written = run_program(project, "db-evidence", "--output", str(output), env=env)
    assert ok(written) == f"{output}\n"
    assert_shows_no_password(written, bundle_text(output))
    validated = run_program(project, "python", "-c", VALIDATE, output / "evidence.json")
    assert ok(validated) == "valid\n"
    bundle: dict[str, Any] = json.loads((output / "evidence.json").read_text())
    return bundle


def test_evidence_bundles_are_git_ignored(tmp_path: Path) -> None:
    project = render(tmp_path / "p")
    ok(run("git", "init", "-q", cwd=project))
    bundle = "evidence/20261125T120000Z/evidence.json"
    assert run("git", "check-ignore", "-q", bundle, cwd=project).returncode == 0


def test_write_once_then_db_verify_passes_and_db_evidence_writes_a_valid_bundle(
    postgres_project: Path, database: Callable[[str], dict[str, str]], tmp_path: Path
) -> None:
    env = database("proof")
    ok(run_program(postgres_project, "alembic", "upgrade", "head", env=env))
    assert ok(run_program(postgres_project, "write-once", env=env)) == "Wrote marker\n"

    verified = run_program(postgres_project, "db-verify", env=env)
    assert ok(verified).splitlines() == [
        f"ok   revision: {database_name(env['DATABASE_URL'])} at 0001, the scripts' head",
        "ok   schema: the database matches the models",
        verified.stdout.splitlines()[2],
        verified.stdout.splitlines()[3],
    ]
    assert verified.stdout.splitlines()[2].startswith("ok   integrity: ")
    assert verified.stdout.splitlines()[3].startswith("ok   data markers: 1 row, checksum ")
    assert_shows_no_password(verified)

    bundle = make_bundle(postgres_project, tmp_path / "bundle", env)
    assert bundle["verdict"] == "pass"
    assert {name: table["rows"] for name, table in bundle["tables"].items()} == {"markers": 1}
    assert bundle["project"] == {"name": "budget-tracker", "version": "0.1.0"}


def test_each_failure_exits_1_naming_its_check(
    postgres_project: Path, database: Callable[[str], dict[str, str]], tmp_path: Path
) -> None:
    env = database("failures")
    ok(run_program(postgres_project, "alembic", "upgrade", "head", env=env))
    ok(run_program(postgres_project, "write-once", "one", "two", env=env))
    bundle = tmp_path / "before"
    make_bundle(postgres_project, bundle, env)
    # rows deleted and a column added, by hand, past the project's code
    sql = "DELETE FROM markers WHERE name = 'two'; ALTER TABLE markers ADD COLUMN note VARCHAR(9)"
    by_hand = (
        "import sys\nfrom sqlalchemy import create_engine\n"
        "from budget_tracker.dbkit.config import database_url\n"
        "with create_engine(database_url()).begin() as connection:\n"
        "    for statement in sys.argv[1].split('; '):\n"
        "        connection.exec_driver_sql(statement)\n"
    )
    ok(run_program(postgres_project, "python", "-c", by_hand, sql, env=env))

    result = run_program(postgres_project, "db-verify", "--expect", str(bundle), env=env)

    assert result.returncode == 1, result.stdout + result.stderr
    failed = [line.split(":")[0] for line in result.stdout.splitlines() if line.startswith("FAIL")]
    assert failed == ["FAIL schema", "FAIL expect rows"]
    assert "markers 2 -> 1" in result.stdout
    assert_shows_no_password(result)


def test_the_schema_hash_is_stable_and_a_real_migration_changes_it(
    postgres: PostgresServer, new_database: Callable[[str], str], tmp_path: Path
) -> None:
    # a project of its own: this test adds a model column and a migration to it
    project = render(tmp_path / "budget-tracker")
    install(project, "postgres")
    environments = {
        "sqlite": {"DATABASE_URL": f"sqlite:///{tmp_path / 'app.db'}"},
        "postgresql": {"DATABASE_URL": postgres.url(new_database("verify_hash"))},
    }
    hashes: dict[str, list[object]] = {}
    for backend, env in environments.items():
        ok(run_program(project, "alembic", "upgrade", "head", env=env))
        ok(run_program(project, "write-once", env=env))
        first = make_bundle(project, tmp_path / f"{backend}-1", env)
        ok(run_program(project, "write-once", "more rows, same schema", env=env))
        second = make_bundle(project, tmp_path / f"{backend}-2", env)
        hashes[backend] = [first["schema_hash"], second["schema_hash"]]

    marker = project / "src" / "budget_tracker" / "models" / "marker.py"
    source = marker.read_text()
    anchor = "    name: Mapped[str] = mapped_column(String(NAME_MAX_LENGTH))\n"
    marker.write_text(source.replace(anchor, anchor + NOTE_COLUMN))
    revision = run_program(
        project, "alembic", "revision", "--autogenerate", "-m", "add note",
        env=environments["sqlite"],
    )  # fmt: skip
    ok(revision)

    for backend, env in environments.items():
        behind = run_program(project, "db-verify", env=env)
        assert behind.returncode == 1
        assert " at 0001, behind the scripts' head" in behind.stdout
        ok(run_program(project, "alembic", "upgrade", "head", env=env))
        verified = ok(run_program(project, "db-verify", env=env)).splitlines()
        assert [line.split()[0] for line in verified] == ["ok"] * 4
        after = make_bundle(project, tmp_path / f"{backend}-3", env)
        hashes[backend].append(after["schema_hash"])

    for backend, (written, more_rows, migrated) in hashes.items():
        assert written == more_rows != migrated, backend
    assert hashes["sqlite"][0] != hashes["postgresql"][0]


@pytest.mark.parametrize("command", ["db-verify", "db-evidence"])
def test_a_wrong_password_exits_2_in_one_line_without_showing_it(
    command: str,
    postgres_project: Path,
    postgres: PostgresServer,
    new_database: Callable[[str], str],
    tmp_path: Path,
) -> None:
    # the wrong password holds the right one, so neither may show
    url = postgres.url(new_database("verify_wrong"), password=f"not-{PASSWORD}")
    env = {"DATABASE_URL": url}
    args = ["--output", str(tmp_path / "bundle")] if command == "db-evidence" else []
    result = run_program(postgres_project, command, *args, env=env)
    assert (result.returncode, result.stdout) == (2, ""), result.stderr
    assert result.stderr.startswith(f"{command}: error: ")
    assert "password authentication failed" in result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert_shows_no_password(result)
    assert not (tmp_path / "bundle").exists()
