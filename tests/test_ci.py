"""The generated project's workflows, Dependabot and pre-commit hooks, checked and run for real.

The workflows are linted (actionlint) and audited (zizmor, offline), dependabot.yml checked
against its schema (check-jsonschema, offline); then each job's `run:` steps run in order with
bash in a rendered, installed project, as a runner would run them (tests/workflow.py), with
the jobs' URLs mapped to databases on the test server. In one PostgreSQL project grown on its
user's database, whose rows must survive: the CI PostgreSQL job's steps, the release's build
steps (its publishing command with a gh that records its arguments), and the Neon preview's,
a copy of an older database standing in for the branch. The SQLite job's run in
tests/test_update.py, in a project that took an update on top of its user's own model,
migration, test and data.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.growth import grow
from tests.helpers import (
    assert_shows_no_password,
    git_commit_all,
    install,
    ok,
    render,
    run,
    run_program,
)
from tests.postgres import ROLE, PostgresServer
from tests.workflow import (
    NEON,
    RELEASE,
    WORKFLOW,
    WORKFLOWS,
    check_tests_step,
    path_with_uv,
    run_steps,
    runner_files,
    workflow,
)

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


@pytest.fixture(scope="module")
def neon_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project rendered with neon_previews=true, not installed: its files are read."""
    return render(tmp_path_factory.mktemp("neon") / "budget-tracker", neon_previews=True)


# THE WORKFLOW, READ ----------------------------------------------------------------------


def test_every_project_gets_the_workflows_and_the_hooks(default_project: Path) -> None:
    assert workflow_files(default_project) == [WORKFLOW, RELEASE]
    assert (default_project / ".pre-commit-config.yaml").is_file()


def workflow_files(project: Path) -> list[Path]:
    return sorted(path.relative_to(project) for path in (project / WORKFLOWS).glob("*.yml"))


def test_the_workflows_pass_actionlint(default_project: Path) -> None:
    files = workflow_files(default_project)
    ok(run(tool("actionlint"), "-no-color", *files, cwd=default_project))


def test_the_workflows_pass_zizmor_offline(default_project: Path) -> None:
    result = run(tool("zizmor"), "--offline", "--no-progress", WORKFLOWS, cwd=default_project)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No findings to report" in result.stdout


def test_the_workflows_pin_every_action_to_a_commit_with_its_version(neon_project: Path) -> None:
    # every workflow a project can have: neon_previews adds the last
    for path in workflow_files(neon_project):
        lines = (neon_project / path).read_text().splitlines()
        uses = [line for line in lines if re.match(r"^\s*(-\s+)?uses:", line)]
        assert uses, path
        assert [line for line in uses if not PINNED.match(line)] == [], path


DEPENDABOT = Path(".github/dependabot.yml")


def test_dependabot_passes_its_schema_offline(default_project: Path) -> None:
    schema = ("--builtin-schema", "vendor.dependabot")
    ok(run(tool("check-jsonschema"), *schema, DEPENDABOT, cwd=default_project))
    # the check can fail: a key Dependabot does not know is refused
    wrong = default_project.parent / "dependabot-wrong.yml"
    wrong.write_text((default_project / DEPENDABOT).read_text().replace("cooldown:", "cool-down:"))
    refused = run(tool("check-jsonschema"), *schema, wrong, cwd=default_project)
    assert refused.returncode == 1 and "cool-down" in refused.stdout + refused.stderr


def test_dependabot_updates_every_action_the_workflows_use_and_the_lock(
    neon_project: Path,
) -> None:
    config = yaml.safe_load((neon_project / DEPENDABOT).read_text())
    updates = {update["package-ecosystem"]: update for update in config["updates"]}
    assert set(updates) == {"github-actions", "uv"}
    for update in updates.values():
        # from the repository's root: .github/workflows/ for actions, pyproject.toml for uv
        assert update["directory"] == "/" and "directories" not in update
        assert update["schedule"]["interval"] in ("daily", "weekly", "monthly")
        assert update["cooldown"]["default-days"] >= 3
        assert [group["patterns"] for group in update["groups"].values()] == [["*"]]
    # every action a workflow uses is one Dependabot's github-actions updates: a repository's
    # action at a commit (not a local ./path or a docker:// image), with its version comment
    for path in workflow_files(neon_project):
        jobs = workflow(neon_project, path)["jobs"].values()
        for step in [step for job in jobs for step in job["steps"]]:
            if "uses" in step:
                assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", step["uses"]), (path, step)


# the one job of each workflow that may do more than read, and what more
WRITERS = {WORKFLOW: {}, RELEASE: {"publish": {"contents": "write"}}}


def test_the_workflows_may_only_read_and_checkout_keeps_no_credentials(
    default_project: Path,
) -> None:
    for path, writers in WRITERS.items():
        loaded = workflow(default_project, path)
        assert loaded["permissions"] == {"contents": "read"}, path
        jobs = loaded["jobs"]
        granted = {name: job["permissions"] for name, job in jobs.items() if "permissions" in job}
        assert granted == writers, path
        steps = [step for job in loaded["jobs"].values() for step in job["steps"]]
        checkouts = [s for s in steps if s.get("uses", "").startswith("actions/checkout@")]
        assert checkouts, path
        assert all(step["with"]["persist-credentials"] is False for step in checkouts), path


def test_each_job_installs_from_the_lock_and_runs_the_checks(default_project: Path) -> None:
    jobs = workflow(default_project)["jobs"]
    commands = {
        name: "\n".join(step.get("run", "") for step in job["steps"]) for name, job in jobs.items()
    }
    assert set(commands) == {"pythons", "sqlite", "postgresql"}
    for text in (commands["sqlite"], commands["postgresql"]):
        assert "uv sync --locked" in text and "uv run pytest" in text
        assert "uv run alembic upgrade head" in text and "uv run alembic check" in text
    assert "--extra postgres" in commands["postgresql"]
    checks = ("ruff check .", "ruff format --check .", "mypy --strict")
    for check in (*checks, "python -m tests.dbkit.migration_sql"):  # squawk, on SQLite too
        assert f"uv run {check}" in commands["sqlite"]
    tests = next(s for s in jobs["postgresql"]["steps"] if s.get("run") == "uv run pytest")
    assert tests["env"]["TEST_DATABASE_URL"].startswith("postgresql://")
    assert jobs["postgresql"]["services"]["postgres"]["image"].startswith("postgres:")


def test_the_sqlite_job_runs_on_each_python_the_first_job_lists(default_project: Path) -> None:
    jobs = workflow(default_project)["jobs"]
    sqlite = jobs["sqlite"]
    assert sqlite["needs"] == "pythons"
    assert sqlite["strategy"]["matrix"]["python"] == (
        "${{ fromJSON(needs.pythons.outputs.versions) }}"
    )
    (setup,) = [s for s in sqlite["steps"] if s.get("uses", "").startswith("astral-sh/setup-uv@")]
    assert setup["with"]["python-version"] == "${{ matrix.python }}"
    assert "strategy" not in jobs["postgresql"]  # one Python is enough for the other database


# THE WORKFLOW, RUN -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def grown_postgres_project(
    tmp_path_factory: pytest.TempPathFactory, postgres: PostgresServer
) -> tuple[Path, str, str]:
    """A PostgreSQL project with Neon previews, grown on its user's database as its README and
    skill say (a table of the user's own beside), committed with uv.lock; with that database's
    URL and the grown revision."""
    project = render(
        tmp_path_factory.mktemp("ci-pg") / "budget-tracker",
        database="postgresql",
        neon_previews=True,
    )
    install(project)
    precious_url = postgres.create_database("precious")
    revision = grow(project, env={"DATABASE_URL": precious_url})
    postgres.plant_users_table("precious")
    git_commit_all(project, "Generated from the template and grown, with uv.lock")
    return project, precious_url, revision.name.split("_")[0]


def service_urls(job: dict[str, Any], databases: dict[str, str]) -> Callable[[str, str], str]:
    """map_env for run_steps: each of the job's URLs, which name one of its service containers
    (its user, localhost, its published port, its database), to that service's stand-in on
    the test server (databases: service name -> URL)."""
    services: dict[tuple[str | None, str | None, int | None, str], str] = {}
    for name, service in job["services"].items():
        (published,) = [int(port.split(":")[0]) for port in service["ports"]]
        env = service["env"]
        services[(env["POSTGRES_USER"], "localhost", published, f"/{env['POSTGRES_DB']}")] = name

    def on_the_test_server(variable: str, value: str) -> str:
        if not value.startswith("postgresql://"):
            return value
        url = urlsplit(value)
        service = services[(url.username, url.hostname, url.port, url.path)]
        return databases[service]

    return on_the_test_server


def test_the_postgresql_jobs_steps_pass_and_never_touch_database_url(
    grown_postgres_project: tuple[Path, str, str], postgres: PostgresServer
) -> None:
    project, precious_url, head = grown_postgres_project
    # where the tests run, DATABASE_URL (and DATABASE_URL_DIRECT) name a database that matters:
    # the user's, on which they grew the project as its README and skill say
    before = postgres.users_data("precious")
    job = workflow(project)["jobs"]["postgresql"]
    mapped = []
    to_service = service_urls(job, {"postgres": postgres.create_database("ci_job")})

    def on_the_test_server(name: str, value: str) -> str:
        if value.startswith("postgresql://"):
            mapped.append(name)
        return to_service(name, value)

    precious = {"DATABASE_URL": precious_url, "DATABASE_URL_DIRECT": precious_url}
    outputs = run_steps(project, job, on_the_test_server, tests_env=precious)
    assert sorted(mapped) == ["DATABASE_URL", "TEST_DATABASE_URL"]
    check_tests_step(outputs, only_for="SQLite only:")
    tables = "alembic_version,budgets,keep_me,marker_notes,markers,notes"
    assert postgres.users_data("precious") == before == f"rent,groceries|keep|{head}|{tables}"
    # the tests left their database empty: the migrations step built it, db-verify wrote nothing
    assert postgres.psql("SELECT count(*) FROM markers", "ci_job") == "0"
    assert postgres.tables("ci_job") == "alembic_version,budgets,marker_notes,markers,notes"


@pytest.mark.parametrize(
    ("requires_python", "versions"),
    [
        (">=3.10", ["3.10", "3.11", "3.12", "3.13", "3.14"]),
        (">=3.13", ["3.13", "3.14"]),
        (">= 3.12, <4", ["3.12", "3.13", "3.14"]),
    ],
)
def test_the_matrix_runs_from_requires_python_through_the_newest_python(
    tmp_path: Path, requires_python: str, versions: list[str]
) -> None:
    project = render(tmp_path / "budget-tracker", python_version="3.10")
    pyproject = project / "pyproject.toml"
    text = pyproject.read_text()
    pyproject.write_text(text.replace('">=3.10"', f'"{requires_python}"'))
    run_steps(project, workflow(project)["jobs"]["pythons"], lambda name, value: value)
    output = (runner_files(project) / "output").read_text()
    assert output == f"versions={json.dumps(versions)}\n"


def test_a_requires_python_the_matrix_cannot_read_fails_in_one_line(tmp_path: Path) -> None:
    project = render(tmp_path / "budget-tracker")
    pyproject = project / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('">=3.10"', '"~=3.11"'))
    with pytest.raises(AssertionError) as failed:
        run_steps(project, workflow(project)["jobs"]["pythons"], lambda name, value: value)
    assert (
        "::error::requires-python in pyproject.toml is '~=3.11': write the oldest supported "
        "Python as >=3.X (3.X at most 3.14)\n"
    ) in str(failed.value)
    assert "Traceback" not in str(failed.value)


# THE RELEASE WORKFLOW --------------------------------------------------------------------


def test_the_release_builds_migrates_with_the_wheel_and_ships_passing_evidence(
    grown_postgres_project: tuple[Path, str, str], postgres: PostgresServer, tmp_path: Path
) -> None:
    project, _, head = grown_postgres_project
    before = postgres.users_data("precious")
    release = workflow(project, RELEASE)
    build, publish = release["jobs"]["build"], release["jobs"]["publish"]
    databases = {name: postgres.create_database(f"release_{name}") for name in build["services"]}
    to_service = service_urls(build, databases)

    # a wrong tag stops the release at once, naming the version to tag
    with pytest.raises(AssertionError, match=r"tag v9\.9\.9 is not v0\.1\.0"):
        run_steps(project, build, to_service, github={"GITHUB_REF_NAME": "v9.9.9"})
    assert postgres.tables("release_postgres") == ""  # nothing ran past the check
    assert not (project / "dist").exists()

    outputs = run_steps(project, build, to_service, github={"GITHUB_REF_NAME": "v0.1.0"})
    check_tests_step(outputs, only_for="SQLite only:")
    # the suite ran once, inside db-evidence, on the empty tests database, and left it empty
    assert postgres.tables("release_tests") == ""
    # the wheel's db-migrate built the release database, which db-evidence found as the models
    assert postgres.tables("release_postgres") == (
        "alembic_version,budgets,marker_notes,markers,notes"
    )
    evidence = json.loads((project / "release-evidence" / "evidence.json").read_text())
    assert evidence["verdict"] == "pass" and evidence["tests"]["failed"] == 0
    assert evidence["tests"]["passed"] > 0 and evidence["tests"]["exit_code"] == 0
    assert evidence["tests"]["database"]["backend"] == evidence["backend"] == "postgresql"
    assert (evidence["current"], evidence["heads"]) == ([head], [head])
    rows = {name: table["rows"] for name, table in evidence["tables"].items()}
    assert rows == {"budgets": 0, "marker_notes": 0, "markers": 0, "notes": 0}
    assert postgres.users_data("precious") == before  # the user's database: never named

    # what the publish job gets: the artifact build uploaded, downloaded into an empty folder
    (upload,) = [s for s in build["steps"] if "actions/upload-artifact@" in s.get("uses", "")]
    (download,) = [s for s in publish["steps"] if "actions/download-artifact@" in s.get("uses", "")]
    assert download["with"]["name"] == upload["with"]["name"]
    assert "path" not in download["with"]  # into the workspace, as the paths were uploaded
    workspace = tmp_path / "publish"
    for path in upload["with"]["path"].split():
        source = project / path
        if source.is_dir():
            shutil.copytree(source, workspace / path)
        else:
            workspace.mkdir(exist_ok=True)
            shutil.copy2(source, workspace / path)
    # its one command, run with a gh that records what it was asked to do
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "gh").write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$GH_ARGS"\n')
    (bin_dir / "gh").chmod(0o755)
    (command,) = [s for s in publish["steps"] if "run" in s]
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "GH_ARGS": str(tmp_path / "gh-args"),
        **{name: value for name, value in command["env"].items() if name != "TAG"},
        "TAG": "v0.1.0",
    }
    bash = ("bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", command["run"])
    ok(run(*bash, cwd=workspace, env=env))
    args = (tmp_path / "gh-args").read_text().splitlines()
    assert args[:3] == ["release", "create", "v0.1.0"] and "--verify-tag" in args
    attached = sorted(arg for arg in args if arg.startswith("dist/"))
    assert attached == [
        "dist/budget_tracker-0.1.0-evidence.tar.gz",
        "dist/budget_tracker-0.1.0-py3-none-any.whl",
        "dist/budget_tracker-0.1.0.tar.gz",
    ]
    notes = (workspace / args[args.index("--notes-file") + 1]).read_text()
    assert "Verdict: **pass**" in notes
    with tarfile.open(workspace / attached[0]) as bundle:
        names = {Path(name).name for name in bundle.getnames()}
    assert {"evidence.json", "evidence.md", "schema.sql", "migrations.sql"} <= names
    # only the publishing job may write, and only contents
    assert release["permissions"] == {"contents": "read"}
    assert publish["permissions"] == {"contents": "write"} and "permissions" not in build


# NEON PREVIEWS ---------------------------------------------------------------------------


def test_neon_previews_add_their_workflow_only_when_asked(
    neon_project: Path, default_project: Path
) -> None:
    assert workflow_files(neon_project) == [WORKFLOW, NEON, RELEASE]
    assert not (default_project / NEON).exists()


def test_the_neon_workflow_passes_actionlint_and_zizmor_and_pins_its_actions(
    neon_project: Path,
) -> None:
    ok(run(tool("actionlint"), "-no-color", NEON, cwd=neon_project))
    result = run(tool("zizmor"), "--offline", "--no-progress", NEON, cwd=neon_project)
    assert result.returncode == 0 and "No findings to report" in result.stdout, result.stdout
    uses = [line for line in (neon_project / NEON).read_text().splitlines() if "uses:" in line]
    assert len(uses) == 4 and all(PINNED.match(line) for line in uses), uses


def test_the_neon_workflow_runs_on_pull_requests_with_least_privilege(neon_project: Path) -> None:
    loaded = workflow(neon_project, NEON)
    # PyYAML reads the key `on` as True
    assert list(loaded[True]) == ["pull_request"]  # never pull_request_target
    assert loaded["permissions"] == {"contents": "read"}
    preview, delete = loaded["jobs"]["preview"], loaded["jobs"]["delete"]
    assert "permissions" not in preview and delete["permissions"] == {}
    # one job while the pull request is open, the other when it closes; neither for a fork's
    assert "github.event.action != 'closed'" in preview["if"]
    assert "github.event.action == 'closed'" in delete["if"]
    for job in (preview, delete):
        assert "head.repo.full_name == github.repository" in job["if"]
    (create,) = [s for s in preview["steps"] if "create-branch-action@" in s.get("uses", "")]
    (remove,) = [s for s in delete["steps"] if "delete-branch-action@" in s.get("uses", "")]
    assert remove["with"]["branch"] == create["with"]["branch_name"]
    for step in (create, remove):
        assert step["with"]["api_key"] == "${{ secrets.NEON_API_KEY }}"
        assert step["with"]["project_id"] == "${{ vars.NEON_PROJECT_ID }}"


def test_the_neon_preview_migrates_verifies_and_tests_a_copy_and_keeps_its_data(
    grown_postgres_project: tuple[Path, str, str], postgres: PostgresServer
) -> None:
    project, _, head = grown_postgres_project
    # the parent branch: the database before this pull request, at the template's revision,
    # with a row; the preview branch, a copy of it, as Neon makes one
    parent = postgres.create_database("neon_parent")
    ok(run_program(project, "alembic", "upgrade", "0001", env={"DATABASE_URL": parent}))
    # (write-once would refuse a database behind the models: a row as the older release wrote it)
    postgres.psql("INSERT INTO markers (name) VALUES ('from-production')", "neon_parent")
    postgres.psql(f"CREATE DATABASE neon_branch TEMPLATE neon_parent OWNER {ROLE}")
    job = workflow(project, NEON)["jobs"]["preview"]
    (create,) = [s for s in job["steps"] if "create-branch-action@" in s.get("uses", "")]
    direct_url = f"${{{{ steps.{create['id']}.outputs.db_url }}}}"
    mapped = []

    def the_branch(name: str, value: str) -> str:
        if "${{" not in value:
            return value
        assert value == direct_url, f"{name}: {value}"  # the branch's direct URL, never pooled
        mapped.append(name)
        return postgres.url("neon_branch")

    # the whole suite passes on PostgreSQL in this project in the CI job's and the release's
    # tests above; here a part of it is enough to prove the step's wiring: the database of
    # their own it makes on the branch, which they leave empty
    part = {"PYTEST_ADDOPTS": "-k 'budget or persistence'"}
    outputs = run_steps(project, job, the_branch, tests_env=part)
    assert sorted(mapped) == ["BRANCH_URL", "DATABASE_URL", "DATABASE_URL", "DATABASE_URL"]
    check_tests_step(outputs, only_for="SQLite only:")
    # migrated to the pull request's head, its data kept; the tests' own database left empty
    assert postgres.psql("SELECT string_agg(name, ',') FROM markers", "neon_branch") == (
        "from-production"
    )
    assert postgres.psql("SELECT version_num FROM alembic_version", "neon_branch") == head
    assert postgres.tables("preview_tests") == ""
    assert postgres.tables("neon_parent") == "alembic_version,markers"
    summary = (runner_files(project) / "summary.md").read_text()
    assert "## Migrations on the Neon branch, from 0001 to head" in summary
    assert "CREATE TABLE budgets" in summary and "CREATE TABLE markers" not in summary
    # squawk ran on that SQL: its findings, each naming the file, or none
    assert re.search(r"### squawk\n```text\n(no findings|migration\.sql:\d+)", summary)
    assert_shows_no_password(summary)


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


def pre_commit(project: Path, home: Path, *args: str | Path) -> "subprocess.CompletedProcess[str]":
    env = {"PRE_COMMIT_HOME": str(home), "PATH": path_with_uv(project)}
    return run_program(project, "pre-commit", *args, env=env)


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
