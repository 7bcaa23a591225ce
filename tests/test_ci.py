"""The generated project's CI workflow and pre-commit hooks, checked and run for real.

The workflow is linted (actionlint) and audited (zizmor, offline); then each job's `run:` steps
run in order with bash in a rendered, installed project, as a runner would run them
(tests/workflow.py): the PostgreSQL job's here, against the test server, with the job's URLs
mapped to a database there, and where its tests run DATABASE_URL and DATABASE_URL_DIRECT name
a database with rows that matter, which they never touch; the SQLite job's in
tests/test_update.py, in a project that took an update on top of its user's own model,
migration, test and data.
"""

import json
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.conftest import git_commit_all, install, ok, render, run
from tests.growth import grow
from tests.postgres import PostgresServer
from tests.workflow import WORKFLOW, check_tests_step, path_with_uv, run_steps, workflow

# actionlint and zizmor come with the template's dev group, beside this interpreter
TOOLS = Path(sys.executable).parent
PINNED = re.compile(r"^\s*(?:-\s+)?uses:\s+[\w.-]+/[\w./-]+@[0-9a-f]{40} # v\d+(\.\d+)*$")


def tool(name: str) -> Path:
    path = TOOLS / name
    assert path.is_file(), f"{name} is missing: `uv sync` installs the template's dev group"
    return path


@pytest.fixture(scope="module")
def ci_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite project as its user pushes it: installed, uv.lock committed with the rest."""
    project = render(tmp_path_factory.mktemp("ci") / "budget-tracker")
    install(project)
    git_commit_all(project, "Generated from the template, with uv.lock")
    return project


# THE WORKFLOW, READ ----------------------------------------------------------------------


def test_every_project_gets_the_workflow_and_the_hooks(default_project: Path) -> None:
    assert (default_project / WORKFLOW).is_file()
    assert (default_project / ".pre-commit-config.yaml").is_file()


def test_the_workflow_passes_actionlint(default_project: Path) -> None:
    ok(run(tool("actionlint"), "-no-color", WORKFLOW, cwd=default_project))


def test_the_workflow_passes_zizmor_offline(default_project: Path) -> None:
    result = run(tool("zizmor"), "--offline", "--no-progress", WORKFLOW, cwd=default_project)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No findings to report" in result.stdout


def test_the_workflow_pins_every_action_to_a_commit_with_its_version(default_project: Path) -> None:
    lines = (default_project / WORKFLOW).read_text().splitlines()
    uses = [line for line in lines if re.match(r"^\s*(-\s+)?uses:", line)]
    assert uses
    assert [line for line in uses if not PINNED.match(line)] == []


def test_the_workflow_may_only_read_and_checkout_keeps_no_credentials(
    default_project: Path,
) -> None:
    loaded = workflow(default_project)
    assert loaded["permissions"] == {"contents": "read"}
    checkouts = []
    for job in loaded["jobs"].values():
        assert "permissions" not in job  # none widens the workflow's
        checkouts += [s for s in job["steps"] if s.get("uses", "").startswith("actions/checkout@")]
    assert len(checkouts) == len(loaded["jobs"])
    assert all(step["with"]["persist-credentials"] is False for step in checkouts)


def test_each_job_installs_from_the_lock_and_runs_the_checks(default_project: Path) -> None:
    jobs = workflow(default_project)["jobs"]
    commands = {
        name: "\n".join(step.get("run", "") for step in job["steps"]) for name, job in jobs.items()
    }
    assert set(commands) == {"sqlite", "postgresql"}
    for text in commands.values():
        assert "uv sync --locked" in text and "uv run pytest" in text
        assert "uv run alembic upgrade head" in text and "uv run alembic check" in text
    assert "--extra postgres" in commands["postgresql"]
    checks = ("ruff check .", "ruff format --check .", "mypy --strict")
    for check in (*checks, "python -m tests.migration_sql"):  # squawk, on SQLite too
        assert f"uv run {check}" in commands["sqlite"]
    tests = next(s for s in jobs["postgresql"]["steps"] if s.get("run") == "uv run pytest")
    assert tests["env"]["TEST_DATABASE_URL"].startswith("postgresql://")
    assert jobs["postgresql"]["services"]["postgres"]["image"].startswith("postgres:")


# THE WORKFLOW, RUN -----------------------------------------------------------------------


def test_the_postgresql_jobs_steps_pass_and_never_touch_database_url(
    tmp_path_factory: pytest.TempPathFactory, postgres: PostgresServer
) -> None:
    project = render(tmp_path_factory.mktemp("ci-pg") / "budget-tracker", database="postgresql")
    scripts = install(project)
    # where the tests run, DATABASE_URL (and DATABASE_URL_DIRECT) name a database that matters:
    # the user's, on which they grew the project as its README and skill say
    precious_url = postgres.create_database("precious")
    revision = grow(project, env={"DATABASE_URL": precious_url})
    git_commit_all(project, "Generated from the template and grown, with uv.lock")
    postgres.psql("CREATE TABLE keep_me (note text); INSERT INTO keep_me VALUES ('mine')", "precious")
    before = precious_snapshot(postgres)
    job = workflow(project)["jobs"]["postgresql"]
    service = job["services"]["postgres"]
    assert service["ports"] == ["5432:5432"]
    test_server_url = postgres.create_database("ci_job")
    mapped = []

    def on_the_test_server(name: str, value: str) -> str:
        if not value.startswith("postgresql://"):
            return value
        # the job's URLs name the service container: its user, its port, its database
        url = urlsplit(value)
        assert (url.username, url.hostname, url.port, url.path) == (
            service["env"]["POSTGRES_USER"],
            "localhost",
            5432,
            f"/{service['env']['POSTGRES_DB']}",
        )
        mapped.append(name)
        return test_server_url

    precious = {"DATABASE_URL": precious_url, "DATABASE_URL_DIRECT": precious_url}
    outputs = run_steps(project, job, on_the_test_server, tests_env=precious)
    assert sorted(mapped) == ["DATABASE_URL", "TEST_DATABASE_URL"]
    check_tests_step(outputs, only_for="SQLite only:")
    head = revision.name.split("_")[0]
    tables = "alembic_version,budgets,keep_me,marker_notes,markers,notes"
    assert precious_snapshot(postgres) == before == f"rent,groceries|mine|{head}|{tables}"
    # the tests left their database empty: the migrations step built it, db-verify wrote nothing
    assert postgres.psql("SELECT count(*) FROM markers", "ci_job") == "0"
    assert postgres.tables("ci_job") == "alembic_version,budgets,marker_notes,markers,notes"

    # the release: the evidence of the user's database (without the table no model maps),
    # the tests run on an empty PostgreSQL database of their own
    postgres.psql("DROP TABLE keep_me", "precious")
    every_row = "SELECT string_agg(name, ',' ORDER BY id) FROM markers"
    before = f"{postgres.psql(every_row, 'precious')}|{postgres.tables('precious')}"
    bundle = project.parent / "release-evidence"
    env = {"DATABASE_URL": precious_url, "TEST_DATABASE_URL": postgres.create_database("release")}
    released = run(scripts / "db-evidence", "--run-tests", "--output", bundle, cwd=project, env=env)
    assert released.returncode == 0, released.stdout + released.stderr[-4000:]
    evidence = json.loads((bundle / "evidence.json").read_text())
    assert evidence["verdict"] == "pass" and evidence["tests"]["failed"] == 0
    assert evidence["tests"]["database"]["backend"] == evidence["database"]["backend"] == "postgresql"
    assert "db-evidence: warning" not in released.stderr
    assert evidence["row_counts"] == {"budgets": 2, "marker_notes": 1, "markers": 2, "notes": 1}
    assert f"{postgres.psql(every_row, 'precious')}|{postgres.tables('precious')}" == before


def precious_snapshot(postgres: PostgresServer) -> str:
    """The precious database's rows, revision and tables, as one string to compare."""
    rows = postgres.psql(
        "SELECT (SELECT string_agg(name, ',' ORDER BY id) FROM markers), "
        "(SELECT string_agg(note, ',') FROM keep_me), "
        "(SELECT string_agg(version_num, ',') FROM alembic_version)",
        "precious",
    )
    return f"{rows}|{postgres.tables('precious')}"


# PRE-COMMIT ------------------------------------------------------------------------------

# each planted line, and the hook that must name it
PLANTED = {
    "passwords-in-urls": 'DATABASE_URL = "postgresql://app_user:Tr0ub4dor-3@db.example.com/app"\n',
    "conflict-markers": "<<<<<<< before updating\n",
    "private-keys": "-----BEGIN OPENSSH PRIVATE KEY-----\n",
}
# URLs the password hook lets through: placeholders, a masked URL, variables, no password
ALLOWED_URLS = """\
postgresql://app_user:change-me@localhost:5432/app_db
postgresql://user:password@host/dbname
postgresql+psycopg://user:***@host/db
postgresql://app_user:${PGPASSWORD}@db.example.com/app
postgresql://app_user:$PGPASSWORD@db.example.com/app
postgresql://ci@localhost:5432/ci
"""


def pre_commit(project: Path, home: Path, *args: str) -> "subprocess.CompletedProcess[str]":
    env = {"PRE_COMMIT_HOME": str(home), "PATH": path_with_uv(project)}
    return run(project / ".venv" / "bin" / "pre-commit", *args, cwd=project, env=env)


def test_pre_commit_passes_on_a_generated_project(ci_project: Path, tmp_path: Path) -> None:
    result = pre_commit(ci_project, tmp_path, "run", "--all-files", "--show-diff-on-failure")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Failed" not in result.stdout
    hooks = ("ruff check", "ruff format", "migration SQL linted (squawk)", "no private keys")
    for hook in (*hooks, "no passwords in URLs"):
        assert hook in result.stdout


def test_the_password_hook_lets_placeholders_through(ci_project: Path, tmp_path: Path) -> None:
    notes = ci_project / "docs" / "urls.md"
    notes.parent.mkdir()
    notes.write_text(ALLOWED_URLS)
    try:
        result = pre_commit(ci_project, tmp_path, "run", "passwords-in-urls", "--files", notes)
        assert result.returncode == 0, result.stdout + result.stderr
    finally:
        notes.unlink()
        notes.parent.rmdir()


@pytest.mark.parametrize("hook", sorted(PLANTED))
def test_pre_commit_fails_on_a_planted_problem_and_names_it(
    hook: str, ci_project: Path, tmp_path: Path
) -> None:
    planted = ci_project / "deploy.md"
    planted.write_text(f"# Deploying\n\n{PLANTED[hook]}")
    ok(run("git", "add", "deploy.md", cwd=ci_project))
    try:
        result = pre_commit(ci_project, tmp_path, "run", "--all-files")
    finally:
        ok(run("git", "rm", "--quiet", "--force", "deploy.md", cwd=ci_project))
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"- hook id: {hook}" in result.stdout
    assert "deploy.md" in result.stdout
    # the one hook that found it failed; every other passed
    assert result.stdout.count("Failed") == 1
