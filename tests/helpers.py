"""What the template's tests share: rendering the template, running and installing what it
renders, and the assertions every module makes the same way. Fixtures are in conftest.py."""

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

import pytest
from copier import run_copy

from tests.postgres import PASSWORD

ROOT = Path(__file__).resolve().parents[1]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
UV = os.environ.get("UV") or shutil.which("uv") or str(Path(sys.executable).parent / "uv")

DEFAULT_ANSWERS = {"project_name": "Budget Tracker"}
# the test role's password as typed, as encoded in a URL (both ways), and fragments of it
SECRETS = [PASSWORD, quote(PASSWORD, safe=""), quote(PASSWORD), "s3cr", "w0rd"]

Started = TypeVar("Started")


def render(
    dst: Path, template: Path | str = ROOT, vcs_ref: str | None = "HEAD", **answers: Any
) -> Path:
    """Render template (the working tree, uncommitted files included) into dst."""
    run_copy(
        str(template),
        dst,
        data={**DEFAULT_ANSWERS, **answers},
        defaults=True,
        vcs_ref=vcs_ref,
        quiet=True,
    )
    return dst


def run(
    *command: str | Path, cwd: Path, env: dict[str, str] | None = None, input: str | None = None
) -> "subprocess.CompletedProcess[str]":
    """Run a command; never raises on failure, so the caller asserts on what it printed."""
    return subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        env=project_env(env),
        input=input,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=900,
        check=False,
    )


# this machine's, not a user's: no DATABASE_URL leaking in, and Python writes its bytecode
# (PYTHONDONTWRITEBYTECODE=1, set here, makes each new process compile SQLAlchemy again)
NOT_THE_USERS = (
    "DATABASE_URL",
    "DATABASE_URL_DIRECT",
    "TEST_DATABASE_URL",
    "VIRTUAL_ENV",
    "PYTHONDONTWRITEBYTECODE",
)


def project_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment a user would have, plus extra."""
    env = {key: value for key, value in os.environ.items() if key not in NOT_THE_USERS}
    return env | (extra or {})


def install(project: Path, *extras: str, compile_bytecode: bool = False) -> Path:
    """uv sync the project (dev group included); returns its virtualenv's bin folder.

    As the README's plain `uv sync`, nothing is compiled up front and each first import writes
    its .pyc; compile_bytecode compiles every installed package at once instead.
    """
    bytecode = ["--compile-bytecode"] if compile_bytecode else []
    command = [UV, "sync", "--quiet", *bytecode, *(f"--extra={e}" for e in extras)]
    result = run(*command, cwd=project)
    assert result.returncode == 0, result.stderr
    return project / ".venv" / "bin"


def run_program(
    project: Path,
    name: str,
    *args: str | Path,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    input: str | None = None,
) -> "subprocess.CompletedProcess[str]":
    """Run one of the project's installed programs (.venv/bin/name), in the project unless cwd."""
    return run(project / ".venv" / "bin" / name, *args, cwd=cwd or project, env=env, input=input)


def prove(project: Path, env: dict[str, str] | None = None) -> None:
    """The README's proof, each command a separate process: migrate, write once, then read
    from a new process; the migration shows no password."""
    upgraded = run_program(project, "alembic", "upgrade", "head", env=env)
    ok(upgraded)
    assert_shows_no_password(upgraded)
    assert ok(run_program(project, "write-once", env=env)) == "Wrote marker\n"
    assert ok(run_program(project, "read-later", env=env)) == "['persistent-check']\n"


def assert_shows_no_password(*shown: "str | subprocess.CompletedProcess[str]") -> None:
    """No result's stdout or stderr, nor any text given, shows the test role's password."""
    text = "".join(each if isinstance(each, str) else each.stdout + each.stderr for each in shown)
    for secret in SECRETS:
        assert secret not in text, text


def database_name(url: str) -> str:
    """How the projects' messages name the database url names (never with its password)."""
    parts = urlsplit(url)
    if parts.scheme.startswith("sqlite"):
        return f"SQLite file {parts.path[1:]}"
    return f"PostgreSQL database {parts.path[1:]} on {parts.hostname}:{parts.port}"


def ok(result: "subprocess.CompletedProcess[str]") -> str:
    """The output of a command that must have succeeded."""
    assert result.returncode == 0, f"{result.args}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def git_commit_all(project: Path, message: str) -> None:
    """Commit everything in project (a new repository if need be), as its user would."""
    if not (project / ".git").exists():
        ok(run("git", "init", "-q", "-b", "main", cwd=project))
    ok(run("git", "add", "-A", cwd=project))
    identity = ["-c", "user.name=Test User", "-c", "user.email=user@example.com"]
    ok(run("git", *identity, "commit", "-q", "-m", message, cwd=project))


def start_or_skip(component: str, start: Callable[[], Started]) -> Started:
    """start(), or skip the test when the component cannot start here; under CI, fail."""
    try:
        return start()
    except (FileNotFoundError, OSError, subprocess.SubprocessError) as exc:
        if IN_CI:
            pytest.fail(f"{component} is required under CI and could not start: {exc}")
        pytest.skip(f"{component} not available: {exc}")
